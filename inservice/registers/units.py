"""The unit register as it lives (spec §1.2): renames, operator handovers, channel and county changes.

A unit is registered once (`Warehouse.add_unit`: its row, its first version, a `register` line in the
state log). Every later change names its approval letter and the date it takes effect, and is written
in one transaction:
- `units` holds the latest values (what the intake and `units list` use);
- `unit_versions` holds each value's period of validity ([valid_from, valid_to), the first version
  from the beginning): the publications of a past month take the unit's name, channel and county in
  force on that month's last day, so a month re-published after a rename keeps the name of its time;
- `unit_state_log` gets one line (field, old and new value, effective date, letter, who, when).

State changes (promote, seal, re-apply) stay in corrections/lifecycle.py; they are logged in the same
log. Changes are appended in date order: one taking effect on or before the unit's last change is
refused (a register is not rewritten; a wrong change is undone by another change with its own letter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from inservice.config import TAIPEI
from inservice.schemas.codelists import county_names
from inservice.warehouse.backend import Connection
from inservice.warehouse.store import CHANNELS, Warehouse, WarehouseError, actor

# field of units / unit_versions → the reason logged
FIELDS = {"name": "rename", "operator": "handover", "channel": "channel", "county_code": "county"}

# The version of each unit in force on a day (bind the day twice). Portable SQL (both backends, and the
# publications' DuckDB).
VERSIONS_ON = """SELECT unit_code, name, operator, channel, county_code FROM unit_versions
    WHERE (valid_from IS NULL OR valid_from <= CAST(? AS DATE)) AND (valid_to IS NULL OR valid_to > CAST(? AS DATE))"""


@dataclass(frozen=True)
class Change:
    unit_code: str
    field: str
    old: str | None
    new: str
    effective: date
    letter: str
    reason: str

    def as_dict(self) -> dict:
        return {"unit_code": self.unit_code, "field": self.field, "old": self.old, "new": self.new,
                "effective_date": self.effective.isoformat(), "letter_no": self.letter, "reason": self.reason}


def _letter(letter: str | None) -> str:
    if not letter or not letter.strip():
        raise WarehouseError("a register change needs the approval letter number (--letter)")
    return letter.strip()


def _checked(field: str, value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise WarehouseError(f"the new {field} is empty")
    if field == "channel" and value not in CHANNELS:
        raise WarehouseError(f"channel must be one of {CHANNELS}")
    if field == "county_code" and value not in county_names():
        raise WarehouseError(f"unknown county code {value!r} (spec §3.1, e.g. 63000 臺北市, 10016 澎湖縣)")
    return value


def change(wh: Warehouse, code: str, field: str, value: str, letter: str | None, effective: date | None = None,
           by: str | None = None, now: datetime | None = None) -> Change:
    """Change one field of a unit from `effective` on (default: today, Asia/Taipei)."""
    if field not in FIELDS:
        raise WarehouseError(f"field must be one of {tuple(FIELDS)}")
    letter = _letter(letter)
    value = _checked(field, value)
    now = now or datetime.now(TAIPEI)
    effective = effective or now.astimezone(TAIPEI).date()
    with wh.transaction():  # read and written together: two staff changes cannot interleave
        unit = wh.unit(code)
        if unit is None:
            raise WarehouseError(f"unit {code} is not registered")
        old = getattr(unit, field)
        if old == value:
            raise WarehouseError(f"unit {code}: {field} is already {value!r}")
        current = wh.con.execute("""SELECT valid_from FROM unit_versions WHERE unit_code = ? AND valid_to IS NULL""",
                                 [code]).fetchall()
        since = current[0][0] if current else None
        if since is not None and effective <= since:
            raise WarehouseError(f"unit {code}: its last change took effect on {since}; a change must take effect "
                                 f"after it (not {effective})")
        cols = "name, operator, channel, county_code"
        wh.con.execute("UPDATE unit_versions SET valid_to = ? WHERE unit_code = ? AND valid_to IS NULL",
                       [effective, code])
        wh.con.execute(f"""INSERT INTO unit_versions (unit_code, {cols}, valid_from, valid_to)
            SELECT unit_code, {', '.join('?' if c == field else c for c in cols.split(', '))}, ?, NULL
            FROM unit_versions WHERE unit_code = ? AND valid_to = ?""", [value, effective, code, effective])
        wh.con.execute(f'UPDATE units SET "{field}" = ?, updated_at = ? WHERE unit_code = ?', [value, now, code])
        wh.con.execute("""INSERT INTO unit_state_log (unit_code, from_state, to_state, letter_no, reason, changed_at,
            field, old_value, new_value, effective_date, changed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                       [code, unit.state, unit.state, letter, FIELDS[field], now, field, old, value, effective,
                        by or actor()])
    return Change(code, field, old, value, effective, letter, FIELDS[field])


def rename(wh: Warehouse, code: str, name: str, letter: str | None, effective: date | None = None,
           by: str | None = None) -> Change:
    return change(wh, code, "name", name, letter, effective, by)


def handover(wh: Warehouse, code: str, operator: str, letter: str | None, effective: date | None = None,
             by: str | None = None) -> Change:
    """The unit passes to another operating body (移轉經營); its code, data and history stay."""
    return change(wh, code, "operator", operator, letter, effective, by)


def set_channel(wh: Warehouse, code: str, channel: str, letter: str | None, effective: date | None = None,
                by: str | None = None) -> Change:
    """File upload ↔ database feed. A unit that moves to `db` then gets its feed (`feeds add`); its
    earlier files stay as they are, and files it still sends are processed as before."""
    return change(wh, code, "channel", channel, letter, effective, by)


def set_county(wh: Warehouse, code: str, county: str, letter: str | None, effective: date | None = None,
               by: str | None = None) -> Change:
    return change(wh, code, "county_code", county, letter, effective, by)


def versions(con: Connection, code: str | None = None) -> list[dict]:
    cur = con.execute("""SELECT unit_code, name, operator, channel, county_code, valid_from, valid_to
        FROM unit_versions WHERE ? IS NULL OR unit_code = ? ORDER BY unit_code, valid_from NULLS FIRST""",
                      [code, code])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def on(con: Connection, day: date) -> dict[str, dict]:
    """Each unit's name, operator, channel and county in force on `day`."""
    cur = con.execute(VERSIONS_ON, [day, day])
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
