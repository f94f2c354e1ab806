"""Reading a correction workbook (修改已結案課程內容申請表): one row per change.

Read with fastexcel as text, like uploads (inservice/loaders/excel.py); headers match the
label or the code after trimming and full-width folding (`fold_header`). The header row is the
first of the first five rows that holds every column (forms often carry a title row above it);
row numbers are sheet rows (row 1 = the first row of the sheet), as in upload receipts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fastexcel
import pyarrow as pa

from inservice.config import Limits
from inservice.loaders.base import UploadRefused, fold_header
from inservice.loaders.isolated import run_isolated

EXTENSIONS = (".xlsx", ".xls")
SHEET_NAMES = ("修改已結案課程內容申請表", "corrections")
# (code, label): the workbook's columns, in the form's order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("unit_code", "單位代碼"),
    ("course_code", "研習代碼"),
    ("field", "修改欄位"),
    ("original", "原內容"),
    ("new", "修改後內容"),
    ("authority", "核定機關"),
    ("letter_no", "核定文號"),
    ("letter_date", "核定日期"),
)
LABELS = dict(COLUMNS)
HEADER_SEARCH_ROWS = 5


@dataclass(frozen=True)
class CorrectionRow:
    row: int  # sheet row
    unit_code: str | None
    course_code: str | None
    field: str | None
    original: str | None
    new: str | None
    authority: str | None
    letter_no: str | None
    letter_date: str | None


@dataclass
class Workbook:
    sheet: str
    rows: list[CorrectionRow]
    ignored_columns: list[str]


class WorkbookRefused(Exception):
    """The whole workbook cannot be processed (unreadable, wrong format, columns missing)."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.code, self.zh, self.en = code, zh, en

    def __reduce__(self) -> tuple:  # raised in the reader's child process, re-raised in the parent
        return (WorkbookRefused, (self.code, self.zh, self.en))


def _header_map(cells: list[object]) -> tuple[dict[int, str], list[str]]:
    by_key = {fold_header(k): code for code, label in COLUMNS for k in (code, label)}
    mapping: dict[int, str] = {}
    unknown: list[str] = []
    for i, cell in enumerate(cells):
        if cell is None or not str(cell).strip():
            continue
        code = by_key.get(fold_header(cell))
        if code is None:
            unknown.append(str(cell).strip())
        elif code not in mapping.values():
            mapping[i] = code
    return mapping, unknown


def _load(reader: fastexcel.ExcelReader, sheet: str) -> pa.Table:
    batch = reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string", whitespace_as_null=True,
                              eager=True)
    return pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch.to_arrow()


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_workbook(path: Path, limits: Limits | None = None) -> Workbook:
    """The workbook's change rows, read in a child process (loaders/isolated.py), as uploads are."""
    path = Path(path)
    what = (f"申請表「{path.name}」", f"the workbook '{path.name}'")
    try:
        return run_isolated(_read_workbook, path, limits=limits or Limits(), what=what)
    except UploadRefused as exc:  # out of memory or time, or the reader died
        raise WorkbookRefused("unreadable", exc.detail_zh, exc.detail_en) from exc


def _read_workbook(path: Path) -> Workbook:
    if path.suffix.lower() not in EXTENSIONS:
        raise WorkbookRefused("format", f"不支援的檔案格式「{path.suffix}」（限 .xlsx、.xls）",
                              f"unknown format '{path.suffix}' (.xlsx or .xls only)")
    try:
        reader = fastexcel.read_excel(str(path))
        names = list(reader.sheet_names)
    except Exception as exc:  # calamine raises several types for corrupt workbooks
        raise WorkbookRefused("unreadable", f"無法開啟 Excel 檔：{exc}", f"cannot open the workbook: {exc}") from exc
    wanted = {fold_header(n) for n in SHEET_NAMES}
    # the named sheet first, then the others in workbook order
    ordered = sorted(names, key=lambda n: fold_header(n) not in wanted)
    for sheet in ordered:
        try:
            table = _load(reader, sheet)
        except Exception as exc:
            raise WorkbookRefused("unreadable", f"工作表「{sheet}」無法讀取：{exc}",
                                  f"sheet '{sheet}' cannot be read: {exc}") from exc
        data = [c.to_pylist() for c in table.columns]
        for h in range(min(HEADER_SEARCH_ROWS, table.num_rows)):
            mapping, unknown = _header_map([col[h] for col in data])
            if len(mapping) == len(COLUMNS):
                return Workbook(sheet, _rows(data, mapping, h), unknown)
    missing = "、".join(label for _, label in COLUMNS)
    raise WorkbookRefused("structure", f"找不到含下列欄位的標題列：{missing}",
                          "no sheet has a header row with the columns " + ", ".join(c for c, _ in COLUMNS))


def _rows(data: list[list[object]], mapping: dict[int, str], header: int) -> list[CorrectionRow]:
    out = []
    n = len(data[0]) if data else 0
    for r in range(header + 1, n):
        values = {code: _text(data[i][r]) for i, code in mapping.items()}
        if all(v is None for v in values.values()):
            continue  # empty rows are skipped; the others keep their sheet row numbers
        out.append(CorrectionRow(row=r + 1, **values))
    return out
