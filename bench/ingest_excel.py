"""End-to-end ingest of a 200,000-attendance-row workbook vs a raw read of the same file.

Builds the workbook (openpyxl, write-only), creates a DuckDB warehouse with the unit registered (the
state every upload after the first meets), then in the same run times, `--repeat` times each:
  raw   — fastexcel reading both sheets into Arrow (the reader the loader uses, its default call);
  floor — what no implementation can skip, in sequence: the same fastexcel read as
          text, the HMAC of every national ID (teacher_key), and a plain CREATE TABLE AS of the rows
          into a new DuckDB file, committed. No rule, finding, history, receipt, analysts' copy, nor the
          reader's child process (loaders/isolated.py);
  e2e   — `Ingestor.ingest` between opening and closing the warehouse, as `inservice ingest` does:
          name/unit/hash checks, limits, read, every rule, the merge in one transaction, the JSON + Excel
          receipts. The analysts' read-only copy refreshed after the commit is timed apart (another piece
          of work's, bench/analyst_copy.py).
Prints the medians and the ratios (targets: e2e <= 1.2x the floor, median of 5; e2e <= 1.5x raw). The
floor's ratio says how much of that the read → pseudonymise → store chain alone takes on this machine;
e2e / floor is the cost of everything else. Usage: python bench/ingest_excel.py [--rows N] [--repeat K]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import fastexcel
import pyarrow as pa
from ingest_common import load, make_id, prepare, timed, timed_ingest
from openpyxl import Workbook

from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.validations.pseudonym import Pseudonymiser


def build(path: Path, rows: int, seed: int = 1) -> tuple[int, int]:
    """~1% invalid IDs, ~0.5% repeated teachers, 100 attendees a course; dates in several forms."""
    rng = random.Random(seed)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("課程")
    ws.append([f.label for f in COURSE.fields if f.code not in ("modified_at", "is_deleted")])
    n_courses = max(1, rows // 100)
    start = date(2017, 5, 1)
    for i in range(n_courses):
        d = start + timedelta(days=i % 25)
        roc = f"{d.year - 1911}/{d.month:02d}/{d.day:02d}"
        ws.append(["T001", f"C{i:07d}", f"研習課程 {i}", "國立臺灣師範大學", "3", "63000",
                   d if i % 2 else roc, d, 6, "1", "A", "3", "1", "E;J", "T2", d + timedelta(days=2)])
    wa = wb.create_sheet("研習名單")
    wa.append([f.label for f in ATTENDANCE.fields if f.code not in ("modified_at", "is_deleted")])
    ids = [make_id(rng) for _ in range(rows)]
    for r in range(rows):
        national_id = ids[r] if rng.random() > 0.01 else ids[r][:-1] + "X"
        if rng.random() < 0.005 and r:
            national_id = ids[r - 1]
        wa.append(["T001", f"C{r // 100:07d}", national_id, "王小明", "423605", 6, "Y"])
    wb.save(path)
    return n_courses, rows


def raw_read(path: Path) -> int:
    reader = fastexcel.read_excel(str(path))
    return sum(reader.load_sheet(name).to_arrow().num_rows for name in ("課程", "研習名單"))


def floor(path: Path, folder: Path) -> int:
    """Read → pseudonymise → store, nothing else (see the module's docstring)."""
    reader = fastexcel.read_excel(str(path))
    crs, att = (pa.Table.from_batches([reader.load_sheet(name, dtypes="string").to_arrow()])
                for name in ("課程", "研習名單"))
    att = att.rename_columns([f.code for f in ATTENDANCE.fields if f.code not in ("modified_at", "is_deleted")])
    keys = Pseudonymiser(secrets.token_bytes(32)).keys(att["national_id"].combine_chunks())
    rows = pa.table({"unit_code": att["unit_code"], "course_code": att["course_code"], "teacher_key": keys,
                     "school_code": att["school_code"], "hours_granted": att["hours_granted"],
                     "completed": att["completed"]})
    folder.mkdir(parents=True)
    con = duckdb.connect(str(folder / "floor.duckdb"))
    try:
        con.register("c", crs)
        con.register("a", rows)
        con.execute("BEGIN")
        con.execute("CREATE TABLE courses AS SELECT * FROM c")
        con.execute("CREATE TABLE attendance AS SELECT * FROM a")
        con.execute("COMMIT")
    finally:
        con.close()
    return rows.num_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inbox" / "T001" / "T001_201705.xlsx"
        path.parent.mkdir(parents=True)
        t = time.perf_counter()
        n_courses, n_att = build(path, args.rows)
        print(f"built {path.name}: {n_courses:,} courses, {n_att:,} attendance rows, "
              f"{path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")
        raw_read(path)  # the page cache warmed for every side
        raws, floors, ends, refreshes, floor_cpu, end_cpu = [], [], [], [], [], []
        for k in range(args.repeat):
            settings = prepare(Path(tmp) / f"home{k}")
            t = time.perf_counter()
            raw_read(path)
            raws.append(time.perf_counter() - t)
            wall, cpu = timed(lambda k=k: floor(path, Path(tmp) / f"floor{k}"))
            floors.append(wall)
            floor_cpu.append(cpu)
            run = timed_ingest(path, settings)
            assert run.receipt["status"] == "loaded", run.receipt["refusal"]
            ends.append(run.ingest)
            refreshes.append(run.refresh)
            end_cpu.append(run.cpu)
            print(f"  run {k + 1}: raw {raws[-1]:.2f} s, floor {floors[-1]:.2f} s, e2e {ends[-1]:.2f} s "
                  f"({ends[-1] / floors[-1]:.2f}x the floor), analysts' refresh {refreshes[-1]:.2f} s; "
                  f"CPU floor {floor_cpu[-1]:.2f} s, e2e {end_cpu[-1]:.2f} s; {load()}", flush=True)
        raw, low, end, refresh = (statistics.median(x) for x in (raws, floors, ends, refreshes))
        a = run.receipt["attendance"]
        print(f"accepted {a['accepted']:,} of {a['received']:,} attendance rows, "
              f"{len(run.receipt['findings']):,} findings")
        print(f"raw fastexcel read: {raw:.2f} s (median of {args.repeat})")
        print(f"floor (read, HMAC, store; no rules): {low:.2f} s = {low / raw:.2f}x raw")
        print(f"end-to-end ingest:  {end:.2f} s = {end / low:.2f}x the floor (target <= 1.2x; median of the "
              f"per-run ratios {statistics.median(e / f for e, f in zip(ends, floors, strict=True)):.2f}x); "
              f"analysts' refresh apart: {refresh:.2f} s")
        print(f"ratio: {end / raw:.2f}x raw  (target <= 1.5x)")
        print(f"CPU seconds (every thread and child process): floor {statistics.median(floor_cpu):.2f}, e2e "
              f"{statistics.median(end_cpu):.2f} = {statistics.median(end_cpu) / statistics.median(floor_cpu):.2f}x")
        print(load())

if __name__ == "__main__":
    main()
