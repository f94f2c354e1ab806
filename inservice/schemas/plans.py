"""The planning survey exports (planning-survey.md v1.0), encoded once: the two record types, the
file name grammar, the `PLAN` inbox and the ROC school year. Code lists are in codelists.py (places
P1–P7, tiers 1–4; the rest shared with the transmission format), rules P01–P08 / PW1–PW3 in rules.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time

from inservice.schemas.fields import Field, Kind, RecordType, Required
from inservice.schemas.timezone import TAIPEI

PLAN_UNIT = "PLAN"  # the planning service's unit in the register: its inbox is inbox/PLAN/


def owes_monthly(column: str = "unit_code") -> str:
    """SQL: the unit is one that sends monthly (every unit but the planning service, whose exports are
    yearly): for the overview, the transmission table, the reminders and the audit worklist."""
    return f"{column} <> '{PLAN_UNIT}'"


PLAN_EXTENSIONS = (".xlsx", ".csv")
FIRST_SCHOOL_YEAR = 101  # 101 = 2012-08-01 .. 2013-07-31: the first partition
KINDS = ("school", "teacher")

# [0-9], not \d: full-width or other scripts' digits name no school year
FILE_NAME = re.compile(r"^PLAN_(?P<year>[0-9]{3})_(?P<kind>school|teacher)\.(?P<ext>[A-Za-z]+)$")

_YEAR = Field("school_year", "學年度", "school year", Kind.NUMBER, Required.YES)
_SCHOOL = Field("school_code", "學校代碼", "school code", Kind.TEXT, Required.YES, 6, r"[0-9A-Z]{6}", fold_width=True)
_DOMAIN = Field("domain", "研習範疇", "domain", Kind.CODE, Required.YES, codelist="category")
_HOURS = Field("planned_hours", "規劃時數", "planned hours", Kind.NUMBER, Required.YES)
_CHOICES = (
    Field("modes", "進修方式", "modes", Kind.CODES, Required.YES, codelist="class_type"),
    Field("times", "進修時間", "times", Kind.CODES, Required.YES, codelist="time_slot"),
    Field("places", "進修地點", "places", Kind.CODES, Required.YES, codelist="place"),
    Field("tiers", "進修階層", "tiers", Kind.CODES, Required.YES, codelist="tier"),
    Field("deliveries", "實施方式", "deliveries", Kind.CODES, Required.YES, codelist="delivery"),
)
_SUBMITTED = Field("submitted_at", "填報時間", "submitted at", Kind.DATETIME, Required.YES)
CHOICE_FIELDS = tuple(f.code for f in _CHOICES)  # the multiple-choice lists, each a `;`-joined code list

SCHOOL_PLAN = RecordType(
    name="school_plan", label="學校規劃", sheet_names=("學校規劃", "school_plan"), feed_table="",
    xml_container="", xml_element="", error_prefix="P",
    fields=(
        _YEAR, _SCHOOL,
        Field("school_level", "學校教育階段", "school level", Kind.CODE, Required.YES, codelist="plan_level"),
        Field("students", "學生總數", "students", Kind.NUMBER, Required.YES),
        Field("teachers", "教師人數", "teachers", Kind.NUMBER, Required.YES),
        _DOMAIN, _HOURS, *_CHOICES, _SUBMITTED,
    ),
)

TEACHER_PLAN = RecordType(
    name="teacher_plan", label="教師規劃", sheet_names=("教師規劃", "teacher_plan"), feed_table="",
    xml_container="", xml_element="", error_prefix="P",
    fields=(
        _YEAR,
        Field("national_id", "身分證字號", "national ID", Kind.NATIONAL_ID, Required.YES, 10, fold_width=True,
              personal=True),
        Field("school_code", "服務學校代碼", "school code", Kind.TEXT, Required.YES, 6, r"[0-9A-Z]{6}",
              fold_width=True),
        _DOMAIN, _HOURS, *_CHOICES, _SUBMITTED,
    ),
)

RECORD_TYPES = {"school": SCHOOL_PLAN, "teacher": TEACHER_PLAN}
INTEGER_FIELDS = ("school_year", "students", "teachers")  # whole numbers ≥ 0 (P02 otherwise)
MAX_PLANNED_HOURS = 200


@dataclass(frozen=True)
class PlanFileName:
    school_year: int  # ROC, e.g. 106
    kind: str  # "school" | "teacher"
    ext: str  # ".xlsx" | ".csv"


def parse_plan_name(name: str) -> PlanFileName | None:
    """`PLAN_<yyy>_<school|teacher>.<xlsx|csv>`, or None."""
    m = FILE_NAME.match(name)
    if not m or f".{m['ext'].lower()}" not in PLAN_EXTENSIONS or int(m["year"]) < 1:
        return None
    return PlanFileName(int(m["year"]), m["kind"], f".{m['ext'].lower()}")


def is_plan_file(name: str) -> bool:
    """A name of the plans' grammar (any extension): the planning channel answers it, even with F02."""
    return name.upper().startswith("PLAN_")


def school_year_bounds(school_year: int) -> tuple[date, date]:
    """First day and the day after the last (8/1 of ROC year + 1911 .. 7/31 of the next)."""
    first = school_year + 1911
    return date(first, 8, 1), date(first + 1, 8, 1)


def filing_deadline(school_year: int, kind: str) -> datetime:
    """PW2: schools file by 8/31, teachers by 9/29 of the school year's first calendar year (Taipei)."""
    day = date(school_year + 1911, 8, 31) if kind == "school" else date(school_year + 1911, 9, 29)
    return datetime.combine(day, time(23, 59, 59))


def roc_school_year(school_year: int | str) -> str:
    return f"{int(school_year)}學年度"


def current_school_year(today: date | None = None) -> int:
    d = today or datetime.now(TAIPEI).date()
    return d.year - 1911 - (0 if d.month >= 8 else 1)
