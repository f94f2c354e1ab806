"""`inservice units rename|handover|set-channel|set-county|versions` and `inservice schools import|show|changes`."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from inservice.config import Settings
from inservice.registers import schools as school_register
from inservice.registers import units as unit_register
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import CHANNELS, Warehouse


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _print(rows: list[dict], as_json: bool) -> None:
    for r in rows:
        if as_json:
            print(json.dumps(r, ensure_ascii=False, default=str))
        else:
            print("\t".join("" if v is None else str(v) for v in r.values()))


def cmd_unit_change(args: argparse.Namespace, settings: Settings) -> int:
    field, value = {"rename": ("name", getattr(args, "name", None)),
                    "handover": ("operator", getattr(args, "operator", None)),
                    "set-channel": ("channel", getattr(args, "channel", None)),
                    "set-county": ("county_code", getattr(args, "county", None))}[args.units_cmd]
    assert value is not None  # each subcommand's parser requires its value
    with WriteSession(settings) as wh:
        change = unit_register.change(wh, args.code, field, value, args.letter, _day(args.date))
    print(f"unit {change.unit_code}: {change.field} {change.old!r} → {change.new!r} from {change.effective} "
          f"(letter {change.letter})")
    if field == "channel" and change.new == "db":
        print(f"next: inservice feeds add {change.unit_code} --url-env FEED_{change.unit_code}_URL")
    return 0


def cmd_unit_versions(args: argparse.Namespace, settings: Settings) -> int:
    with Warehouse(settings, read_only=True) as wh:
        _print(unit_register.versions(wh.con, args.code), args.json)
    return 0


def cmd_schools(args: argparse.Namespace, settings: Settings) -> int:
    if args.schools_cmd == "import":
        with WriteSession(settings) as wh:
            result = school_register.import_lists(wh, [Path(p) for p in args.files], date.fromisoformat(args.date),
                                                  args.letter, args.level, closures=not args.no_closures)
        if args.json:
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        else:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(result.changes.items())) or "no change"
            print(f"{result.rows} schools read (levels {' '.join(result.levels)}), effective {result.effective}: "
                  f"{shown}")
        return 0
    with Warehouse(settings, read_only=True) as wh:
        if args.schools_cmd == "show":
            day = _day(args.on) or date.today()
            found = school_register.school_on(wh.con, args.code, day)
            if found is None:
                print(f"school {args.code} is not in the register on {day}")
                return 1
            _print([found], args.json)
        else:
            _print(school_register.changes(wh.con, args.code), args.json)
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `command` (the CLI's hook, cli.COMMANDS): `units` gets the register's changes."""
    if command == "units":
        _units(next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)))
    elif command == "schools":
        _schools(p)


def _units(usub: argparse._SubParsersAction) -> None:

    def letter_and_date(p: argparse.ArgumentParser) -> None:
        p.add_argument("--letter", required=True, help="approval letter number (文號)")
        p.add_argument("--date", help="the day the change takes effect, YYYY-MM-DD (default today)")
        p.set_defaults(func=cmd_unit_change)

    p = usub.add_parser("rename", help="the unit's new name from a date (past months keep the old name)")
    p.add_argument("code")
    p.add_argument("--name", required=True)
    letter_and_date(p)
    p = usub.add_parser("handover", help="the unit passes to another operating body (移轉經營)")
    p.add_argument("code")
    p.add_argument("--operator", required=True)
    letter_and_date(p)
    p = usub.add_parser("set-channel", help="file upload ↔ database feed (then `feeds add` for db)")
    p.add_argument("code")
    p.add_argument("channel", choices=CHANNELS)
    letter_and_date(p)
    p = usub.add_parser("set-county", help="the unit's county (its county's export takes it)")
    p.add_argument("code")
    p.add_argument("county")
    letter_and_date(p)
    p = usub.add_parser("versions", help="the unit's name, operator, channel and county through time")
    p.add_argument("code", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_unit_versions)


def _schools(sch: argparse.ArgumentParser) -> None:
    ssub = sch.add_subparsers(dest="schools_cmd", required=True)
    imp = ssub.add_parser("import", help="MOE lists (CSV/xlsx: code, name, county, level) in force from --date")
    imp.add_argument("files", nargs="+")
    imp.add_argument("--date", required=True, help="the day the list is in force (changes take effect), YYYY-MM-DD")
    imp.add_argument("--letter", required=True, help="the letter or publication number of the list")
    imp.add_argument("--level", help="the level of every school in the files, when they have no level column")
    imp.add_argument("--no-closures", action="store_true",
                     help="a partial list: schools missing from it are not closed")
    imp.add_argument("--json", action="store_true")
    show = ssub.add_parser("show", help="a school as the register had it on a day")
    show.add_argument("code")
    show.add_argument("--on", help="YYYY-MM-DD (default today)")
    show.add_argument("--json", action="store_true")
    ch = ssub.add_parser("changes", help="openings, closures, renames, level and county changes")
    ch.add_argument("code", nargs="?")
    ch.add_argument("--json", action="store_true")
    sch.set_defaults(func=cmd_schools)
