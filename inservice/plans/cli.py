"""`inservice plans stats --school-year 106 [--json]` (declared in cli.COMMANDS). Plan exports
themselves go through `inservice ingest` / `inservice check` like any upload."""

from __future__ import annotations

import argparse
import json

from inservice.config import Settings


def cmd_plan_stats(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.plans.publish import publish_plans

    pub = publish_plans(settings, args.school_year, as_of=args.as_of)
    out = pub.as_json()
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    t = pub.totals
    ratio = "—" if t["coverage_ratio"] is None else f"{t['coverage_ratio']:.4f}"
    print(f"{out['school_year']} revision {pub.revision} as of {out['as_of']}: schools {t['schools']:,}, "
          f"teachers {t['teachers']:,}, planned {t['planned_hours']:,.1f} h, coverage {ratio}")
    for f in pub.files:
        print(f"  {f}")
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `plans` (the CLI's hook, cli.COMMANDS)."""
    psub = p.add_subparsers(dest="plans_cmd", required=True)
    st = psub.add_parser("stats", help="the four publications of a school year: stat_plan_* tables, workbooks, HTML")
    st.add_argument("--school-year", required=True, help="ROC school year, e.g. 106 (2017-08-01 .. 2018-07-31)")
    st.add_argument("--as-of", help="publication time, ISO-8601 (default now; no offset = Asia/Taipei)")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=cmd_plan_stats)
