"""`inservice corrections …`, `inservice history …`, `inservice units set-state|seal-dormant|log`
(listed in cli.COMMANDS)."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from inservice.config import Settings
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import UNIT_STATES, WarehouseError


def _dump(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def cmd_corrections(args: argparse.Namespace, settings: Settings) -> int:
    if args.corr_cmd == "apply":
        from inservice.corrections.apply import process_paths

        for r in process_paths([Path(p) for p in args.paths], settings, args.received_at):
            if args.json:
                print(_dump(r))
                continue
            n = r["rows"]
            print(f"{r['file']}: {r['status']}{' ' + r['refusal'] if r['refusal'] else ''} — {n['received']} row(s): "
                  f"{n['applied']} applied, {n['refused']} refused, {n['already_applied']} already applied")
            for note in r["notes"]:
                print(f"  {note}")
            for c in r["changes"]:
                print(f"  row {c['row']}: {c['status']}{' ' + c['reason'] if c['reason'] else ''} — "
                      f"{c['message_zh']} / {c['message_en']}")
            for path in r["receipt_files"]:
                print(f"  receipt: {path}")
        return 0
    with WriteSession(settings) as wh:
        cur = wh.con.execute("""SELECT content_hash, file_name, received_at, status, refusal, rows_received,
            rows_applied, rows_refused, rows_already_applied, receipt_json FROM correction_workbooks
            ORDER BY processed_at""")
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            rec = dict(zip(names, row, strict=True))
            print(_dump(rec) if args.json else
                  f"{rec['content_hash'][:12]}\t{rec['file_name']}\t{rec['status']}\t{rec['rows_applied']}/"
                  f"{rec['rows_received']} applied\t{rec['receipt_json']}")
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.corrections.history import course_history, units_with_course

    at = date.fromisoformat(args.at) if args.at else None
    with WriteSession(settings) as wh:
        units = [args.unit] if args.unit else units_with_course(wh.con, args.course, args.area)
        if not units:
            raise WarehouseError(f"no course {args.course} in the {args.area} area")
        if len(units) > 1:
            raise WarehouseError(f"course {args.course} exists for units {', '.join(units)}: give --unit")
        h = course_history(wh.con, units[0], args.course, at, args.area)
    if args.json:
        print(_dump(h))
        return 0
    print(f"{h['unit_code']} {h['course_code']} ({h['area']}) as of {h['at'] or 'now'}:")
    if h["course"] is None:
        print("  (no such course at that date)")
    else:
        for k, v in h["course"].items():
            print(f"  {k}: {v}")
    print(f"  attendance: {h['attendance']['count']} row(s)")
    for r in h["attendance"]["rows"]:
        print(f"    {r['teacher_key'][:12]}…  {r['school_code']}  {r['hours_granted']} h  completed={r['completed']}")
    print(f"  changes ({len(h['changes'])}):")
    for c in h["changes"]:
        who = f" {c['teacher_key'][:12]}…" if c["teacher_key"] else ""
        letter = f" letter {c['letter_no']}" if c["letter_no"] else ""
        what = ", ".join(f"{k}: {c['before'][k]} → {c['after'][k]}" for k in c["fields"])
        print(f"    {c['changed_at']} {c['record']}{who} {c['action']} ({c['source']} {c['source_id']}{letter})"
              f"{' ' + what if what else ''}")
    return 0


def cmd_set_state(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.corrections.lifecycle import set_state

    with WriteSession(settings) as wh:
        old = wh.unit(args.code)
        reason = set_state(wh, args.code, args.state, args.letter)
    assert old is not None  # set_state refuses a unit not registered
    print(f"unit {args.code}: {old.state} → {args.state} ({reason}, letter {args.letter})")
    return 0


def cmd_seal_dormant(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.corrections.lifecycle import DORMANT_FROM, DORMANT_TO, seal_dormant

    start = date.fromisoformat(args.from_date) if args.from_date else DORMANT_FROM
    end = date.fromisoformat(args.to_date) if args.to_date else DORMANT_TO
    with WriteSession(settings) as wh:
        out = seal_dormant(wh, start, end, confirm=args.yes, letter=args.letter)
    if args.json:
        print(_dump(out))
        return 0
    print(f"units with no data exchange from {out['from']} to {out['to']}: {len(out['dormant'])}")
    for u in out["dormant"]:
        print(f"  {u['unit_code']}\t{u['name']}\t{u['state']}\tjoined {u['joined']}\tlast loaded {u['last_loaded']}")
    if out["confirmed"]:
        print(f"sealed: {', '.join(out['sealed']) or 'none'}")
    elif out["dormant"]:
        print("nothing sealed: run again with --yes --letter NO to seal these units")
    return 0


def cmd_unit_log(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.corrections.lifecycle import state_log

    with WriteSession(settings) as wh:
        for e in state_log(wh, args.code):
            what = (f"registered {e['to_state']} as {e['new_value']}" if e["reason"] == "register" else
                    f"{e['from_state']} → {e['to_state']}" if e.get("field") in (None, "state") else
                    f"{e['field']}: {e['old_value']} → {e['new_value']} from {e['effective_date']}")
            print(f"{e['changed_at']}\t{e['unit_code']}\t{what}\t{e['reason']}\t{e['letter_no']}\t"
                  f"{e.get('changed_by') or ''}")
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `command` (the CLI's hook, cli.COMMANDS); `units` gets its lifecycle subcommands."""
    if command == "corrections":
        csub = p.add_subparsers(dest="corr_cmd", required=True)
        ap = csub.add_parser("apply", help="process correction workbooks; receipts in outbox/_corrections/")
        ap.add_argument("paths", nargs="+")
        ap.add_argument("--received-at", help="ISO-8601 receipt time (default now; no offset = Asia/Taipei)")
        ap.add_argument("--json", action="store_true", help="one JSON receipt per workbook, one per line")
        ls = csub.add_parser("list", help="the register of processed workbooks")
        ls.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_corrections)
    elif command == "history":
        p.add_argument("course")
        p.add_argument("--unit", help="the unit (needed when several units use the course code)")
        p.add_argument("--at", help="YYYY-MM-DD: the state at the end of that day (default: now)")
        p.add_argument("--area", choices=("production", "testing"), default="production")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_history)
    elif command == "units":  # the register's own subcommands (add, list) are inservice.cli's
        usub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        st = usub.add_parser("set-state", help="testing → production (promote), → sealed, sealed → testing "
                             "(re-apply)")
        st.add_argument("code")
        st.add_argument("state", choices=UNIT_STATES)
        st.add_argument("--letter", required=True, help="approval letter number (文號)")
        st.set_defaults(func=cmd_set_state)
        sd = usub.add_parser("seal-dormant", help="list units with no data exchange in a window; --yes seals them")
        sd.add_argument("--from", dest="from_date", help="YYYY-MM-DD (default 2013-01-01)")
        sd.add_argument("--to", dest="to_date", help="YYYY-MM-DD (default 2017-06-08)")
        sd.add_argument("--yes", action="store_true", help="staff confirm: seal the listed units")
        sd.add_argument("--letter", help="letter number of the sealing decision (required with --yes)")
        sd.add_argument("--json", action="store_true")
        sd.set_defaults(func=cmd_seal_dormant)
        lg = usub.add_parser("log", help="the unit state log")
        lg.add_argument("code", nargs="?")
        lg.set_defaults(func=cmd_unit_log)
