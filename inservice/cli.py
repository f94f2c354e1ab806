"""`inservice` command line: ingest, check, units, exceptions, demo here; the other commands beside
their code (publish/cli.py, corrections/cli.py, feeds/cli.py, warehouse/cli.py).

Start-up stays light: `COMMANDS` names every command with its help and the module that declares
its arguments, and only the module of the command being run is imported. `inservice --help` loads
no library outside the standard one; no command loads Dagster, and duckdb, pyarrow or openpyxl
come only with the commands that use them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from inservice import failures
from inservice.config import Settings
from inservice.errors import EX_TEMPFAIL, OperatorError

# command: (help, the modules whose `arguments(command, parser)` declare its arguments and set
# `func(args, settings)`, in order)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ingest": ("process upload files as received in the inbox named by their folder", ("inservice.cli",)),
    "check": ("a unit's self-check: the same receipt files, nothing loaded or recorded", ("inservice.cli",)),
    "template": ("the partners' Excel template, the Data Package (Table Schema) and the XSD", ("inservice.cli",)),
    "units": ("the unit register", ("inservice.cli", "inservice.corrections.cli", "inservice.registers.cli",
                                    "inservice.registers.contacts")),
    "schools": ("the MOE school list as a dated register", ("inservice.registers.cli",)),
    "exceptions": ("archive-cutoff exceptions (approval letters)", ("inservice.cli",)),
    "demo": ("register the sample units and ingest the sample inbox", ("inservice.cli",)),
    "stats": ("monthly statistics (統計月報): stat_* tables, workbook and HTML page", ("inservice.publish.cli",)),
    "yearbook": ("yearbook extract (師資培育統計年報 — 教師進修篇) from a frozen snapshot", ("inservice.publish.cli",)),
    "export": ("all courses and attendance of a county's units (pseudonymised)", ("inservice.publish.cli",)),
    "audit": ("the audit worklist (查核): units due this month and what each sent", ("inservice.publish.cli",)),
    "corrections": ("correction workbooks (修改已結案課程內容申請表)", ("inservice.corrections.cli",)),
    "history": ("a course (and its attendance) as it stood on a date, with its changes",
                ("inservice.corrections.cli",)),
    "feeds": ("daily database feeds (資料庫互傳): register and pull", ("inservice.feeds.cli",)),
    "warehouse": ("the warehouse: backend, analyst access, Parquet lake", ("inservice.warehouse.cli",)),
    "backfill": ("migrate the legacy archive (a database URL, or a folder holding inservice_courses/ and "
                 "inservice_attendance/ as Parquet or CSV); resumable", ("inservice.backfill.cli",)),
    "mail": ("queue and send the partners' and staff's e-mails (mail_outbox)", ("inservice.notifications",)),
    "tags": ("the attribute-tag register (屬性標籤, spec §3.8): list, add, retire, log", ("inservice.registers.tags",)),
    "lights": ("organizers' lights (業務帳號燈號) on a day: courses ended > 7 days, not closed",
               ("inservice.rules_cli",)),
    "replay": ("re-evaluate archived uploads under the rules in force (preview; --apply loads)",
               ("inservice.rules_cli",)),
    "plans": ("the planning survey (學校本位暨教師自我專業進修規劃): its publications", ("inservice.plans.cli",)),
}


def _print_receipts(receipts: list[dict], as_json: bool) -> None:
    from inservice.receipts import summary_lines

    for r in receipts:
        print(json.dumps(r, ensure_ascii=False, default=str) if as_json else "\n".join(summary_lines(r)))


def _ingest_any(paths: list[Path], settings: Settings, received_at: str | None, load: bool) -> list[dict]:
    """Uploads through the upload core, planning survey exports (the PLAN inbox, `PLAN_…` names)
    through the plans channel; receipts in the order of the paths."""
    from inservice.ingest import ingest_paths
    from inservice.plans.intake import ingest_plan_paths
    from inservice.schemas.plans import PLAN_UNIT, is_plan_file

    is_plan = [p.absolute().parent.name == PLAN_UNIT or is_plan_file(p.name) for p in paths]
    plans = iter(ingest_plan_paths([p for p, k in zip(paths, is_plan, strict=True) if k], settings, received_at,
                                   load) if any(is_plan) else [])
    uploads = iter(ingest_paths([p for p, k in zip(paths, is_plan, strict=True) if not k], settings, received_at,
                                load) if not all(is_plan) else [])
    return [next(plans) if k else next(uploads) for k in is_plan]


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    receipts = _ingest_any([Path(p) for p in args.paths], settings, args.received_at, load=True)
    _print_receipts(receipts, args.json)
    lost = [r for r in receipts if r.get("receipt_error")]
    for r in lost:  # processed and committed, but the unit has no receipt yet: a re-send restores it
        print(f"inservice: {r['file']}: {r['receipt_error']}", file=sys.stderr)
    return EX_TEMPFAIL if lost else 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """The unit's self-check: the receipt files an upload would get, written to `--out` (default the
    current folder); the warehouse, if there is one, is only read (register, earlier courses)."""
    from inservice.receipts import receipt_stem, write_receipt

    receipts = _ingest_any([Path(args.file)], settings, args.received_at, load=False)
    out = Path(args.out)
    for r in receipts:
        base = f"{receipt_stem(r['file'])}.check.receipt"
        paths = (out / f"{base}.json", out / f"{base}.xlsx")
        write_receipt(r, *paths)
        r["receipt_files"] = [str(p) for p in paths]
    _print_receipts(receipts, args.json)
    return 0


def cmd_template(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.schemas.contract import write_contract

    for path in write_contract(Path(args.out)):
        print(path)
    return 0


def cmd_units(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.warehouse.analyst import WriteSession

    with WriteSession(settings) as wh:
        if args.units_cmd == "add":
            wh.add_unit(args.code, args.name, args.channel, args.state, date.fromisoformat(args.joined),
                        county=args.county, operator=args.operator)
            print(f"unit {args.code} registered ({args.state}, {args.channel}, county {args.county or '—'})")
        else:
            for u in wh.units():
                print(f"{u.unit_code}\t{u.name}\t{u.channel}\t{u.state}\t{u.joined}\t{u.county_code or ''}")
    return 0


def cmd_exceptions(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.warehouse.analyst import WriteSession

    with WriteSession(settings) as wh:
        if args.exc_cmd == "add":
            course = None if args.course in (None, "all", "ALL", "*") else args.course
            new_id = wh.add_exception(args.unit, course, args.letter, date.fromisoformat(args.letter_date),
                                      date.fromisoformat(args.valid_until))
            print(f"exception {new_id} registered for {args.unit} ({course or 'all courses'})")
        elif args.exc_cmd == "remove":
            if not wh.remove_exception(args.id):
                print(f"no exception {args.id}", file=sys.stderr)
                return 1
            print(f"exception {args.id} removed")
        else:
            for e in wh.exceptions():
                print("\t".join(str(e[k]) if e[k] is not None else "all" for k in
                                ("exception_id", "unit_code", "course_code", "letter_no", "letter_date",
                                 "valid_until")))
    return 0


SAMPLE_UNITS = [("T001", "範例單位一 Sample unit 1"), ("T002", "範例單位二 Sample unit 2"),
                ("T003", "範例單位三 Sample unit 3")]


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The newcomer's main job: register the sample units, ingest the sample inbox shipped in the repo."""
    from inservice.ingest import ingest_paths
    from inservice.warehouse.analyst import WriteSession

    sample = Path(__file__).resolve().parent / "sample_inbox"
    with WriteSession(settings) as wh:
        for code, name in SAMPLE_UNITS:
            if wh.unit(code) is None:
                wh.add_unit(code, name, "file", "production", date(2017, 1, 1))
    inbox = settings.inbox
    files = []
    for src in sorted(sample.glob("*/*")):
        dest = inbox / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy2(src, dest)
        files.append(dest)
    receipts = ingest_paths(files, settings, args.received_at, load=True)
    from inservice.inbox import settle

    for path, receipt in zip(files, receipts, strict=True):  # as the sensor would: the inbox keeps nothing handled
        settle(settings, path.parent.name, path, receipt)
    _print_receipts(receipts, False)
    from inservice.warehouse.analyst import snapshot_path
    from inservice.warehouse.backend import WarehouseUrl

    url = WarehouseUrl.parse(settings.warehouse_url)
    print(f"\nwarehouse: {url.redacted()}  (tables courses, attendance, uploads, findings, units)")
    print(f"receipts:  {settings.outbox}/<unit>/")
    print(f"originals: {settings.home / 'archive'}/<unit>/<YYYYMM>/ (loaded, duplicate) or "
          f"{settings.home / 'quarantine'}/<unit>/ (refused)")
    if url.backend.embedded:  # analysts read the published copy, never the loader's file
        print(f"query it:  python -c \"import duckdb; print(duckdb.connect('{snapshot_path(settings)}', "
              f"read_only=True).sql('select unit_code, count(*) from courses group by 1'))\"")
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of this module's commands (see COMMANDS)."""
    if command in ("ingest", "check"):
        if command == "ingest":
            p.add_argument("paths", nargs="+")
        else:
            p.add_argument("file")
        p.add_argument("--received-at", help="ISO-8601 receipt time (default now; no offset = Asia/Taipei)")
        p.add_argument("--json", action="store_true", help="one JSON receipt per file, one per line")
        if command == "check":
            p.add_argument("--out", default=".", help="folder for the receipt files (default: the current folder)")
        p.set_defaults(func=cmd_ingest if command == "ingest" else cmd_check)
    elif command == "template":
        p.add_argument("--out", required=True, help="folder to write them into")
        p.set_defaults(func=cmd_template)
    elif command == "units":
        from inservice.warehouse.store import CHANNELS, UNIT_STATES

        usub = p.add_subparsers(dest="units_cmd", required=True)
        add = usub.add_parser("add")
        add.add_argument("code")
        add.add_argument("--name", required=True)
        add.add_argument("--channel", choices=CHANNELS, required=True)
        add.add_argument("--state", choices=UNIT_STATES, required=True)
        add.add_argument("--joined", required=True, help="YYYY-MM-DD")
        add.add_argument("--county", help="the unit's county (spec §3.1 code, e.g. 10016), for its county's export")
        add.add_argument("--operator", help="the operating body (經營機關), when not the unit itself")
        usub.add_parser("list")
        p.set_defaults(func=cmd_units)
    elif command == "exceptions":
        esub = p.add_subparsers(dest="exc_cmd", required=True)
        eadd = esub.add_parser("add")
        eadd.add_argument("unit")
        eadd.add_argument("--course", help="a course code, or 'all' (default)")
        eadd.add_argument("--letter", required=True, help="letter number (文號)")
        eadd.add_argument("--letter-date", required=True, help="YYYY-MM-DD")
        eadd.add_argument("--valid-until", required=True, help="YYYY-MM-DD")
        erm = esub.add_parser("remove")
        erm.add_argument("id", type=int)
        esub.add_parser("list")
        p.set_defaults(func=cmd_exceptions)
    elif command == "demo":
        p.add_argument("--received-at", default="2017-06-03T10:00:00+08:00")
        p.set_defaults(func=cmd_demo)


