"""Access reader end to end (read + validate) against a raw `mdb-export` of the attendance table.

    python bench/ingest_access.py [FILE.accdb|.mdb] [--runs N]
    INSERVICE_BENCH_ACCESS=…/access/large/T001/T001_201706.accdb python bench/ingest_access.py

The full-size upload of the shared fixtures (`access/large/`: 4,000 courses, 197,733 attendance rows,
15 MiB) is not committed to this repository; point INSERVICE_BENCH_ACCESS (or FILE) at it.

The target is set at 200,000 rows; Access files cannot be written on Linux, so the default input is
the largest real one we have, tests/fixtures/access/edge/big20k_V2010.accdb (20,000 attendance
rows), and the output says the scale. The edge files lack 開課單位類別, so as uploads they are F07: for
them the bench reads the tables exactly as read_access does and supplies that one column (code "1")
before building the upload, so every other step is the real one. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inservice.loaders import access  # noqa: E402
from inservice.loaders.base import RawUpload, UploadRefused  # noqa: E402
from inservice.validations.engine import Context, validate  # noqa: E402
from inservice.validations.pseudonym import Pseudonymiser  # noqa: E402

DEFAULT = Path(os.environ.get("INSERVICE_BENCH_ACCESS") or ROOT / "tests/fixtures/access/edge/big20k_V2010.accdb")


def raw_export(path: Path, table: str) -> float:
    start = time.perf_counter()
    subprocess.run(["mdb-export", "-D", access.DATE_FORMAT, "-T", access.DATETIME_FORMAT, str(path), table],
                   stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def lacks_organizer_type(path: Path) -> bool:
    try:
        access.read_access(path)
    except UploadRefused as refusal:
        if refusal.rule == "F07" and "organizer_type" in refusal.detail_en:
            return True
        raise
    return False


def read(path: Path, supply: bool) -> RawUpload:
    """read_access, or its very steps plus the missing 開課單位類別 column (edge files)."""
    if not supply:
        return access.read_access(path)
    with access.session(path) as runner:
        tables = access.read_tables(runner)
        course = tables["course"]
        course.data = course.data.append_column("開課單位類別", pa.array(["1"] * course.data.num_rows))
        course.types["開課單位類別"] = "Text"
        return access.upload_from_tables(runner.f, tables)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    path: Path = args.file
    table = next(t for t in access.list_tables(path) if t in ("研習名單", "attendance"))
    ctx = Context(unit="T001", channel="file", received_on=date(2017, 6, 3),
                  pseudonymiser=Pseudonymiser(b"k"))
    supplied = lacks_organizer_type(path)  # also warms the page cache for both sides

    raw_times, read_times, validate_times = [], [], []
    for _ in range(args.runs):
        raw_times.append(raw_export(path, table))
        start = time.perf_counter()
        upload = read(path, supplied)
        mid = time.perf_counter()
        validate(upload, ctx)
        read_times.append(mid - start)
        validate_times.append(time.perf_counter() - mid)

    rows = upload.attendance.num_rows
    med = statistics.median
    ours = med([r + v for r, v in zip(read_times, validate_times, strict=True)])
    print(f"file: {path.name} ({path.stat().st_size / 2**20:.1f} MiB), attendance rows: {rows:,}, "
          f"courses: {upload.courses.num_rows:,}; median of {args.runs} runs")
    if rows < 150_000:
        print(f"scale: {rows:,} rows, not the 200,000 of the target (no larger Access file can be made "
              "on Linux); fixed costs (7 child processes) weigh more here than they would at 200,000")
    if supplied:
        print("note: the file lacks 開課單位類別 (F07 as an upload); the bench supplied it after reading")
    print(f"raw mdb-export of {table}:          {med(raw_times):7.3f} s")
    print(f"read_access (both tables, checked): {med(read_times):7.3f} s")
    print(f"validate:                           {med(validate_times):7.3f} s")
    print(f"read + validate:                    {ours:7.3f} s")
    print(f"ratio read/raw export:              {med(read_times) / med(raw_times):7.2f}x")
    print(f"ratio (read + validate)/raw export: {ours / med(raw_times):7.2f}x   (target <= 1.5x)")


if __name__ == "__main__":
    main()
