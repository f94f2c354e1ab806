"""`inservice stats`, `inservice yearbook`, `inservice export` (listed in cli.COMMANDS)."""

from __future__ import annotations

import argparse
import json

from inservice.config import Settings


def _print(obj: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False))
    else:
        print("\n".join(lines))


def _summary(totals: dict) -> str:
    return (f"courses {totals['courses']:,} ({totals['course_hours']:,.1f} h), "
            f"person-times {totals['person_times']:,}, teachers {totals['teachers']:,}, "
            f"granted {totals['granted_hours']:,.1f} h")


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.publish.monthly import publish_month

    pub = publish_month(settings, args.month, as_of=args.as_of)
    out = {"month": pub.month, "as_of": pub.as_of.isoformat(), "files": pub.files, "totals": pub.totals,
           "revision": pub.revision, "report_date": pub.report_date.isoformat()}
    head = f"{pub.month} revision {pub.revision} as of {pub.as_of.isoformat()}: {_summary(pub.totals)}"
    _print(out, args.json, [head, *(f"  {f}" for f in pub.files)])
    return 0


def cmd_yearbook(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.publish.yearbook import publish_year

    ext = publish_year(settings, args.year, snapshot=args.snapshot, taken_at=args.as_of)
    out = {"year": ext.year, "as_of": ext.snapshot.taken_at.isoformat(), "files": ext.files, "totals": ext.totals,
           "snapshot_id": ext.snapshot.snapshot_id}
    _print(out, args.json, [f"{ext.year} snapshot {ext.snapshot.snapshot_id} "
                            f"({ext.snapshot.courses:,} courses, {ext.snapshot.attendance:,} attendance rows): "
                            f"{_summary(ext.totals)}", *(f"  {f}" for f in ext.files)])
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.publish.export import export_county

    ex = export_county(settings, args.county, args.from_month, args.to_month, args.format)
    _print(ex.as_json(), args.json, [f"county {ex.county} {ex.first}..{ex.last}: {len(ex.units)} unit(s), "
                                     f"{ex.rows['courses']:,} courses, {ex.rows['attendance']:,} attendance rows",
                                     *(f"  {f}" for f in ex.files)])
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.publish.audit import audit_worklist

    w = audit_worklist(settings, args.month, as_of=args.as_of)
    _print(w.as_json(), args.json, [f"{w.month}: {len(w.due)} unit(s) due, {len(w.rows)} unit-month(s), "
                                    f"{sum(r['missing'] for r in w.rows)} missing", *(f"  {f}" for f in w.files)])
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `command` (the CLI's hook, cli.COMMANDS)."""
    if command == "stats":
        p.add_argument("--month", required=True, help="YYYY-MM")
        p.add_argument("--as-of", help="publication time, ISO-8601 (default now; no offset = Asia/Taipei)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=cmd_stats)
    elif command == "yearbook":
        p.add_argument("--year", required=True, help="YYYY (Gregorian)")
        p.add_argument("--snapshot", help="reuse a snapshot: its id, or 'latest' (default: take a new one)")
        p.add_argument("--as-of", help="time recorded for a new snapshot (default now)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=cmd_yearbook)
    elif command == "export":
        p.add_argument("--county", required=True, help="county code, e.g. 63000")
        p.add_argument("--from", dest="from_month", required=True, help="YYYY-MM (course start month)")
        p.add_argument("--to", dest="to_month", required=True, help="YYYY-MM")
        p.add_argument("--format", choices=("xlsx", "csv", "parquet"), default="xlsx")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=cmd_export)
    elif command == "audit":
        p.add_argument("--month", required=True, help="YYYY-MM (the data month audited)")
        p.add_argument("--as-of", help="time of the worklist, ISO-8601 (default now)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=cmd_audit)