def build_parser(commands: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser, with the arguments of `commands` only (the others are listed with their help)."""
    p = argparse.ArgumentParser(prog="inservice", description="全國教師在職進修資訊網 data pipeline")
    p.add_argument("--home", help="data folder (default $INSERVICE_HOME or ./data)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="on a failure, print the full detail (traceback) too; also INSERVICE_DEBUG=1")
    sub = p.add_subparsers(dest="cmd", required=True)
    wanted = set(commands)
    for name, (help_text, modules) in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text)
        if name in wanted:
            for module in modules:
                # this file run as `python -m inservice.cli` is __main__: use it, not a second copy
                here = module == "inservice.cli" and __name__ == "__main__"
                (sys.modules[__name__] if here else importlib.import_module(module)).arguments(name, parser)
    return p


def _command_in(argv: list[str]) -> list[str]:
    """The command `argv` names: its first word that is neither an option nor the value of --home."""
    words = iter(argv)
    for word in words:
        if word == "--home":
            next(words, None)
        elif not word.startswith("-"):
            return [word]
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_in(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 1 if exc.code else 0
    home = Path(args.home or os.environ.get("INSERVICE_HOME", "./data")).absolute()

    def command() -> int:
        settings = Settings.from_env(args.home)
        try:
            return args.func(args, settings)
        except OperatorError:
            raise
        except Exception as exc:
            from inservice.warehouse.store import WarehouseError  # here, not on top: start-up stays light

            if isinstance(exc, (WarehouseError, ValueError)):  # usage: a wrong code, date or state
                raise OperatorError(str(exc)) from exc
            raise

    # one line on stderr for any failure, the traceback in the run log (inservice.failures)
    return failures.run(command, home, args.verbose, argv)


if __name__ == "__main__":
    sys.exit(main())
