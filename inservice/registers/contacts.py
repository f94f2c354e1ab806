"""A unit's contact e-mails (spec §1.2's register, issue 16 item 4): who at the unit receives its
receipts and reminders. Kept with history: a removed address keeps its row, with when and by whom.

`inservice units contacts UNIT [--add a@b ...] [--remove c@d ...] [--history]`
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from inservice.config import Settings
from inservice.warehouse.store import Warehouse, WarehouseError, actor

# Deliberately plain: a local part, an @, a domain with a dot; no spaces, commas or angle brackets
# (the recipients are joined with commas and go into an SMTP envelope as they are).
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True)
class Contact:
    unit_code: str
    email: str
    added_at: datetime
    added_by: str | None
    removed_at: datetime | None
    removed_by: str | None


def normalise(email: str) -> str:
    address = email.strip().lower()
    if not EMAIL.fullmatch(address):
        raise WarehouseError(f"{email!r} is not an e-mail address")
    return address


def current(wh: Warehouse, unit: str) -> list[str]:
    """The unit's contacts now, in the order they were added."""
    rows = wh.con.execute("""SELECT email FROM unit_contacts WHERE unit_code = ? AND removed_at IS NULL
        ORDER BY added_at, email""", [unit]).fetchall()
    return [r[0] for r in rows]


def history(wh: Warehouse, unit: str) -> list[Contact]:
    rows = wh.con.execute("""SELECT unit_code, email, added_at, added_by, removed_at, removed_by FROM unit_contacts
        WHERE unit_code = ? ORDER BY added_at, email""", [unit]).fetchall()
    return [Contact(*r) for r in rows]


def change(wh: Warehouse, unit: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
    """Add and remove addresses in one transaction; returns the contacts after. Adding one already
    there, or removing one that is not, changes nothing (a command repeated is harmless)."""
    if wh.unit(unit) is None:
        raise WarehouseError(f"unit {unit} is not registered")
    add_n, remove_n = [normalise(a) for a in add], [normalise(r) for r in remove]
    who = actor()
    with wh.transaction():
        now = current(wh, unit)
        for address in dict.fromkeys(remove_n):
            if address in now:
                wh.con.execute("""UPDATE unit_contacts SET removed_at = now(), removed_by = ?
                    WHERE unit_code = ? AND email = ? AND removed_at IS NULL""", [who, unit, address])
                _log(wh, unit, address, None, who)
        for address in dict.fromkeys(add_n):
            if address not in now or address in remove_n:
                wh.con.execute("INSERT INTO unit_contacts VALUES (?, ?, now(), ?, NULL, NULL)", [unit, address, who])
                _log(wh, unit, None, address, who)
        return current(wh, unit)


def _log(wh: Warehouse, unit: str, removed: str | None, added: str | None, who: str) -> None:
    """Every register change goes to the unit's state log too (field `contact`)."""
    state = wh.con.execute("SELECT state FROM units WHERE unit_code = ?", [unit]).fetchall()[0][0]
    wh.con.execute("""INSERT INTO unit_state_log (unit_code, from_state, to_state, letter_no, reason, changed_at,
        field, old_value, new_value, effective_date, changed_by)
        VALUES (?, ?, ?, NULL, '聯絡人', now(), 'contact', ?, ?, CAST(now() AS DATE), ?)""",
                   [unit, state, state, removed, added, who])


def cmd_contacts(args: argparse.Namespace, settings: Settings) -> int:
    with Warehouse(settings) as wh:
        if args.add or args.remove:
            after = change(wh, args.unit, args.add or [], args.remove or [])
        else:
            if wh.unit(args.unit) is None:
                raise WarehouseError(f"unit {args.unit} is not registered")
            after = current(wh, args.unit)
        if args.history:
            for c in history(wh, args.unit):
                gone = f"\tremoved {c.removed_at:%Y-%m-%d %H:%M} by {c.removed_by}" if c.removed_at else ""
                print(f"{c.email}\tadded {c.added_at:%Y-%m-%d %H:%M} by {c.added_by}{gone}")
        else:
            print(f"{args.unit}: {', '.join(after) or '(no contact)'}")
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """`units contacts` under the CLI's `units` command (cli.COMMANDS)."""
    if command != "units":
        return
    usub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    c = usub.add_parser("contacts", help="a unit's contact e-mails (receipts, reminders)")
    c.add_argument("unit")
    c.add_argument("--add", action="append", metavar="EMAIL", help="add an address (repeatable)")
    c.add_argument("--remove", action="append", metavar="EMAIL", help="remove an address (repeatable)")
    c.add_argument("--history", action="store_true", help="every address ever, with who added or removed it")
    c.set_defaults(func=cmd_contacts)
