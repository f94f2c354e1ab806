"""`inservice backfill SOURCE`: migrate the legacy archive (resumable; a progress line on stderr)."""

from __future__ import annotations

import argparse
import json
import sys

from inservice.config import Settings


def _progress_line(tty: bool):
    def show(p) -> None:
        share = p.rows_read / p.rows_total if p.rows_total else 1.0
        bar = "#" * int(share * 30)
        rate = p.rows_read / p.seconds if p.seconds > 0 else 0.0
        note = " (committed earlier: skipped)" if p.skipped else ""
        line = (f"backfill [{bar:<30}] {share:6.1%} {p.rows_read:,}/{p.rows_total:,} rows, chunk {p.chunk}{note} — "
                f"loaded {p.loaded:,}, archived {p.archived:,}, refused {p.refused:,}; {rate:,.0f} rows/s")
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
    return show


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.backfill.core import run_backfill

    tty = sys.stderr.isatty()
    report = run_backfill(settings, args.source, args.batch_rows, None if args.quiet else _progress_line(tty))
    if tty and not args.quiet:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, default=str))
        return 0
    print(f"backfill {report['run_id']} of {report['source']} (cutoff {report['cutoff']}): "
          f"{report['rows_read']:,} rows read = {report['loaded']:,} loaded + {report['archived']:,} archived + "
          f"{report['refused']:,} refused ({'balanced' if report['balanced'] else 'NOT BALANCED'}), "
          f"{report['chunks']} chunk(s)")
    for rule, n in report["refused_by_rule"].items():
        print(f"  refused {rule}: {n:,}")
    for u in report["units_registered"]:
        print(f"  unit registered: {u['unit_code']} (joined {u['joined']})")
    print(f"  cold archive: {report['archive']['folder']}")
    print(f"  reconciliation: {report['reconciliation_file']}")
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `inservice backfill` (the CLI's hook, cli.COMMANDS)."""
    p.add_argument("source", help="postgresql://… (or mysql://, mssql://) or a folder")
    p.add_argument("--batch-rows", type=int, help="rows of either table per chunk (default "
                                                  "INSERVICE_BACKFILL_BATCH_ROWS or 200000; a re-run keeps the first "
                                                  "run's)")
    p.add_argument("--json", action="store_true", help="print the reconciliation as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_backfill)
