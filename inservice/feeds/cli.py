"""`inservice feeds add|list|run`: the feed register and a pull now."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from inservice.config import Settings
from inservice.errors import EX_TEMPFAIL  # 75: the partner could not be reached; try again later
from inservice.feeds import register as feed_register
from inservice.warehouse.analyst import WriteSession


def cmd_feeds(args: argparse.Namespace, settings: Settings) -> int:
    if args.feeds_cmd == "run":
        return _run(args, settings)
    with WriteSession(settings) as wh:
        if args.feeds_cmd == "add":
            spec = feed_register.FeedSpec(args.unit, args.url_env, args.courses_table, args.attendance_table,
                                     args.overlap_minutes)
            unit = wh.unit(args.unit)
            if unit is not None and unit.channel != "db":
                print(f"inservice: unit {args.unit} is registered with channel '{unit.channel}'; change its channel "
                      f"first (inservice units set-channel {args.unit} db --letter NO [--date YYYY-MM-DD])",
                      file=sys.stderr)
                return 1
            feed_register.add_feed(wh, spec)
            print(f"feed {args.unit} registered: URL from ${args.url_env}, tables {spec.courses_table}, "
                  f"{spec.attendance_table}, overlap {spec.overlap_minutes} min")
            if unit is None:
                print(f"warning: unit {args.unit} is not in the unit register: its pulls are refused (F05) "
                      f"until it is", file=sys.stderr)
        else:
            for f in feed_register.feeds(wh):
                marks = {a: feed_register.watermark(wh.con, f.unit_code, a) for a in ("production", "testing")}
                shown = "; ".join(f"{a} {m.watermark or '—'} ({m.rows_taken} rows)" for a, m in marks.items()
                                  if m.updated_at is not None) or "never pulled"
                print(f"{f.unit_code}\t${f.url_env}\t{f.courses_table}\t{f.attendance_table}\t"
                      f"overlap {f.overlap_minutes} min\twatermark: {shown}")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.feeds.core import FeedNotRegistered, FeedUnavailable, run_feed
    from inservice.receipts import summary_lines

    day = date.fromisoformat(args.day) if args.day else None
    try:
        receipt = run_feed(settings, args.unit, day, full=args.full)
        code = 0
    except FeedNotRegistered as exc:
        print(f"inservice: {exc}", file=sys.stderr)
        return 1
    except FeedUnavailable as exc:
        receipt, code = exc.receipt, EX_TEMPFAIL
    if args.json:
        _print_json(receipt)
    else:
        print("\n".join(summary_lines(receipt)))
        if receipt["findings_total"] > len(receipt["findings"]):
            print(f"  {receipt['findings_total']} finding(s) in all, listed in the receipt")
    return code


def _print_json(receipt: dict) -> None:
    """One line, every finding: those the run did not keep in memory are read from its receipt."""
    if receipt["findings_total"] == len(receipt["findings"]):
        print(json.dumps(receipt, ensure_ascii=False, default=str))
        return
    from inservice.feeds.spill import receipt_findings

    mark = "\x00findings\x00"
    head, tail = json.dumps({**receipt, "findings": mark}, ensure_ascii=False, default=str).split(json.dumps(mark))
    out = sys.stdout
    out.write(head + "[")
    for i, f in enumerate(receipt_findings(Path(receipt["receipt_files"][0]))):
        out.write((", " if i else "") + json.dumps(f, ensure_ascii=False, default=str))
    out.write("]" + tail + "\n")


def arguments(command: str, feeds: argparse.ArgumentParser) -> None:
    """The arguments of `inservice feeds` (the CLI's hook, cli.COMMANDS)."""
    fsub = feeds.add_subparsers(dest="feeds_cmd", required=True)
    add = fsub.add_parser("add", help="register (or replace) a unit's feed")
    add.add_argument("unit")
    add.add_argument("--url-env", required=True,
                     help="NAME of the environment variable holding the SQLAlchemy URL (never the URL itself)")
    add.add_argument("--courses-table", default=feed_register.COURSE.feed_table,
                     help="table or view, schema.name allowed")
    add.add_argument("--attendance-table", default=feed_register.ATTENDANCE.feed_table)
    add.add_argument("--overlap-minutes", type=int, default=feed_register.DEFAULT_OVERLAP_MINUTES,
                     help="re-read this far behind the watermark (late-committing transactions)")
    fsub.add_parser("list", help="registered feeds and their watermarks")
    run = fsub.add_parser("run", help="pull a unit's feed once now; prints one receipt")
    run.add_argument("unit")
    run.add_argument("--day", help="the feed day the receipt is for, YYYY-MM-DD (default today, Asia/Taipei)")
    run.add_argument("--full", action="store_true", help="ignore the watermark: re-read every row (unchanged "
                     "rows are no-ops)")
    run.add_argument("--json", action="store_true", help="one JSON receipt (the shape of `ingest --json`)")
    run.epilog = "exit status 0: processed (loaded or refused); 75: partner unreachable, retry later; 1: usage"
    feeds.set_defaults(func=cmd_feeds)

