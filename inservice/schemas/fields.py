"""Record types and their fields (spec §2.1, §2.2). Every other module reads fields from here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    TEXT = "text"
    CODE = "code"  # one code of a code list
    CODES = "codes"  # a `;`-separated list of codes
    DATE = "date"
    DATETIME = "datetime"
    NUMBER = "number"  # decimal, at most one decimal place
    YESNO = "yesno"
    NATIONAL_ID = "national_id"


class Required(StrEnum):
    YES = "yes"
    NO = "no"
    FEEDS = "feeds"  # required in database feeds, optional in files


@dataclass(frozen=True)
class Field:
    code: str
    label: str
    label_en: str
    kind: Kind
    required: Required
    max_len: int | None = None
    pattern: str | None = None  # whole-value regex after normalisation (RE2 syntax)
    codelist: str | None = None
    fold_width: bool = False  # keys and codes fold full-width characters; free text keeps them
    personal: bool = False  # never leaves the validator in clear

    @property
    def list_name(self) -> str:
        """The code list of a code field (a code field without one is a declaration error)."""
        if self.codelist is None:
            raise ValueError(f"field {self.code} holds codes but names no code list")
        return self.codelist

    def required_in(self, channel: str) -> bool:
        return self.required is Required.YES or (self.required is Required.FEEDS and channel == "db")


@dataclass(frozen=True)
class RecordType:
    name: str  # "course" | "attendance": the `record` value of findings
    label: str
    sheet_names: tuple[str, ...]  # Excel sheet / Access table names accepted
    feed_table: str
    xml_container: str
    xml_element: str
    fields: tuple[Field, ...]
    error_prefix: str  # "C" or "A": row rules of this record type

    def field(self, code: str) -> Field:
        for f in self.fields:
            if f.code == code:
                return f
        raise KeyError(code)

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.fields]

    @property
    def content(self) -> list[str]:
        """The fields a load compares ("unchanged", "differs": C08/A08) and the merge writes: all but
        the key, the change time and the personal fields (stored, if at all, as the pseudonym key)."""
        return [f.code for f in self.fields if f.code not in NOT_CONTENT and not f.personal]


NOT_CONTENT = ("unit_code", "course_code", "modified_at")  # a row's key and its change time
UNIT_CODE = r"[A-Z][A-Z0-9]{3,9}"  # spec §1.2: the register, the inbox folders and the file names use it
_UNIT = Field("unit_code", "單位代碼", "unit code", Kind.TEXT, Required.YES, 10, UNIT_CODE, fold_width=True)
_COURSE_CODE = Field("course_code", "研習代碼", "course code", Kind.TEXT, Required.YES, 20,
                     r"[A-Za-z0-9_-]{1,20}", fold_width=True)
_MODIFIED = Field("modified_at", "異動時間", "modified at", Kind.DATETIME, Required.FEEDS)
_DELETED = Field("is_deleted", "刪除", "deleted", Kind.YESNO, Required.NO)

COURSE = RecordType(
    name="course",
    label="課程",
    sheet_names=("課程", "courses"),
    feed_table="inservice_courses",
    xml_container="Courses",
    xml_element="Course",
    error_prefix="C",
    fields=(
        _UNIT,
        _COURSE_CODE,
        Field("title", "研習名稱", "title", Kind.TEXT, Required.YES, 200),
        Field("organizer", "開課單位", "organizer", Kind.TEXT, Required.YES, 100),
        Field("organizer_type", "開課單位類別", "organizer type", Kind.CODE, Required.YES,
              codelist="organizer_type"),
        Field("county_code", "縣市代碼", "county code", Kind.CODE, Required.YES, codelist="county"),
        Field("start_date", "研習起日", "start date", Kind.DATE, Required.YES),
        Field("end_date", "研習迄日", "end date", Kind.DATE, Required.YES),
        Field("hours", "研習時數", "hours", Kind.NUMBER, Required.YES),
        Field("class_type", "班別性質", "class type", Kind.CODE, Required.YES, codelist="class_type"),
        Field("category", "課程類別", "category", Kind.CODE, Required.YES, codelist="category"),
        Field("delivery", "實施方式", "delivery", Kind.CODE, Required.YES, codelist="delivery"),
        Field("time_slot", "研習時段", "time slot", Kind.CODE, Required.YES, codelist="time_slot"),
        Field("audience", "研習對象", "audience", Kind.CODES, Required.YES, codelist="level"),
        Field("tags", "屬性標籤", "tags", Kind.CODES, Required.NO, codelist="tag"),
        Field("closed_date", "結案日期", "closed date", Kind.DATE, Required.NO),
        _MODIFIED,
        _DELETED,
    ),
)

ATTENDANCE = RecordType(
    name="attendance",
    label="研習名單",
    sheet_names=("研習名單", "attendance"),
    feed_table="inservice_attendance",
    xml_container="Attendance",
    xml_element="Record",
    error_prefix="A",
    fields=(
        _UNIT,
        _COURSE_CODE,
        Field("national_id", "身分證字號", "national ID", Kind.NATIONAL_ID, Required.YES, 10,
              fold_width=True, personal=True),
        Field("name", "姓名", "name", Kind.TEXT, Required.YES, 50, personal=True),
        Field("school_code", "服務學校代碼", "school code", Kind.TEXT, Required.YES, 6,
              r"[0-9A-Z]{6}", fold_width=True),
        Field("hours_granted", "核發時數", "hours granted", Kind.NUMBER, Required.YES),
        Field("completed", "完成", "completed", Kind.YESNO, Required.YES),
        _MODIFIED,
        _DELETED,
    ),
)

RECORD_TYPES: tuple[RecordType, ...] = (COURSE, ATTENDANCE)
