"""The publications' gate on PostgreSQL at a small scale: the same synthetic warehouse as bench/publish.py
(generated in DuckDB, then COPY'd into a fresh PostgreSQL database), then the blocking-checks gate read
whole (as every publication did before) and as the gate now runs it — first pass, nothing written since,
after a 2,000-row write — and one monthly and one yearbook publication.

Usage: python bench/publish_pg.py [--scale 0.02] [--pg postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg2

from inservice.config import Settings
from inservice.publish.generate import Sizes, generate
from inservice.publish.monthly import publish_month
from inservice.publish.yearbook import publish_year
from inservice.warehouse import checks
from inservice.warehouse.postgres import copy_in
from inservice.warehouse.store import Warehouse

TABLES = ("units", "uploads", "findings", "main.courses", "main.attendance")


def timed(figures: dict, name: str, fn) -> object:  # noqa: ANN001 - a thunk
    t = time.perf_counter()
    out = fn()
    figures[name] = round(time.perf_counter() - t, 2)
    print(f"{name}: {figures[name]} s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    args = ap.parse_args()
    name = f"bench_pub_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{args.pg}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    figures: dict = {"scale": args.scale}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-publish-pg-") as tmp:
            home = Path(tmp)
            settings = replace(Settings.from_env(home), analyst_copy=False, warehouse=f"{args.pg}/{name}")
            with Warehouse(replace(settings, warehouse=None)) as gen:  # the warehouse's tables, in DuckDB
                timed(figures, "generate_s", lambda: generate(gen.con, Sizes.scaled(args.scale), log=False))
                arrow = {t: gen.con.sql(f"SELECT * FROM {t}").to_arrow_table() for t in TABLES}
            with Warehouse(settings) as wh:
                def load() -> None:
                    wh.con.begin()
                    with wh.con.cursor() as cur:
                        for t, rows in arrow.items():
                            copy_in(cur, t, rows)
                    wh.con.commit()
                    wh.con.execute("ANALYZE")
                timed(figures, "load_s", load)
                figures["rows"] = {t: arrow[t].num_rows for t in TABLES}
                cutoff = settings.archive_cutoff
                timed(figures, "gate_whole_tables_s", lambda: checks.failing(wh.con, cutoff))
                timed(figures, "gate_first_pass_s", lambda: checks.require_passing(wh.con, cutoff, "bench"))
                timed(figures, "gate_unchanged_s", lambda: checks.require_passing(wh.con, cutoff, "bench"))
                wh.con.execute("""INSERT INTO main.attendance (unit_code, course_code, teacher_key, school_code,
                        hours_granted, completed, is_deleted, upload_id, loaded_at)
                    SELECT unit_code, course_code, teacher_key || 'x', school_code, hours_granted, completed,
                           is_deleted, 'bench-new', now() FROM main.attendance LIMIT 2000""")
                timed(figures, "gate_after_2000_rows_s", lambda: checks.require_passing(wh.con, cutoff, "bench"))
            timed(figures, "month_s", lambda: publish_month(settings, "2017-05"))
            timed(figures, "year_s", lambda: publish_year(settings, "2017"))
        figures["load"] = Path("/proc/loadavg").read_text().split()[:3]
        figures["gate_whole_vs_unchanged"] = round(figures["gate_whole_tables_s"] / figures["gate_unchanged_s"], 1)
        print(json.dumps(figures, ensure_ascii=False))
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
