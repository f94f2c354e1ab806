"""Excel (.xlsx, .xls) through fastexcel (Rust calamine → Arrow).

Chosen by measurement (200,000 rows, whole process): fastexcel → Arrow 3.2 s,
python-calamine 5.5 s, openpyxl read-only 51 s; `bench/ingest_excel.py` re-measures it here.
openpyxl stays for writing receipts and workbooks.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import fastexcel
import pyarrow as pa
import pyarrow.compute as pc

from inservice.config import Limits
from inservice.loaders.base import (
    NOT_A_WORKBOOK,
    RawUpload,
    UploadRefused,
    canonical_table,
    extra_columns_note,
    fold_header,
    match_headers,
    unreadable,
)
from inservice.loaders.isolated import isolated
from inservice.loaders.xlsx_rows import refuse_repeated_rows
from inservice.schemas.fields import RECORD_TYPES, RecordType


def _find_sheet(rt: RecordType, names: list[str]) -> str:
    """The one sheet of this record type. Two (研習名單 and attendance, or names that differ only in
    width or spaces) are F07: reading one would silently drop the other's rows."""
    wanted = {fold_header(n) for n in rt.sheet_names}
    found = [name for name in names if fold_header(name) in wanted]
    if not found:
        raise UploadRefused("F07", f"缺少工作表「{rt.label}」（或 {rt.sheet_names[1]}）",
                            f"sheet '{rt.label}' (or '{rt.sheet_names[1]}') is missing")
    if len(found) > 1:
        zh, en = "」與「".join(found), "' and '".join(found)
        raise UploadRefused("F07", f"工作表「{zh}」都是{rt.label}，只能有一個（否則其中一個的資料會被略過）",
                            f"sheets '{en}' are both the {rt.name} sheet; send one (the other's rows would be "
                            "left out)")
    return found[0]


def read_sheet(reader: fastexcel.ExcelReader, rt: RecordType, sheet: str) -> tuple[pa.Table, list[dict]]:
    # skip_rows=0: keep leading empty rows so index i is sheet row i + 1 (header = row 1).
    # Not eager: loading the sheet, then converting it, costs ~15% less CPU here than fastexcel's
    # eager path, with the same values and the same peak memory (bench/ingest_excel.py workbook).
    loaded = reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string", whitespace_as_null=True)
    table = pa.Table.from_batches([loaded.to_arrow()])
    if table.num_rows == 0:
        raise UploadRefused("F07", f"工作表「{sheet}」沒有標題列", f"sheet '{sheet}' has no header row")
    headers = [c[0].as_py() for c in table.columns]
    mapping, unknown = match_headers(rt, headers, f"工作表「{sheet}」")
    body = table.slice(1)
    rows = pa.array(range(2, table.num_rows + 1), pa.int64())
    present = None
    for col in body.columns:
        valid = pc.is_valid(col)
        present = valid if present is None else pc.or_(present, valid)
    columns = {code: body.column(i).combine_chunks() for i, code in mapping.items()}
    out = canonical_table(rt, rows, columns)
    if present is not None and not pc.all(present).as_py():
        out = out.filter(present)  # empty rows are skipped; positions of the others are kept
    return out, extra_columns_note(rt, unknown, f"工作表「{sheet}」")


def read_excel(path: Path, pool: Executor | None = None, limits: Limits | None = None) -> RawUpload:
    """Both sheets as canonical tables, read in a child process (loaders/isolated.py: a workbook that
    would make calamine abort or spin is F09, not a dead run). With `pool`, the attendance sheet —
    nearly all of a large file — comes back pending: the course rules run while the child reads it,
    and `RawUpload.attendance` waits for it. Refusals come in the same order."""
    what = (f"活頁簿「{path.name}」", f"the workbook '{path.name}'")
    parts = isolated(_read_both, path, limits=limits or Limits(), what=what)
    courses, notes = next(parts)  # a refusal raised here has already ended `parts` and its child
    if pool is None:
        table, more = next(parts)
        parts.close()
        return RawUpload(courses, table, notes + more)
    return RawUpload(courses, pool.submit(_last, parts), notes)


def _last(parts: Generator[tuple[pa.Table, list[dict]], None, None]) -> tuple[pa.Table, list[dict]]:
    try:
        return next(parts)
    finally:
        parts.close()


def _read_both(path: Path) -> Iterator[tuple[pa.Table, list[dict]]]:
    """In the child: the course sheet, then the attendance sheet."""
    try:
        reader = fastexcel.read_excel(str(path))
        names = reader.sheet_names
    except Exception as exc:  # calamine raises several types for corrupt workbooks
        raise unreadable(NOT_A_WORKBOOK, exc, path.name) from exc
    course, attendance = RECORD_TYPES
    sheets = _find_sheet(course, names), _find_sheet(attendance, names)
    # F01 for rows the reader would merge (an .xlsx's XML), scanned beside the read: the scan inflates
    # and matches with the GIL mostly free, calamine reads without it
    with ThreadPoolExecutor(max_workers=1) as scans:
        for rt, sheet in zip(RECORD_TYPES, sheets, strict=True):
            scan = scans.submit(refuse_repeated_rows, path, [sheet])
            try:
                table = read_guarded(reader, rt, sheet)
            finally:
                scan.result()  # its refusal first: a merged row can make the sheet look otherwise wrong
            yield table


def read_guarded(reader: fastexcel.ExcelReader, rt: RecordType, sheet: str) -> tuple[pa.Table, list[dict]]:
    try:
        return read_sheet(reader, rt, sheet)
    except UploadRefused:
        raise
    except Exception as exc:
        raise unreadable((f"工作表「{sheet}」無法讀取（可能損毀），請重新匯出後再傳",
                          f"sheet '{sheet}' cannot be read (it may be damaged); export the workbook again and resend"),
                         exc, sheet) from exc
