"""County export (spec §7: each county may export all records of its own units).

A county's units are those the unit register places in it (`units add --county`, `units set-county`),
whatever the counties of their courses: a Penghu unit whose courses are mostly coded elsewhere (or
00000) is still Penghu's. A unit with no county in the register is in no county's export. The export
holds every course of those units that starts in the months asked, and the attendance
of those courses, pseudonymised as in the warehouse (teacher_key; no ID or name exists to leak).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
from openpyxl import Workbook

from inservice.config import Settings
from inservice.publish.common import ROW_GROUP, Month, as_of_now, fetch, rowid_ranges
from inservice.schemas import codelists
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.warehouse import checks
from inservice.warehouse.compute import compute_session
from inservice.warehouse.store import Warehouse

FORMATS = ("xlsx", "csv", "parquet")
EXCEL_MAX_ROWS = 1_048_575  # one header row
COURSE_EXPORT = [f.code for f in COURSE.fields if f.code != "is_deleted"]
ATTENDANCE_EXPORT = ["unit_code", "course_code", "teacher_key", "school_code", "hours_granted", "completed",
                     "modified_at"]
LABELS = {f.code: f.label for rt in (COURSE, ATTENDANCE) for f in rt.fields} | {"teacher_key": "教師假名鍵"}


@dataclass(frozen=True)
class CountyExport:
    county: str
    first: str
    last: str
    fmt: str
    as_of: str
    units: list[str]
    rows: dict
    files: list[str]

    def as_json(self) -> dict:
        return {"county": self.county, "from": self.first, "to": self.last, "format": self.fmt, "as_of": self.as_of,
                "units": self.units, "rows": self.rows, "files": self.files}


# A county's units: the register's county of each unit. Portable SQL: it runs on the warehouse
# itself, whichever backend, so a PostgreSQL warehouse is not copied whole for it.
UNITS_OF_COUNTY = "SELECT unit_code FROM main.units WHERE county_code = ? ORDER BY unit_code"


def _stage(con: duckdb.DuckDBPyConnection, county: str, first: Month, last: Month) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE ex_units AS SELECT unit_code FROM units_of_county", )
    cols = ", ".join(f'c."{c}"' for c in COURSE_EXPORT)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE ex_courses AS
        SELECT {cols} FROM main.courses c JOIN ex_units USING (unit_code)
        WHERE c.start_date >= ? AND c.start_date < ? AND NOT coalesce(c.is_deleted, false)
        ORDER BY c.unit_code, c.course_code""", [first.start, last.end])
    cols = ", ".join(f'a."{c}"' for c in ATTENDANCE_EXPORT)
    within = rowid_ranges(con, f"""SELECT DISTINCT a.rowid // {ROW_GROUP} FROM main.attendance a
        JOIN ex_courses c USING (unit_code, course_code)""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE ex_attendance AS
        SELECT {cols} FROM main.attendance a JOIN ex_courses c USING (unit_code, course_code)
        WHERE {within} AND NOT coalesce(a.is_deleted, false)
        ORDER BY a.unit_code, a.course_code, a.teacher_key""")


def _xlsx(con: duckdb.DuckDBPyConnection, path: Path, county: str, first: Month, last: Month) -> None:
    wb = Workbook(write_only=True)  # streams rows: a county's attendance can be large
    for sheet, table, cols in (("課程", "ex_courses", COURSE_EXPORT), ("研習名單", "ex_attendance", ATTENDANCE_EXPORT)):
        n = fetch(con, f"SELECT count(*) FROM {table}")[0][0]
        if n > EXCEL_MAX_ROWS:
            raise ValueError(f"{n:,} rows do not fit an Excel sheet; use --format csv or parquet")
        ws = wb.create_sheet(sheet)
        ws.append([LABELS.get(c, c) for c in cols])
        cur = con.execute(f"SELECT * FROM {table}")
        while batch := cur.fetchmany(10_000):
            for row in batch:
                ws.append(row)
        ws.freeze_panes = "A2"
    ws = wb.create_sheet("說明")
    name = codelists.county_names().get(county, county)
    for line in (f"{name}（{county}）所屬單位之研習課程及名單，研習起日 {first.key} 至 {last.key}。",
                 "單位所屬縣市：依單位名冊登錄之縣市。",
                 "教師以假名鍵（teacher_key）表示，不含身分證字號及姓名。欄名同傳報格式（資料格式 v1.0）。"):
        ws.append([line])
    wb.save(path)


def export_county(settings: Settings, county: str, first: str, last: str, fmt: str) -> CountyExport:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if county not in codelists.county_names():
        raise ValueError(f"unknown county code {county!r}")
    f, t = Month.parse(first), Month.parse(last)
    if t < f:
        raise ValueError("--to is before --from")
    as_of = as_of_now()
    out = settings.home / "publish" / "export" / county / f"{f.key}_{t.key}"
    with Warehouse(settings, read_only=True) as wh, compute_session(wh) as cx:
        checks.require_passing(wh.con, settings.archive_cutoff, f"county export {county} {f.key}..{t.key}")
        out.mkdir(parents=True, exist_ok=True)
        con = cx.con
        units = pa.table({"unit_code": pa.array([r[0] for r in wh.con.execute(UNITS_OF_COUNTY, [county]).fetchall()],
                                                pa.string())})
        con.register("units_of_county", units)
        window = ("unit_code IN (SELECT unit_code FROM units_of_county) AND start_date >= ? AND start_date < ?")
        if cx.mirrored:  # the county's units' courses of the months, and their attendance
            wh.con.register("units_of_county", units)
            cx.pull("main.courses", window, [f.start, t.end])
            cx.pull("main.attendance", f"(unit_code, course_code) IN (SELECT unit_code, course_code FROM "
                                       f"main.courses WHERE {window})", [f.start, t.end])
        _stage(con, county, f, t)
        units = [r[0] for r in fetch(con, "SELECT unit_code FROM ex_units ORDER BY 1")]
        rows = {"courses": fetch(con, "SELECT count(*) FROM ex_courses")[0][0],
                "attendance": fetch(con, "SELECT count(*) FROM ex_attendance")[0][0]}
        if fmt == "xlsx":
            path = out / f"export-{county}-{f.key}_{t.key}.xlsx"
            _xlsx(con, path, county, f, t)
            files = [str(path)]
        else:
            opts = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
            files = []
            for part in ("courses", "attendance"):
                path = out / f"{part}.{fmt}"
                con.execute(f"COPY ex_{part} TO '{str(path).replace(chr(39), chr(39) * 2)}' ({opts})")
                files.append(str(path))
    return CountyExport(county, f.key, t.key, fmt, as_of.isoformat(), units, rows, files)
