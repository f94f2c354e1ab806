"""The merge of one month (default 5,000,000 attendance rows, 50,000 courses) into each warehouse
backend, against that backend's raw bulk load of the same rows, in the same run.

The month is generated deterministically as a `Validated` built directly from Arrow, with the types
the rule engine hands the merge (hours double, modified_at timestamp[s], teacher_key 64-hex keys):
100 attendees a course, teachers from a pool of 200,003, all rows accepted, a W04 warning on every
1,000th attendance row as findings. Per repeat, each backend gets:
  merge — `Warehouse.record_upload` into a fresh warehouse (withdrawals, history, upsert, uploads row,
          findings, one transaction). DuckDB: a new file, timed through an explicit CHECKPOINT so
          both sides of the ratio end with the rows in the file. PostgreSQL: a new database
          (CREATE DATABASE bench_<hex>, dropped WITH (FORCE) at the end, whatever happens).
  raw   — DuckDB: `CREATE TABLE t AS SELECT * FROM read_parquet(...)` of the same course and
          attendance rows (columns the merge writes, warehouse types) + CHECKPOINT, in a new file.
          PostgreSQL: `COPY ... FROM STDIN (FORMAT csv)` via psycopg2 copy_expert of a CSV prepared
          beforehand from the same Arrow table, into plain tables with the warehouse's column types.
          The raw baseline is the COPY of the prepared CSV only; the CSV encoding (pyarrow.csv,
          what the merge's staging also pays) is timed apart and a second ratio includes it.
  then, unless --no-reloads, into the same warehouse: `resend` (the same month again: every row
  unchanged, a no-op upsert) and `changed` (the month with 1% of attendance rows changed).
Prints medians over --repeat, rows/s, both ratios, peak RSS (getrusage maxrss) after each phase,
and where each merge spends its time (seconds per SQL statement, from a timing connection proxy).
Other benchmarks may share the machine: compare ratios from the same run, not absolute times.
Usage: python bench/warehouse_backends.py [--rows N] [--repeat K] [--no-reloads] [--pg URL]
"""

from __future__ import annotations

import argparse
import re
import resource
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from inservice.schemas import reference
from inservice.validations.engine import ATTENDANCE_CONTENT, COURSE_CONTENT, Validated
from inservice.validations.findings import SCHEMA as FINDINGS_SCHEMA
from inservice.warehouse import ddl
from inservice.warehouse.store import Warehouse

TEACHERS = 200_003  # a prime > 2003: attendee j of a course is teacher (c*7919 + j*2003) % P, unique per course
PER_COURSE = 100
NOW = datetime(2017, 6, 3, 2, 0, tzinfo=UTC)
MERGED = {"courses": ["unit_code", "course_code", *COURSE_CONTENT, "modified_at"],
          "attendance": ["unit_code", "course_code", "teacher_key", *ATTENDANCE_CONTENT, "modified_at"]}


def seconds(start: str, offsets: np.ndarray) -> pa.Array:
    base = np.datetime64(start, "s")
    return pa.array(base + offsets.astype("timedelta64[s]"), pa.timestamp("s"))


