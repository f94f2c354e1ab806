"""Planning survey exports (.xlsx or .csv, one record type per file) as one canonical Arrow table.

The same canonical form as uploads (loaders/base.py): one string column per field code and `_row`,
numbered as in a sheet — the header is row 1, the first data row is row 2, a CSV too (a record
spanning lines in quotes is one row; an empty line is a row, skipped like an empty sheet row).
Workbooks are read in a child process under the same limits as uploads (loaders/isolated.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fastexcel
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from inservice.config import Limits
from inservice.loaders.base import (
    NOT_A_WORKBOOK,
    UploadRefused,
    canonical_table,
    extra_columns_note,
    match_headers,
    unreadable,
)
from inservice.loaders.excel import read_guarded
from inservice.loaders.isolated import isolated
from inservice.loaders.xlsx_rows import refuse_repeated_rows
from inservice.schemas.fields import RecordType

NOT_UTF8 = ("檔案不是 UTF-8 編碼的 CSV，請以 UTF-8（可含 BOM）重新匯出後再傳",
            "the file is not CSV in UTF-8; export it again as UTF-8 (with or without BOM) and resend")


def read_plan(path: Path, rt: RecordType, limits: Limits | None = None) -> tuple[pa.Table, list[dict]]:
    """The file's rows of record type `rt` and the reader's notes (extra columns ignored)."""
    if path.suffix.lower() == ".csv":
        return read_csv(path, rt)
    what = (f"活頁簿「{path.name}」", f"the workbook '{path.name}'")
    parts = isolated(_read_one_sheet, path, rt, limits=limits or Limits(), what=what)
    try:
        return next(parts)
    finally:
        parts.close()


def _read_one_sheet(path: Path, rt: RecordType) -> Iterator[tuple[pa.Table, list[dict]]]:
    """In the child: the sheet named for the record type, else the first (one sheet per file)."""
    try:
        reader = fastexcel.read_excel(str(path))
        names = reader.sheet_names
    except Exception as exc:  # calamine raises several types for corrupt workbooks
        raise unreadable(NOT_A_WORKBOOK, exc, path.name) from exc
    if not names:
        raise UploadRefused("F07", "活頁簿沒有工作表", "the workbook has no sheet")
    named = [n for n in names if n.strip() in rt.sheet_names]
    sheet = named[0] if named else names[0]
    # F01 for rows the reader would merge, scanned beside the read (as loaders/excel.py does)
    with ThreadPoolExecutor(max_workers=1) as scans:
        scan = scans.submit(refuse_repeated_rows, path, [sheet])
        try:
            table = read_guarded(reader, rt, sheet)
        finally:
            scan.result()  # its refusal first: a merged row can make the sheet look otherwise wrong
    yield table


def read_csv(path: Path, rt: RecordType) -> tuple[pa.Table, list[dict]]:
    where = f"檔案「{path.name}」"
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise unreadable(NOT_UTF8, exc, path.name) from exc
    records = _arrow_records(data) if b'"' not in data else None  # a line is a row: Arrow's parser will do
    if records is None:
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            raise unreadable(("CSV 格式錯誤，請重新匯出後再傳", "malformed CSV; export it again and resend"), exc,
                             path.name) from exc
        width = max((len(r) for r in rows), default=0)
        records = pa.table({str(i): pa.array([(r[i].strip() or None) if i < len(r) else None for r in rows],
                                             pa.string()) for i in range(width)})
    if not records.num_rows or all(not (v or "").strip() for v in records.slice(0, 1).to_pylist()[0].values()):
        raise UploadRefused("F07", f"{where}沒有標題列", f"{where} has no header row")
    header = [records.column(i)[0].as_py() for i in range(records.num_columns)]
    mapping, unknown = match_headers(rt, header, where)
    body = records.slice(1)
    present = None
    for col in body.columns:
        valid = pc.is_valid(col)
        present = valid if present is None else pc.or_(present, valid)
    rows = pa.array(range(2, body.num_rows + 2), pa.int64())
    out = canonical_table(rt, rows, {code: body.column(i).combine_chunks() for i, code in mapping.items()})
    if present is not None and not pc.all(present).as_py():
        out = out.filter(present)  # empty rows are skipped; positions of the others are kept
    return out, extra_columns_note(rt, unknown, where)


def _arrow_records(data: bytes) -> pa.Table | None:
    """Every line a record (no quotes in the file): Arrow's CSV reader, all text; None when a line is
    not a record of the header's width (an empty line, say), so the exact reader numbers the rows."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    width = data.split(b"\n", 1)[0].count(b",") + 1
    text = {f"f{i}": pa.string() for i in range(width)}
    try:
        return pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                              parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
                              convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types=text))
    except (pa.ArrowInvalid, ValueError):
        return None
