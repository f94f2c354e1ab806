"""The analysts' read-only DuckDB copy: the old way (copy the whole file, drop the other tables) vs
the new one (a new file receiving only the analyst tables, `warehouse.analyst.publish_snapshot`).

Generates a warehouse (inservice.publish.generate; `--scale 0.02` = 40,000 courses and 400,000
attendance rows) plus a testing area of `--testing` attendance rows, then times each way `--repeat`
times and prints the medians and file sizes. The old way is kept here only to be measured: its copy
kept the dropped tables' bytes in free blocks.
Usage: python bench/analyst_copy.py [--scale 0.02] [--testing 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import duckdb

from inservice.config import Settings
from inservice.publish.generate import Sizes, generate
from inservice.warehouse.analyst import analyst_tables, publish_snapshot, snapshot_path
from inservice.warehouse.store import Warehouse


def old_way(wh: Warehouse, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    keep = set(analyst_tables(wh))
    wh.con.execute("CHECKPOINT")
    shutil.copyfile(wh.path, tmp)
    with duckdb.connect(str(tmp)) as copy:
        for schema, name in copy.execute("""SELECT table_schema, table_name FROM information_schema.tables
                WHERE table_type = 'BASE TABLE'""").fetchall():
            if schema != "main" or name not in keep:
                copy.execute(f'DROP TABLE "{schema}"."{name}"')
        copy.execute("CHECKPOINT")
    os.replace(tmp, target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--testing", type=int, default=100_000, help="attendance rows in the testing area")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-analyst-"))
    settings = replace(Settings.from_env(home), analyst_copy=False)
    try:
        with Warehouse(settings) as wh:
            generate(wh.con, Sizes.scaled(args.scale), log=False)
            wh.con.execute(f"""INSERT INTO testing.attendance BY NAME SELECT * FROM main.attendance
                LIMIT {args.testing}""")
            wh.con.execute("CHECKPOINT")
            rows = wh.con.execute("SELECT (SELECT count(*) FROM main.attendance), "
                                  "(SELECT count(*) FROM main.courses)").fetchone()
            times: dict[str, list[float]] = {"old": [], "new": []}
            sizes = {}
            for _ in range(args.repeat):
                for way in ("old", "new"):
                    t = time.perf_counter()
                    if way == "old":
                        old_way(wh, snapshot_path(settings))
                    else:
                        publish_snapshot(wh, settings)
                    times[way].append(time.perf_counter() - t)
                    sizes[way] = snapshot_path(settings).stat().st_size
        figures = {"attendance": rows[0], "courses": rows[1], "warehouse_mib": round(
            settings.warehouse_path.stat().st_size / 2**20, 1),
                   **{f"{w}_s": round(statistics.median(v), 2) for w, v in times.items()},
                   **{f"{w}_copy_mib": round(s / 2**20, 1) for w, s in sizes.items()}}
        print(json.dumps(figures))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