def month(rows: int) -> tuple[Validated, pa.Table]:
    """One unit's month as the engine would hand it to the merge; deterministic (no RNG)."""
    n_c = -(-rows // PER_COURSE)
    c = np.arange(n_c)
    start = np.datetime64("2017-05-01") + (c % 25).astype("timedelta64[D]")
    end = start + (c % 3 == 0).astype("timedelta64[D]")
    hours = np.array([3.0, 6.0, 1.5, 12.0])[c % 4]
    codes = pa.array([f"C{i:07d}" for i in range(n_c)])
    pick = lambda values, idx: pc.take(pa.array(values), pa.array(idx))  # noqa: E731
    courses = pa.table({
        "_row": pa.array(c + 2), "unit_code": pa.array(["T001"] * n_c), "course_code": codes,
        "title": pa.array([f"研習課程 {i}" for i in range(n_c)]),
        "organizer": pick(["國立臺灣師範大學", "臺北市教師研習中心", "新北市立板橋國民中學"], c % 3),
        "organizer_type": pick(["1", "3", "5"], c % 3), "county_code": pick(["63000", "65000", "66000"], c % 3),
        "start_date": pa.array(start, pa.date32()), "end_date": pa.array(end, pa.date32()),
        "hours": pa.array(hours), "class_type": pick(["1"], c * 0), "category": pick(["A", "B", "C"], c % 3),
        "delivery": pick(["1", "3"], c % 2), "time_slot": pick(["1", "2"], c % 2),
        "audience": pick(["E;J", "J;S", "E"], c % 3), "tags": pick(["T2", None], c % 2),
        "closed_date": pa.array(end + np.timedelta64(2, "D"), pa.date32()),
        "modified_at": seconds("2017-06-01T00:00:00", c), "is_deleted": pa.array(np.zeros(n_c, bool)),
        "_ok": pa.array(np.ones(n_c, bool)),
    })
    i = np.arange(rows)
    ci, j = i // PER_COURSE, i % PER_COURSE
    teacher = (ci * 7919 + j * 2003) % TEACHERS
    # keyed pseudonyms look like the engine's: sha256 hex; DuckDB makes the pool in a second
    pool = duckdb.sql(f"SELECT sha256('teacher-' || i) AS k FROM range({TEACHERS}) t(i) ORDER BY i").to_arrow_table()
    completed = j % 33 != 0
    attendance = pa.table({
        "_row": pa.array(i + 2), "unit_code": pick(["T001"], np.zeros(rows, np.int64)),
        "course_code": pc.take(codes, pa.array(ci)), "teacher_key": pc.take(pool["k"], pa.array(teacher)),
        "id_masked": pick(["A1*****123", "B2*****456", "F1*****789"], teacher % 3),
        "school_code": pc.take(reference.school_codes(), pa.array(teacher % 3938)),
        "hours_granted": pa.array(np.where(completed, hours[ci], 0.0)), "completed": pa.array(completed),
        "modified_at": seconds("2017-06-01T01:00:00", ci + j), "is_deleted": pa.array(np.zeros(rows, bool)),
        "_ok": pa.array(np.ones(rows, bool)),
    })
    warned = attendance.filter(pa.array(i % 1000 == 0))
    n_w = warned.num_rows
    findings = pa.table({
        "record": ["attendance"] * n_w, "row": warned["_row"], "field": ["school_code"] * n_w,
        "rule": ["W04"] * n_w, "severity": ["warning"] * n_w, "course_code": warned["course_code"],
        "message_zh": ["服務學校代碼不在教育部學校名錄"] * n_w, "message_en": ["school code not in the MOE list"] * n_w,
    }, schema=FINDINGS_SCHEMA)
    return Validated(courses, attendance, findings), findings


def changed(v: Validated, every: int = 100) -> Validated:
    """1% of attendance rows changed (completion flipped, hours and modified_at follow)."""
    a = v.attendance
    hit = pa.array(np.arange(a.num_rows) % every == 0)
    done = pc.if_else(hit, pc.invert(a["completed"]), a["completed"])
    course_hours = pc.take(v.courses["hours"], pa.array(np.arange(a.num_rows) // PER_COURSE))
    a = a.set_column(a.schema.get_field_index("completed"), "completed", done)
    a = a.set_column(a.schema.get_field_index("hours_granted"), "hours_granted",
                     pc.if_else(hit, pc.if_else(done, course_hours, 0.0), a["hours_granted"]))
    later = pc.add(a["modified_at"], pa.scalar(timedelta(days=1), pa.duration("s")))
    a = a.set_column(a.schema.get_field_index("modified_at"), "modified_at", pc.if_else(hit, later, a["modified_at"]))
    return Validated(v.courses, a, v.findings)


def raw_tables(v: Validated) -> dict[str, pa.Table]:
    """The rows the merge writes, in the warehouse's column types (hours DECIMAL(5,1)), for the raw loads."""
    out = {}
    for name, table in (("courses", v.accepted_courses), ("attendance", v.accepted_attendance)):
        t = table.select(MERGED[name])
        for col in ("hours", "hours_granted"):
            if col in t.column_names:
                t = t.set_column(t.schema.get_field_index(col), col, pc.cast(t[col], pa.decimal128(5, 1)))
        out[name] = t
    return out


class StepTimer:
    """Stands in for the warehouse connection and adds up seconds per statement kind: where the merge goes."""

    LABEL = re.compile(r"\s*(CREATE OR REPLACE TEMP TABLE \w+|INSERT INTO [\w.]+|UPDATE [\w.]+|DELETE FROM [\w.]+|\w+)",
                       re.IGNORECASE)

    def __init__(self, con: Any) -> None:
        self.con = con
        self.steps: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    def _timed(self, label: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.steps[label] += time.perf_counter() - t

    def execute(self, sql: str, params: Any = None) -> Any:
        label = self.LABEL.match(sql).group(1)
        action = re.search(r"'(update|withdraw)'", sql) if "history" in label else None
        return self._timed(label + (f" ({action.group(1)})" if action else ""), self.con.execute, sql, params)

    def register(self, name: str, table: pa.Table) -> Any:
        return self._timed(f"register {name}", self.con.register, name, table)

    def begin(self) -> None:
        self._timed("BEGIN", self.con.begin)

    def commit(self) -> None:
        self._timed("COMMIT", self.con.commit)


def loads(target: str, v: Validated, reloads: bool) -> tuple[dict[str, float], dict[str, Counter], dict[str, Any]]:
    """record_upload of the month into a fresh warehouse (then the re-send and the 1%-changed month)."""
    plan = [("merge", v)] + ([("resend", v), ("changed", changed(v))] if reloads else [])
    times, steps, counts = {}, {}, {}
    with Warehouse(target) as wh:
        timer = StepTimer(wh.con)
        wh.con = timer
        for n, (name, month_v) in enumerate(plan):
            upload = {"upload_id": f"T001-bench-{n}", "unit_code": "T001", "channel": "file",
                      "file_name": "T001_201705.xlsx", "data_month": "2017-05", "content_hash": f"{n:064x}",
                      "received_at": NOW, "on_time": True, "area": "production", "status": "loaded",
                      "processed_at": NOW, "courses_accepted": month_v.courses.num_rows,
                      "attendance_accepted": month_v.attendance.num_rows}
            timer.steps = Counter()
            t = time.perf_counter()
            counts[name] = wh.record_upload(upload, month_v.findings, month_v, "production", NOW)
            if wh.backend.embedded:  # the rows in the file, as the raw CTAS + CHECKPOINT leaves them
                timer.execute("CHECKPOINT")
            times[name] = time.perf_counter() - t
            steps[name] = timer.steps
    return times, steps, counts


def duckdb_raw(path: Path, parquet: dict[str, Path]) -> float:
    con = duckdb.connect(str(path))
    try:
        t = time.perf_counter()
        for name, file in parquet.items():
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{file}')")
        con.execute("CHECKPOINT")
        return time.perf_counter() - t
    finally:
        con.close()


def pg_raw(dsn: str, csv: dict[str, Path]) -> float:
    """COPY of the prepared CSV files into plain tables typed like the warehouse's."""
    tables = {"courses": ddl.COURSES, "attendance": ddl.ATTENDANCE}
    con = psycopg2.connect(dsn)
    try:
        with con.cursor() as cur:
            for name in csv:
                types = {c.name: c.type for c in tables[name].columns}
                cols = ", ".join(f'"{c}" {types[c]}' for c in MERGED[name])
                cur.execute(f"CREATE TABLE raw_{name} ({cols})")
            con.commit()
            t = time.perf_counter()
            for name, file in csv.items():
                with file.open("rb") as f:
                    cur.copy_expert(f"COPY raw_{name} FROM STDIN WITH (FORMAT csv)", f)
            con.commit()
            elapsed = time.perf_counter() - t
            # out of the way of the merge that follows: no autovacuum of these, no dirty pages left
            cur.execute("DROP TABLE raw_courses, raw_attendance")
            con.commit()
            con.autocommit = True
            cur.execute("CHECKPOINT")
            return elapsed
    finally:
        con.close()


def admin(pg: str, sql: str) -> None:
    con = psycopg2.connect(f"{pg}/postgres")
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(sql)
    finally:
        con.close()


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000, help="attendance rows (courses = rows / 100)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-reloads", dest="reloads", action="store_false", help="skip the re-send and 1%% changed")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server URL, without database")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still drops its database

    t = time.perf_counter()
    v, findings = month(args.rows)
    raw = raw_tables(v)
    n_c, n_a = raw["courses"].num_rows, raw["attendance"].num_rows
    total = n_c + n_a
    rss = {"month": maxrss_mib()}
    print(f"month: {n_a:,} attendance + {n_c:,} course rows, {findings.num_rows:,} findings "
          f"(generated in {time.perf_counter() - t:.1f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="whbench_") as tmp:
        work = Path(tmp)
        parquet = {name: work / f"{name}.parquet" for name in raw}
        csv = {name: work / f"{name}.csv" for name in raw}
        for name, table in raw.items():
            pq.write_table(table, parquet[name])
        t = time.perf_counter()
        for name, table in raw.items():
            pacsv.write_csv(table, csv[name], pacsv.WriteOptions(include_header=False))
        encode = time.perf_counter() - t
        print(f"prepared: parquet {sum(p.stat().st_size for p in parquet.values()) / 2**20:,.0f} MiB, "
              f"CSV {sum(p.stat().st_size for p in csv.values()) / 2**20:,.0f} MiB (encoded in {encode:.1f} s)",
              flush=True)

        runs: dict[str, list[float]] = {}
        for k in range(args.repeat):
            runs.setdefault("duckdb raw", []).append(duckdb_raw(work / f"raw{k}.duckdb", parquet))
            (work / f"raw{k}.duckdb").unlink()
            times, duck_steps, duck_counts = loads(f"duckdb://{work}/wh{k}.duckdb", v, args.reloads)
            (work / f"wh{k}.duckdb").unlink()
            for name, s in times.items():
                runs.setdefault(f"duckdb {name}", []).append(s)
            rss["duckdb"] = maxrss_mib()
            print(f"repeat {k + 1}: duckdb done", flush=True)

            db = f"bench_{secrets.token_hex(4)}"
            admin(args.pg, f'CREATE DATABASE "{db}"')
            try:
                runs.setdefault("postgresql raw", []).append(pg_raw(f"{args.pg}/{db}", csv))
                times, pg_steps, pg_counts = loads(f"{args.pg}/{db}", v, args.reloads)
                for name, s in times.items():
                    runs.setdefault(f"postgresql {name}", []).append(s)
            finally:
                admin(args.pg, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            rss["postgresql"] = maxrss_mib()
            print(f"repeat {k + 1}: postgresql done", flush=True)

    med = {key: statistics.median(vals) for key, vals in runs.items()}
    print(f"\n{total:,} rows ({n_a:,} attendance + {n_c:,} courses); medians of {args.repeat}; "
          f"merges timed to COMMIT (DuckDB: + CHECKPOINT)")
    print(f"  {'':28} {'seconds':>9} {'rows/s':>11}")
    for key, s in med.items():
        print(f"  {key:28} {s:9.1f} {total / s:11,.0f}")
    print(f"  {'(CSV encoding, pyarrow)':28} {encode:9.1f} {total / encode:11,.0f}")
    for backend, counts in (("duckdb", duck_counts), ("postgresql", pg_counts)):
        for name, c in counts.items():
            print(f"  {backend} {name} counts: {c.__dict__}")
    print(f"ratio DuckDB merge / raw read_parquet CTAS: {med['duckdb merge'] / med['duckdb raw']:.2f}x")
    print(f"ratio PostgreSQL merge / raw COPY of prepared CSV: {med['postgresql merge'] / med['postgresql raw']:.2f}x"
          f"  (raw incl. CSV encoding: {med['postgresql merge'] / (med['postgresql raw'] + encode):.2f}x)")
    print("peak RSS (maxrss of this process) after: " + ", ".join(f"{k} {m:,.0f} MiB" for k, m in rss.items()))
    for backend, steps in (("duckdb", duck_steps), ("postgresql", pg_steps)):
        for name, s in steps.items():
            top = ", ".join(f"{label} {sec:.2f}" for label, sec in s.most_common(6))
            print(f"  {backend} {name} steps (s, last repeat): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
