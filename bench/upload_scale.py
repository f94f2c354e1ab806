"""An upload's cost against the warehouse's size (issue #18, item 1): the same file as a whole
`inservice ingest` process into an N-row warehouse and into an empty one, ratios in the same run.

The N-row warehouse is `inservice.publish.generate` (bench/publish.py's generator) scaled to N attendance
rows (default 5,000,000; 31,000,000 is the network's size, use it on an idle machine). The upload is one
XML file of unit U00001 (a generated file unit, registered with the same attributes in the empty
warehouse): new courses of 100 attendees each, titles and organizers like the generator's, so the W05
look-up has sessions to find. Every run starts from the same warehouse (DuckDB: a copy of the file made
before the run; PostgreSQL: the run's rows deleted afterwards), and uploads a file of its own; runs into
the empty and the large warehouse alternate (a shared machine's load drifts).

Modes: `default` runs the command as configured (on DuckDB, the session's end refreshes the analysts'
Parquet parts and catalog, item 2 of the issue); `no-analyst-copy` sets INSERVICE_ANALYST_COPY=0, which
isolates the per-upload work, and then times the analysts' refresh alone (a catch-up in this process).
The bases get their analysts' access built once (whole); each run starts from a copy of the warehouse
file and a hard-linked copy of the analysts' folder (its files are only ever replaced, never written).
`--pg` adds the PostgreSQL backend (the generated
rows copied into a fresh database, dropped at the end).

Usage: python bench/upload_scale.py [--rows 5000000] [--sizes 2000,200000] [--repeat 3] [--pg]
                                    [--work DIR] [--modes default,no-analyst-copy] [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

import psycopg2

from inservice.config import Settings
from inservice.publish.generate import Sizes, generate
from inservice.warehouse import analyst
from inservice.warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parents[1]
UNIT = "U00001"
KEY = "bench-upload-scale-pseudonym-key-0123456789"
PG = os.environ.get("INSERVICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
RECEIVED = "2017-06-03T10:00:00+08:00"


def check_digit(first9: str) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVXYWZIO"
    n = letters.index(first9[0]) + 10
    digits = [n // 10, n % 10, *map(int, first9[1:])]
    total = sum(d * w for d, w in zip(digits, [1, 9, 8, 7, 6, 5, 4, 3, 2, 1], strict=True))
    return str((10 - total % 10) % 10)


def write_upload(path: Path, rows: int, tag: str) -> Path:
    """One month's XML of `rows` attendance rows in new courses (100 attendees each)."""
    n_c = max(rows // 100, 1)
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<Transmission unit="{UNIT}" month="2017-05" specVersion="1.0">\n'
           "<Courses>\n"]
    for c in range(n_c):
        day = 1 + c % 25
        out.append(f"<Course><unit_code>{UNIT}</unit_code><course_code>{tag}{c:06d}</course_code>"
                   f"<title>研習課程{c % 5000}</title><organizer>開課單位{c % 300}</organizer>"
                   f"<organizer_type>3</organizer_type><county_code>63000</county_code>"
                   f"<start_date>2017-05-{day:02d}</start_date><end_date>2017-05-{day:02d}</end_date>"
                   f"<hours>6</hours><class_type>1</class_type><category>A</category><delivery>3</delivery>"
                   f"<time_slot>1</time_slot><audience>E;J</audience><closed_date>2017-05-{day + 2:02d}</closed_date>"
                   "</Course>\n")
    out.append("</Courses>\n<Attendance>\n")
    for j in range(rows):
        body = f"A1{(j * 7919 + 13) % 10**7:07d}"
        out.append(f"<Record><unit_code>{UNIT}</unit_code><course_code>{tag}{j // 100 % n_c:06d}</course_code>"
                   f"<national_id>{body}{check_digit(body)}</national_id><name>{escape('王小明')}</name>"
                   "<school_code>423605</school_code><hours_granted>6</hours_granted><completed>Y</completed>"
                   "</Record>\n")
    out.append("</Attendance>\n</Transmission>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out), encoding="utf-8")
    return path


def duckdb_warehouses(work: Path, rows: int) -> dict[str, Path]:
    """Base warehouse files: `big` (generated, reused when present) and `empty` (the unit alone)."""
    big, empty = work / "base-big", work / "base-empty"
    if not (big / "warehouse.duckdb").exists():
        big.mkdir(parents=True, exist_ok=True)
        print(f"generating a warehouse of {rows:,} attendance rows in {big}", flush=True)
        with Warehouse(replace(Settings.from_env(big), analyst_copy=False)) as wh:
            generate(wh.con, Sizes.scaled(rows / Sizes().attendance), log=False)
            wh.con.execute("CHECKPOINT")
    with Warehouse(replace(Settings.from_env(big), analyst_copy=False)) as wh:
        unit = wh.unit(UNIT)
    shutil.rmtree(empty, ignore_errors=True)
    empty.mkdir(parents=True)
    with Warehouse(replace(Settings.from_env(empty), analyst_copy=False)) as wh:
        wh.add_unit(unit.unit_code, unit.name, unit.channel, unit.state, unit.joined)
    for base in (empty, big):  # the analysts' access as a running warehouse has it (its first build is whole)
        settings = Settings.from_env(base)
        if not (analyst.snapshot_path(settings).parent / analyst.PARTS / analyst.CURRENT).exists():
            t = time.perf_counter()
            with Warehouse(settings) as wh:
                analyst.publish_snapshot(wh, settings)
            print(f"analysts' access of {base.name} built whole in {time.perf_counter() - t:.1f} s", flush=True)
    return {"empty": empty, "big": big}


def run_home(work: Path, base: Path) -> Path:
    """A fresh home from a base: the warehouse copied, the analysts' folder hard-linked (its Parquet parts
    and catalogs are never written in place, only replaced and removed)."""
    home = work / "run"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    shutil.copy(base / "warehouse.duckdb", home / "warehouse.duckdb")
    with (home / "warehouse.duckdb").open("rb+") as fh:  # else the run's first checkpoint flushes the copy
        os.fsync(fh.fileno())  # (0.7 s for a 2.7 GB file: the copy's cost, not the upload's)
    if (base / "analyst").exists():
        shutil.copytree(base / "analyst", home / "analyst", copy_function=os.link)
    return home


def catch_up(home: Path) -> float:
    """The analysts' refresh after an upload loaded with it turned off, alone (in this process)."""
    session = analyst.WriteSession(Settings.from_env(home))
    with session:
        pass  # finds the analysts' access behind the warehouse
    assert session.refresh is not None and session.refresh.action == "copy", session.refresh
    return session.refresh.seconds


def pg_copy(src: Path, dsn: str, tables: list[str]) -> None:
    """The DuckDB warehouse's tables into the PostgreSQL warehouse at `dsn` (created by Warehouse)."""
    import duckdb

    con = duckdb.connect(str(src / "warehouse.duckdb"), read_only=True)
    pg = psycopg2.connect(dsn)
    try:
        for table in tables:
            csv = src.parent / f"{table}.csv"
            con.execute(f"COPY (SELECT * FROM main.{table}) TO '{csv}' (HEADER false)")
            cols = [r[0] for r in con.execute(f"DESCRIBE main.{table}").fetchall()]
            with pg, pg.cursor() as cur, csv.open() as fh:
                cur.copy_expert(f"COPY main.{table} ({', '.join(chr(34) + c + chr(34) for c in cols)}) "
                                f"FROM STDIN WITH (FORMAT csv)", fh)
            csv.unlink()
        pg.autocommit = True
        pg.cursor().execute("ANALYZE")
    finally:
        pg.close()
        con.close()


def run_ingest(home: Path, file: Path, env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inservice.cli", "--home", str(home), "ingest", str(file),
                           "--received-at", RECEIVED, "--json"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    receipt = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 and done.stdout else None
    if receipt is None or receipt["status"] != "loaded":
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-500:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="attendance rows of the large warehouse")
    ap.add_argument("--sizes", default="2000,200000", help="attendance rows of the uploads")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (median reported)")
    ap.add_argument("--modes", default="default,no-analyst-copy")
    ap.add_argument("--pg", action="store_true", help="also the PostgreSQL backend")
    ap.add_argument("--work", help="folder for the generated warehouse (reused) and the runs")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose `inservice` the runs use (e.g. main's, "
                    "to compare)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-upload-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [m for m in args.modes.split(",") if m]  # "" : PostgreSQL alone (with --pg)
    base_env = {**os.environ, "PYTHONPATH": args.code, "INSERVICE_PSEUDONYM_KEY": KEY}
    base_env.pop("INSERVICE_WAREHOUSE_URL", None)
    bases = duckdb_warehouses(work, args.rows)
    files = {(n, r): write_upload(work / "files" / f"{n}-{r}" / f"{UNIT}_201705.xml", n, f"B{r}{n % 7}")
             for n in sizes for r in range(args.repeat)}
    results: dict = {"rows": args.rows, "runs": {}}

    def record(label: str, times: list[float]) -> float:
        med = statistics.median(times)
        results["runs"][label] = round(med, 3)
        print(f"{label}: median {med:.2f} s ({', '.join(f'{t:.2f}' for t in times)})", flush=True)
        return med

    for mode in modes:
        env = {**base_env, "INSERVICE_ANALYST_COPY": "0" if mode == "no-analyst-copy" else "1"}
        for n in sizes:
            times: dict[str, list[float]] = {state: [] for state in bases}
            refresh: dict[str, list[float]] = {state: [] for state in bases}
            for r in range(args.repeat):  # empty and big alternate: a machine whose load drifts skews both alike
                for state, base in bases.items():
                    home = run_home(work, base)
                    file = home / "inbox" / UNIT / files[(n, r)].name
                    file.parent.mkdir(parents=True)
                    shutil.copy(files[(n, r)], file)
                    times[state].append(run_ingest(home, file, env))
                    if mode == "no-analyst-copy":
                        refresh[state].append(catch_up(home))
            med = {state: record(f"duckdb {mode} {n:,} rows into {state}", t) for state, t in times.items()}
            for state, t in refresh.items():
                if t:
                    record(f"duckdb analysts' refresh after {n:,} rows into {state}", t)
            ratio = med["big"] / med["empty"]
            results["runs"][f"duckdb {mode} {n} ratio"] = round(ratio, 2)
            print(f"  ratio {args.rows:,}-row / empty warehouse: {ratio:.2f}x", flush=True)

    if args.pg:
        admin = psycopg2.connect(f"{PG}/postgres")
        admin.autocommit = True
        dbs = {state: f"bench_scale_{state}_{secrets.token_hex(4)}" for state in bases}
        try:
            for state, db in dbs.items():
                admin.cursor().execute(f"CREATE DATABASE {db}")
                url = f"{PG}/{db}"
                with Warehouse(replace(Settings.from_env(work / f"pg-{state}"), warehouse=url)):
                    pass
                print(f"copying the {state} warehouse into PostgreSQL {db}", flush=True)
                pg_copy(bases[state], url, ["units", "courses", "attendance", "uploads", "findings"])
            for n in sizes:
                times = {state: [] for state in dbs}
                for r in range(args.repeat):
                    for state, db in dbs.items():
                        env = {**base_env, "INSERVICE_WAREHOUSE_URL": f"{PG}/{db}"}
                        home = work / f"pg-{state}"
                        file = home / "inbox" / UNIT / files[(n, r)].name
                        file.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(files[(n, r)], file)
                        times[state].append(run_ingest(home, file, env))
                        shutil.rmtree(home / "outbox", ignore_errors=True)
                        with psycopg2.connect(f"{PG}/{db}") as pg, pg.cursor() as cur:  # back to the same state
                            for table in ("attendance", "courses", "history"):
                                cur.execute(f"DELETE FROM main.{table} WHERE unit_code = %s AND course_code LIKE 'B%%'",
                                            [UNIT])
                            cur.execute("DELETE FROM main.findings WHERE upload_id IN (SELECT upload_id "
                                        "FROM main.uploads WHERE unit_code = %s AND channel = 'file' "
                                        "AND file_name LIKE %s)",
                                        [UNIT, f"{UNIT}_%.xml"])
                            cur.execute("DELETE FROM main.upload_receipts WHERE upload_id LIKE %s", [f"{UNIT}-%"])
                            cur.execute("DELETE FROM main.uploads WHERE unit_code = %s AND file_name LIKE %s",
                                        [UNIT, f"{UNIT}_%.xml"])
                med = {state: record(f"postgresql {n:,} rows into {state}", t) for state, t in times.items()}
                ratio = med["big"] / med["empty"]
                results["runs"][f"postgresql {n} ratio"] = round(ratio, 2)
                print(f"  ratio {args.rows:,}-row / empty warehouse: {ratio:.2f}x", flush=True)
        finally:
            for db in dbs.values():
                admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            admin.close()
    results["peak_rss_mib_child"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print(json.dumps(results, ensure_ascii=False))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
