"""The attribute-tag register (屬性標籤, spec 1.1 §3.8): tags are added and retired as laws and policies
change, each with its legal basis and valid-from / valid-to dates. Uploads are judged against it on
the course's start date (W06); the statistics label tags from it, so a new tag needs no code change.

Every change is one transaction writing the register row and its line in `tag_log` (who, when, what).
The eight tags of §3.8 are seeded when the warehouse creates the table (warehouse.store).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import date

from inservice.config import Settings
from inservice.errors import OperatorError
from inservice.schemas.codelists import fold_key
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Warehouse, actor

TAG_CODE = r"[A-Z][A-Z0-9]{1,9}"


@dataclass(frozen=True)
class Tag:
    code: str
    short_label: str
    full_name: str
    legal_basis: str | None
    valid_from: date
    valid_to: date | None

    def in_force(self, on: date) -> bool:
        return self.valid_from <= on and (self.valid_to is None or on <= self.valid_to)


_COLS = "code, short_label, full_name, legal_basis, valid_from, valid_to"


def tags(wh: Warehouse) -> list[Tag]:
    return [Tag(*r) for r in wh.con.execute(f"SELECT {_COLS} FROM main.tags ORDER BY position").fetchall()]


def log(wh: Warehouse, code: str | None = None) -> list[dict]:
    cur = wh.con.execute("""SELECT code, action, short_label, full_name, legal_basis, valid_from, valid_to,
        changed_by, changed_at FROM main.tag_log WHERE ? IS NULL OR code = ? ORDER BY changed_at, code""",
                         [code, code])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _who(by: str | None) -> str:
    return by or actor()


def add_tag(wh: Warehouse, code: str, short_label: str, full_name: str, basis: str, valid_from: date,
            valid_to: date | None = None, by: str | None = None) -> Tag:
    """Register a new tag. Its code, short label and full name must not name another tag (a value in a
    file must match one tag only)."""
    code = code.strip().upper()
    if not re.fullmatch(TAG_CODE, code):
        raise OperatorError(f"tag code {code!r} must be an upper-case letter and 1–9 letters or digits (e.g. T9)")
    if not short_label.strip() or not full_name.strip() or not basis.strip():
        raise OperatorError("a tag needs --short, --name and --basis (its legal basis)")
    if valid_to is not None and valid_to < valid_from:
        raise OperatorError(f"--to {valid_to} is before --from {valid_from}")
    existing = tags(wh)
    taken = {fold_key(k): t.code for t in existing for k in (t.code, t.short_label, t.full_name)}
    for key in (code, short_label, full_name):
        if fold_key(key) in taken:
            raise OperatorError(f"{key!r} already names tag {taken[fold_key(key)]}; a retired tag keeps its code "
                                f"and labels (history), so choose new ones")
    tag = Tag(code, short_label.strip(), full_name.strip(), basis.strip(), valid_from, valid_to)
    with wh.transaction():
        position = wh.con.execute("SELECT coalesce(max(position), 0) + 1 FROM main.tags").fetchone()[0]
        wh.con.execute("INSERT INTO main.tags VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                       [tag.code, tag.short_label, tag.full_name, tag.legal_basis, valid_from, valid_to, position])
        _log(wh, tag, "add", by)
    return tag


def retire_tag(wh: Warehouse, code: str, valid_to: date, by: str | None = None) -> Tag:
    """End a tag's validity on `valid_to` (its last valid day). Courses that started by then keep it."""
    code = code.strip().upper()
    current = next((t for t in tags(wh) if t.code == code), None)
    if current is None:
        raise OperatorError(f"no tag {code} in the register (`inservice tags list`)")
    if valid_to < current.valid_from:
        raise OperatorError(f"--to {valid_to} is before {code}'s valid-from {current.valid_from}")
    tag = Tag(current.code, current.short_label, current.full_name, current.legal_basis, current.valid_from,
              valid_to)
    with wh.transaction():
        wh.con.execute("UPDATE main.tags SET valid_to = ?, updated_at = now() WHERE code = ?", [valid_to, code])
        _log(wh, tag, "retire", by)
    return tag


def _log(wh: Warehouse, tag: Tag, action: str, by: str | None) -> None:
    wh.con.execute("INSERT INTO main.tag_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, now())",
                   [tag.code, action, tag.short_label, tag.full_name, tag.legal_basis, tag.valid_from,
                    tag.valid_to, _who(by)])


# --- `inservice tags …` ------------------------------------------------------------------------------
def cmd_tags(args: argparse.Namespace, settings: Settings) -> int:
    writes = args.tags_cmd in ("add", "retire")  # then the analysts' refresh follows the commit
    with WriteSession(settings) if writes else Warehouse(settings) as wh:
        if args.tags_cmd == "add":
            t = add_tag(wh, args.code, args.short, args.name, args.basis, date.fromisoformat(args.valid_from),
                        date.fromisoformat(args.valid_to) if args.valid_to else None, args.by)
            print(f"tag {t.code} {t.short_label} registered, valid from {t.valid_from}"
                  + (f" to {t.valid_to}" if t.valid_to else ""))
        elif args.tags_cmd == "retire":
            t = retire_tag(wh, args.code, date.fromisoformat(args.valid_to), args.by)
            print(f"tag {t.code} {t.short_label} valid until {t.valid_to}")
        elif args.tags_cmd == "log":
            for e in log(wh, args.code):
                print("\t".join("" if v is None else str(v) for v in e.values()))
        else:
            for t in tags(wh):
                print(f"{t.code}\t{t.short_label}\t{t.full_name}\t{t.valid_from}\t{t.valid_to or ''}\t"
                      f"{t.legal_basis or ''}")
    return 0


def arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of `inservice tags` (the CLI's hook, cli.COMMANDS)."""
    tsub = p.add_subparsers(dest="tags_cmd", required=True)
    tsub.add_parser("list", help="code, short label, full name, valid from, valid to, legal basis")
    add = tsub.add_parser("add", help="register a new tag")
    add.add_argument("code")
    add.add_argument("--short", required=True, help="short label (簡稱)")
    add.add_argument("--name", required=True, help="full name (全名)")
    add.add_argument("--basis", required=True, help="legal basis (法源依據)")
    add.add_argument("--from", dest="valid_from", required=True, help="valid from YYYY-MM-DD")
    add.add_argument("--to", dest="valid_to", help="valid to YYYY-MM-DD (inclusive; default: no end)")
    add.add_argument("--by", help="who makes the change (default: the login name)")
    ret = tsub.add_parser("retire", help="end a tag's validity")
    ret.add_argument("code")
    ret.add_argument("--to", dest="valid_to", required=True, help="last valid day YYYY-MM-DD")
    ret.add_argument("--by", help="who makes the change (default: the login name)")
    lg = tsub.add_parser("log", help="every change of the register, with who and when")
    lg.add_argument("code", nargs="?")
    p.set_defaults(func=cmd_tags)
