"""W04 against the dated school register (the school's version on the course's start date) vs the old
check against the shipped list (a plain set membership), on one upload's attendance.

Builds N attendance rows over `--courses` courses (start dates spread over 2017) with school codes drawn
from the shipped list (plus 1% unknown), a register of the shipped list with 5% of its schools changed
mid-year (two versions each), and times the engine's W04 both ways, median of `--repeat`.
Usage: python bench/w04_register.py [--rows 200000] [--courses 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from inservice.loaders.base import ROW
from inservice.schemas.reference import school_codes
from inservice.validations import engine
from inservice.validations.findings import Findings


class _Register:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def schools(self) -> pa.Table:
        return self.table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--courses", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(16)
    codes = school_codes().to_pylist()
    changed = set(rng.sample(codes, len(codes) // 20))
    mid = date(2017, 7, 1)
    reg_codes, froms, tos = [], [], []
    for c in codes:
        if c in changed:
            reg_codes += [c, c]
            froms += [None, mid]
            tos += [mid, None]
        else:
            reg_codes.append(c)
            froms.append(None)
            tos.append(None)
    register = pa.table({"school_code": reg_codes, "valid_from": pa.array(froms, pa.date32()),
                         "valid_to": pa.array(tos, pa.date32())})
    course_codes = [f"C{i:05d}" for i in range(args.courses)]
    courses = pa.table({"course_code": course_codes,
                        "start_date": pa.array([date(2017, 1, 1) + timedelta(days=rng.randrange(365))
                                                for _ in course_codes], pa.date32()),
                        ROW: pa.array(range(2, args.courses + 2), pa.int64())})
    existing = pa.table({"course_code": pa.array([], pa.string()), "start_date": pa.array([], pa.date32())})
    typed = {
        "school_code": pa.array([rng.choice(codes) if rng.random() > 0.01 else "ZZ9999" for _ in range(args.rows)]),
        "course_code": pa.array([rng.choice(course_codes) for _ in range(args.rows)]),
        ROW: pa.array(range(2, args.rows + 2), pa.int64()),
    }
    con = duckdb.connect()

    def timed(state: object) -> tuple[float, int]:
        runs = []
        for _ in range(args.repeat):
            ctx = engine.Context(unit="T001", channel="file", received_on=date(2018, 1, 5), pseudonymiser=None,
                                 state=state)  # type: ignore[arg-type]
            out = Findings()
            t = time.perf_counter()
            engine._w04(typed, courses, existing, ctx, out, con)
            runs.append(time.perf_counter() - t)
        return statistics.median(runs), out.table().num_rows

    plain, n_plain = timed(None)
    dated, n_dated = timed(_Register(register))
    print(f"{args.rows:,} attendance rows, {args.courses:,} courses, register {register.num_rows:,} versions")
    print(f"W04 against the shipped list (set membership): {plain * 1000:.1f} ms, {n_plain:,} findings")
    print(f"W04 against the dated register (version on the course's start date): {dated * 1000:.1f} ms, "
          f"{n_dated:,} findings")
    print(f"ratio dated / plain: {dated / plain:.1f}×")


if __name__ == "__main__":
    main()
