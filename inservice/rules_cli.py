"""`inservice lights` (the organizers' lights on a day) and `inservice replay` (archived uploads
re-evaluated under the rules in force)."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime

from inservice.config import TAIPEI, Settings
from inservice.schemas.rules import LIGHTS
from inservice.validations import lights
from inservice.warehouse import ddl
from inservice.warehouse.store import Warehouse


def organizer_lights(wh: Warehouse, on: date, unit: str | None = None) -> list[dict]:
    """Per organizer within its unit: courses counting on `on` and the light (only organizers with a
    course counting that day; every other organizer is green)."""
    cur = wh.con.execute(f"""SELECT unit_code, organizer, count(*) AS unclosed, {lights.light_sql("count(*)")} AS light
        FROM main.{ddl.ORGANIZER_LIGHT_COURSES.name}
        WHERE CAST(? AS DATE) BETWEEN counts_from AND counts_until AND (CAST(? AS VARCHAR) IS NULL OR unit_code = ?)
        GROUP BY unit_code, organizer ORDER BY unclosed DESC, unit_code, organizer""", [on, unit, unit])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def cmd_lights(args: argparse.Namespace, settings: Settings) -> int:
    on = date.fromisoformat(args.at) if args.at else datetime.now(TAIPEI).date()
    with Warehouse(settings, read_only=Warehouse.exists(settings)) as wh:
        rows = organizer_lights(wh, on, args.unit)
    for r in rows:
        if args.json:
            print(json.dumps({**r, "on": on.isoformat()}, ensure_ascii=False))
        else:
            print(f"{r['unit_code']}\t{r['organizer']}\t{r['unclosed']}\t{LIGHTS[r['light']]}")
    if not args.json:
        print(f"{len(rows)} organizer(s) with courses not closed on {on}; every other organizer is green")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.replay import parse_months, parse_units, replay, report_lines

    replays = replay(settings, parse_units(args.units), parse_months(args.months), apply=args.apply)
    if args.json:
        for r in replays:
            print(json.dumps(r.as_json(), ensure_ascii=False, default=str))
    else:
        print("\n".join(report_lines(replays, args.apply)))
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `inservice lights` and `inservice replay` (the CLI's hook, cli.COMMANDS)."""
    if command == "lights":
        p.add_argument("--at", help="the day YYYY-MM-DD (default today, Asia/Taipei)")
        p.add_argument("--unit", help="one unit's organizers")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_lights)
    elif command == "replay":
        p.add_argument("--units", nargs="+", required=True, help="unit codes (T001 T002 or T001,T002)")
        p.add_argument("--months", required=True, help="data months YYYY-MM..YYYY-MM (or one month)")
        p.add_argument("--apply", action="store_true",
                       help="load what is accepted now, one transaction per upload, with a re-evaluation receipt")
        p.add_argument("--json", action="store_true", help="one JSON object per upload")
        p.set_defaults(func=cmd_replay)
