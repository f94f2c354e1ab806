"""End-to-end ingest of a 200,000-attendance-row XML upload (~46 MiB, UTF-8) vs a raw lxml iterparse.

Writes the file (streamed; 2,000 courses of 100 attendees, ~1% invalid IDs, ~0.5% repeated teachers,
dates in several forms), then in the same run, `--repeat` times each, alternating:
  raw — lxml `iterparse` of the same file, every element cleared as it ends (no schema, no values kept);
  e2e — what `inservice ingest` does with the file in its process, into an empty DuckDB warehouse with
        the unit registered: open, name/unit/hash checks, limits, the XSD-validated streamed read, every
        rule, the merge in one transaction, the JSON + Excel receipts, close. The analysts' read-only copy
        refreshed after the commit is timed apart (another piece of work's).
Prints the medians and the ratio (target e2e <= 1.6x raw). Memory: each of raw and e2e runs once more
in a fresh process at `--rows` and at twice as many, and their peak RSS is printed, the e2e's reader
child processes apart (the read streams: what grows is the upload's rows as columns, never a tree of
the file; the raw side keeps its cleared elements' shells). Once, the whole CLI process
(`inservice ingest`, start-up included) and `inservice --help` are timed too.

Usage: python bench/ingest_xml.py [--rows N] [--repeat K] [--no-memory] [--no-cli]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

from ingest_common import (
    child_json,
    children_peak_rss_mib,
    cli_ingest,
    load,
    make_id,
    peak_rss_mib,
    prepare,
    startup_seconds,
    timed,
    timed_ingest,
)
from lxml import etree

from inservice.config import Settings


def build(path: Path, rows: int, seed: int = 1) -> tuple[int, int]:
    """The upload, written as a stream (never held whole)."""
    rng = random.Random(seed)
    n_courses = max(1, rows // 100)
    start = date(2017, 5, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n'
                  '<Transmission unit="T001" month="2017-05" specVersion="1.0">\n  <Courses>\n')
        for i in range(n_courses):
            d = start + timedelta(days=i % 25)
            roc = f"{d.year - 1911}/{d.month:02d}/{d.day:02d}"
            fields = {"unit_code": "T001", "course_code": f"001106{i:06d}", "title": f"研習課程 {i} & 實作",
                      "organizer": "國立臺灣師範大學", "organizer_type": "3", "county_code": "63000",
                      "start_date": d.isoformat() if i % 2 else roc, "end_date": d.isoformat(), "hours": "6",
                      "class_type": "1", "category": "A", "delivery": "3", "time_slot": "1", "audience": "E;J",
                      "tags": "T2", "closed_date": (d + timedelta(days=2)).isoformat()}
            out.write("    <Course>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items()) + "</Course>\n")
        out.write("  </Courses>\n  <Attendance>\n")
        previous = None
        for r in range(rows):
            national_id = make_id(rng)
            if rng.random() < 0.01:
                national_id = national_id[:-1] + "X"
            if rng.random() < 0.005 and previous:
                national_id = previous
            previous = national_id
            out.write(f"    <Record><unit_code>T001</unit_code><course_code>001106{r // 100:06d}</course_code>"
                      f"<national_id>{national_id}</national_id><name>王小明</name>"
                      "<school_code>423605</school_code><hours_granted>6</hours_granted>"
                      "<completed>Y</completed></Record>\n")
        out.write("  </Attendance>\n</Transmission>\n")
    return n_courses, rows


def raw_parse(path: Path) -> int:
    """lxml iterparse, every element cleared as it ends."""
    n = 0
    for _, element in etree.iterparse(str(path)):
        element.clear()
        n += 1
    return n


def child(args: argparse.Namespace) -> None:
    """One run in this fresh process, its time and peak RSS as JSON (the memory figures)."""
    path = Path(args.file)
    start = time.perf_counter()
    if args.child == "raw":
        raw_parse(path)
        out = {"seconds": time.perf_counter() - start}
    else:
        run = timed_ingest(path, Settings.from_env(Path(args.home)))
        assert run.receipt["status"] == "loaded", run.receipt["refusal"]
        out = {"seconds": run.ingest, "refresh": run.refresh}
    print(json.dumps({**out, "peak_rss_mib": peak_rss_mib(), "children_peak_rss_mib": children_peak_rss_mib()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--child", choices=("raw", "e2e"), help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="ingest-speed-xml-") as tmp:
        path = Path(tmp) / "inbox" / "T001" / "T001_201705.xml"
        t = time.perf_counter()
        n_courses, n_att = build(path, args.rows)
        print(f"built {path.name}: {n_courses:,} courses, {n_att:,} attendance rows, "
              f"{path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - t:.1f} s", flush=True)
        raw_parse(path)  # the page cache warmed for both sides
        if args.repeat:  # --repeat 0: the memory figures alone
            raws, ends, refreshes, raw_cpu, end_cpu = [], [], [], [], []
            for k in range(args.repeat):
                wall, cpu = timed(lambda: raw_parse(path))
                raws.append(wall)
                raw_cpu.append(cpu)
                run = timed_ingest(path, prepare(Path(tmp) / f"home{k}"))
                assert run.receipt["status"] == "loaded", run.receipt["refusal"]
                ends.append(run.ingest)
                refreshes.append(run.refresh)
                end_cpu.append(run.cpu)
                print(f"  run {k + 1}: raw {raws[-1]:.2f} s, e2e {ends[-1]:.2f} s ({ends[-1] / raws[-1]:.2f}x), "
                      f"analysts' refresh {refreshes[-1]:.2f} s; CPU raw {raw_cpu[-1]:.2f} s, e2e {end_cpu[-1]:.2f} s; "
                      f"{load()}", flush=True)
            raw, end, refresh = (statistics.median(x) for x in (raws, ends, refreshes))
            a = run.receipt["attendance"]
            print(f"accepted {a['accepted']:,} of {a['received']:,} attendance rows, "
                  f"{len(run.receipt['findings']):,} findings")
            print(f"raw lxml iterparse:   {raw:.2f} s (median of {args.repeat})")
            print(f"end-to-end ingest:    {end:.2f} s (median of {args.repeat}; "
                  f"analysts' refresh apart: {refresh:.2f} s)")
            print(f"ratio: {end / raw:.2f}x  (target <= 1.6x; median of the per-run ratios "
                  f"{statistics.median(e / r for e, r in zip(ends, raws, strict=True)):.2f}x)")
            print(f"CPU seconds (every thread and child process): raw {statistics.median(raw_cpu):.2f}, e2e "
                  f"{statistics.median(end_cpu):.2f} = {statistics.median(end_cpu) / statistics.median(raw_cpu):.2f}x")
        if args.repeat and not args.no_cli:
            home = Path(tmp) / "home-cli"
            prepare(home)
            cli_s, receipt = cli_ingest(path, home)
            assert receipt["status"] == "loaded", receipt
            print(f"whole `inservice ingest` process: {cli_s:.2f} s (its start-up, `inservice --help`: "
                  f"{startup_seconds():.2f} s; analysts' refresh included)")
        if not args.no_memory:
            me = Path(__file__).resolve()
            for rows in (args.rows, 2 * args.rows):
                sized = Path(tmp) / f"mem{rows}" / "inbox" / "T001" / "T001_201705.xml"
                build(sized, rows, seed=2)
                raw_m = child_json(me, "raw", "--file", str(sized))
                prepare(sized.parents[2] / "home")
                e2e_m = child_json(me, "e2e", "--file", str(sized), "--home", str(sized.parents[2] / "home"))
                print(f"peak RSS at {rows:,} rows ({sized.stat().st_size / 2**20:.0f} MiB): "
                      f"raw {raw_m['peak_rss_mib']:.0f} MiB; e2e {e2e_m['peak_rss_mib']:.0f} MiB, its reader "
                      f"processes {e2e_m['children_peak_rss_mib']:.0f} MiB each at most "
                      f"(e2e {e2e_m['seconds']:.2f} s)", flush=True)
                sized.unlink()
        print(load())


if __name__ == "__main__":
    sys.exit(main())
