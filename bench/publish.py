"""Publication bench: one monthly statistics run and one yearbook run on a large synthetic warehouse.

Generates (DuckDB SQL, inservice.publish.generate) 2,000,000 courses and 20,000,000 attendance rows
over 2013–2018 with units, uploads and findings — about 28,000 courses and 280,000 attendance rows a
month — then times `publish_month` (stat_* tables, workbook, HTML) and `publish_year` (Parquet
snapshot of the year, seven tables, CSVs, workbook). Targets on a 2-core machine: month ≤ 10 s,
year ≤ 30 s.

Both publications first pass the blocking-checks gate (warehouse/checks.py), which reads only what was
written since it last passed. The bench times, before them: the gate's first, whole-table verification
(only on a warehouse never verified), the gate on an unchanged warehouse, and a raw floor — one DuckDB
join of the month's courses to the whole attendance table — so the ratios cancel machine load.

Measured at --scale 1.55 (31,000,000 attendance rows, 1.37 GiB; load 12–14 on 2 shared cores): gate on an
unchanged warehouse 5.3 s (whole tables, as before: 139.5 s), month 35–39 s (5.6× the raw floor of 7.0 s),
year 90–121 s; with the hashed course join, month 39.8 s = 3.3× its raw floor (12.2 s in that run), year
112 s = 9.2×. At load 5.6–6: gate 1.4 s, month 13.5 s, year 26.0 s (raw floor 1.9 s). Before the
incremental gate, at load 5–7: month 54.3 s, year 77.7 s.

Usage: python bench/publish.py [--scale 0.1] [--home DIR] [--keep] [--month 2017-05] [--year 2017]
A --home that already holds a generated warehouse is reused (generation is skipped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from inservice.config import Settings
from inservice.publish.generate import Sizes, generate
from inservice.publish.monthly import publish_month
from inservice.publish.yearbook import publish_year
from inservice.warehouse import checks
from inservice.warehouse.analyst import publish_snapshot
from inservice.warehouse.store import Warehouse

TARGETS = {"month": 10.0, "year": 30.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of 2M courses / 20M attendance rows")
    ap.add_argument("--home", help="INSERVICE_HOME to use (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--month", default="2017-05")
    ap.add_argument("--year", default="2017")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (the median is reported)")
    ap.add_argument("--generate-only", action="store_true", help="stop after generating the warehouse")
    args = ap.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-publish-"))
    # the analysts' read-only copy (published after each write) is timed on its own below
    settings = replace(Settings.from_env(home), analyst_copy=False)
    sizes = Sizes.scaled(args.scale)
    figures: dict = {"scale": args.scale, "sizes": sizes.__dict__}
    try:
        with Warehouse(settings) as wh:
            have = wh.con.execute("SELECT count(*) FROM main.courses").fetchall()[0][0]
            if have == 0:
                print(f"generating {sizes.courses:,} courses, {sizes.attendance:,} attendance rows in {home}",
                      flush=True)
                t = time.perf_counter()
                generate(wh.con, sizes)
                wh.con.execute("CHECKPOINT")
                figures["generate_s"] = round(time.perf_counter() - t, 1)
            rows = wh.con.execute("""SELECT (SELECT count(*) FROM main.courses),
                (SELECT count(*) FROM main.attendance)""").fetchall()[0]
            figures["rows"] = {"courses": rows[0], "attendance": rows[1]}
        size = settings.warehouse_path.stat().st_size
        figures["warehouse_mib"] = round(size / 2**20)
        print(f"warehouse: {rows[0]:,} courses, {rows[1]:,} attendance rows, {size / 2**30:.2f} GiB", flush=True)
        if args.generate_only:
            print(json.dumps(figures, ensure_ascii=False))
            return 0

        with Warehouse(settings) as wh:
            if checks.changes(wh.con).scope is None:
                t = time.perf_counter()
                checks.require_passing(wh.con, settings.archive_cutoff, "bench")
                figures["gate_full_s"] = round(time.perf_counter() - t, 2)
                print(f"gate, first verification (whole tables): {figures['gate_full_s']} s", flush=True)
            t = time.perf_counter()
            checks.require_passing(wh.con, settings.archive_cutoff, "bench")
            figures["gate_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            wh.con.execute("""SELECT count(*) FROM main.attendance a JOIN main.courses c USING (unit_code, course_code)
                WHERE c.start_date >= CAST(? AS DATE) AND c.start_date < CAST(? AS DATE) + INTERVAL 1 MONTH""",
                           [f"{args.month}-01", f"{args.month}-01"]).fetchall()
            figures["raw_month_join_s"] = round(time.perf_counter() - t, 2)
        print(f"gate, nothing written since: {figures['gate_s']} s; raw floor (month's courses ⋈ attendance): "
              f"{figures['raw_month_join_s']} s", flush=True)

        month_s, year_s = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            pub = publish_month(settings, args.month)
            month_s.append(time.perf_counter() - t)
            print(f"month {args.month}: {month_s[-1]:.2f} s (target ≤ {TARGETS['month']:.0f} s) — {pub.totals}",
                  flush=True)
            t = time.perf_counter()
            ext = publish_year(settings, args.year)
            year_s.append(time.perf_counter() - t)
            print(f"year {args.year}: {year_s[-1]:.2f} s (target ≤ {TARGETS['year']:.0f} s) — snapshot "
                  f"{ext.snapshot.courses:,} courses, {ext.snapshot.attendance:,} attendance rows; {ext.totals}",
                  flush=True)
        with Warehouse(settings) as wh:
            t = time.perf_counter()
            publish_snapshot(wh, settings)
            figures["analyst_copy_s"] = round(time.perf_counter() - t, 2)
        print(f"analysts' read-only copy of the warehouse (DuckDB, after each write): {figures['analyst_copy_s']} s",
              flush=True)
        figures["month_s"] = round(sorted(month_s)[len(month_s) // 2], 2)
        figures["year_s"] = round(sorted(year_s)[len(year_s) // 2], 2)
        figures["month_vs_raw"] = round(figures["month_s"] / figures["raw_month_join_s"], 1)
        figures["year_vs_raw"] = round(figures["year_s"] / figures["raw_month_join_s"], 1)
        figures["load"] = Path("/proc/loadavg").read_text().split()[:3]
        figures["within_targets"] = figures["month_s"] <= TARGETS["month"] and figures["year_s"] <= TARGETS["year"]
        print(json.dumps(figures, ensure_ascii=False))
    finally:
        if not args.home and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
