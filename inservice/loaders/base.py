"""What every loader yields: canonical Arrow tables of the two record types.

Canonical form: one `string` column per field code (absent optional columns are null), plus
`_row` (int64): the row's source position (Excel sheet row with header = row 1; XML element
position; Access record position; feeds: position in the pull). Values are the source text, or
native values rendered as text (dates ISO `YYYY-MM-DD[ HH:MM:SS]`, booleans `true`/`false`).
Parsing and every rule happen downstream, once, whatever the format.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from concurrent.futures import Future

import pyarrow as pa

from inservice.schemas.fields import RECORD_TYPES, RecordType
from inservice.schemas.rules import RULES

ROW = "_row"


class UploadRefused(Exception):
    """A whole-upload refusal (F-rule) with a bilingual reason.

    `findings`: the refusal's own findings when one is not enough (F04's offending rows, F08's
    warning); else `finding()` is its one finding. `detail`: the reader library's own words, for
    the staff log only (never a receipt)."""

    rule: str
    detail_zh: str
    detail_en: str
    record: str
    row: int | None
    field: str | None
    findings: list[dict] | None
    detail: str | None

    def __init__(self, rule: str, detail_zh: str, detail_en: str, *, record: str = "file",
                 row: int | None = None, field: str | None = None, findings: list[dict] | None = None,
                 detail: str | None = None) -> None:
        super().__init__(f"{rule}: {detail_en}")
        self.rule = rule
        self.detail_zh = detail_zh
        self.detail_en = detail_en
        self.record = record
        self.row = row
        self.field = field
        self.findings = findings
        self.detail = detail

    def __reduce__(self) -> tuple:  # pickled whole (a refusal raised in a reader's child process)
        return (_refusal, (self.rule, self.detail_zh, self.detail_en, self.record, self.row, self.field,
                           self.__dict__))

    def finding(self) -> dict:
        r = RULES[self.rule]
        return {
            "record": self.record, "row": self.row, "field": self.field, "rule": self.rule,
            "severity": "error", "course_code": None,
            "message_zh": f"{r.zh}：{self.detail_zh}", "message_en": f"{r.en}: {self.detail_en}",
        }

    def all_findings(self) -> list[dict]:
        return self.findings or [self.finding()]


def _refusal(rule: str, zh: str, en: str, record: str, row: int | None, field: str | None,
             state: dict) -> UploadRefused:
    refusal = UploadRefused(rule, zh, en, record=record, row=row, field=field)
    refusal.__dict__.update(state)
    return refusal


# F01 as a partner reads it: what is wrong and what to do, per format. The reader library's own
# words (and any server path in them) go to the log for staff, never into a receipt or finding.
NOT_A_WORKBOOK = ("檔案不是有效的 Excel 活頁簿（可能損毀或未完整上傳），請重新匯出後再傳",
                  "the file is not a valid Excel workbook (it may be damaged or incompletely uploaded); "
                  "export it again and resend")
NOT_XML = ("檔案不是可讀取的 XML（可能損毀或未完整上傳），請重新匯出後再傳",
           "the file is not readable XML (it may be damaged or incompletely uploaded); export it again and resend")
NOT_ACCESS = ("檔案不是可讀取的 Access 資料庫（可能損毀或未完整上傳），請重新匯出後再傳",
              "the file is not a readable Access database (it may be damaged or incompletely uploaded); "
              "export it again and resend")


def unreadable(reason: tuple[str, str], detail: object, name: str = "") -> UploadRefused:
    """F01 with a plain `reason`. `detail` (the library's error) rides along as `.detail` for the
    log (the ingest logs it at WARNING; a reader's child process has no log of its own)."""
    what = f"{type(detail).__name__}: {detail}" if isinstance(detail, BaseException) else str(detail)
    return UploadRefused("F01", *reason, detail=f"{name}: {what}" if name else what)


class RawUpload:
    """The canonical tables of one upload, and the reader's notes (file-level warnings, e.g. extra
    columns ignored) and meta (e.g. the XML root's unit and month).

    `attendance` may be given as a Future of (table, notes): a read still under way in another
    thread (the Excel loader reads the large sheet while the course rules run). Reading the
    attribute waits for it, takes its notes and raises its refusal, if any."""

    def __init__(self, courses: pa.Table, attendance: pa.Table | Future[tuple[pa.Table, list[dict]]],
                 notes: list[dict] | None = None, meta: dict[str, str] | None = None) -> None:
        self.courses = courses
        self._attendance = attendance
        self.notes = notes if notes is not None else []
        self.meta = meta if meta is not None else {}

    @property
    def attendance(self) -> pa.Table:
        if isinstance(self._attendance, Future):
            table, notes = self._attendance.result()
            self._attendance = table
            self.notes = [*self.notes, *notes]
        return self._attendance

    def table(self, rt: RecordType) -> pa.Table:
        return self.courses if rt.name == "course" else self.attendance


def fold_header(text: object) -> str:
    """Headers match after trimming and folding full-width to half-width; case-insensitive."""
    return unicodedata.normalize("NFKC", str(text)).strip().casefold()


def canonical_schema(rt: RecordType) -> pa.Schema:
    return pa.schema([(ROW, pa.int64()), *((f.code, pa.string()) for f in rt.fields)])


def match_headers(rt: RecordType, headers: Sequence[object], where: str) -> tuple[dict[int, str], list[str]]:
    """Column index → field code, and the unknown headers. Missing required columns → F07."""
    by_key = {}
    for f in rt.fields:
        by_key[fold_header(f.code)] = f.code
        by_key[fold_header(f.label)] = f.code
    mapping: dict[int, str] = {}
    unknown: list[str] = []
    for i, h in enumerate(headers):
        if h is None or str(h).strip() == "":
            continue
        code = by_key.get(fold_header(h))
        if code is None:
            unknown.append(str(h).strip())
        elif code in mapping.values():
            raise UploadRefused("F07", f"{where}的欄位「{str(h).strip()}」重複",
                                f"column '{str(h).strip()}' appears twice in {where}")
        else:
            mapping[i] = code
    missing = [f for f in rt.fields if f.required_in("file") and f.code not in mapping.values()]
    if missing:
        raise UploadRefused(
            "F07",
            f"{where}缺少欄位 " + "、".join(f"{f.label}（{f.code}）" for f in missing),
            f"{where} lacks column(s) " + ", ".join(f"{f.code} ({f.label})" for f in missing),
        )
    return mapping, unknown


def extra_columns_note(rt: RecordType, unknown: list[str], where: str) -> list[dict]:
    if not unknown:
        return []
    names = "、".join(unknown)
    return [{
        "record": "file", "row": None, "field": None, "rule": "F07", "severity": "warning",
        "course_code": None,
        "message_zh": f"{where}有未定義欄位，已略過：{names}",
        "message_en": f"unknown column(s) in {where} ignored: {', '.join(unknown)}",
    }]


def canonical_table(rt: RecordType, rows: pa.Array, columns: dict[str, pa.Array]) -> pa.Table:
    n = len(rows)
    arrays = [rows.cast(pa.int64())]
    for f in rt.fields:
        col = columns.get(f.code)
        arrays.append(pa.nulls(n, pa.string()) if col is None else col.cast(pa.string()))
    return pa.Table.from_arrays(arrays, schema=canonical_schema(rt))


def empty_upload() -> RawUpload:
    return RawUpload(*(canonical_schema(rt).empty_table() for rt in RECORD_TYPES))
