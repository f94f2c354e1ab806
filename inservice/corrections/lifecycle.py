"""Unit lifecycle (spec §1.2): testing → production, → sealed when dormant, sealed → testing when
the unit re-applies. Every change is logged in `unit_state_log` with its letter number.

Promotion copies nothing from the test area: the unit re-sends, and a re-send is not a duplicate
(F08 looks only at uploads loaded in the same area). A sealed unit that re-applies starts over
in testing (`set-state CODE testing --letter …`); it cannot go straight back to production.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from inservice.config import TAIPEI
from inservice.warehouse.store import UNIT_STATES, Warehouse, WarehouseError, actor

# (from, to) → the reason logged
TRANSITIONS = {
    ("testing", "production"): "promote",
    ("testing", "sealed"): "seal",
    ("production", "sealed"): "seal",
    ("sealed", "testing"): "reapply",
}
DORMANT_FROM = date(2013, 1, 1)
DORMANT_TO = date(2017, 6, 8)


@dataclass(frozen=True)
class Dormant:
    unit_code: str
    name: str
    state: str
    joined: date
    last_loaded: datetime | None  # the unit's last loaded upload or feed day, ever (None: never)

    def as_dict(self) -> dict:
        return {"unit_code": self.unit_code, "name": self.name, "state": self.state, "joined": self.joined.isoformat(),
                "last_loaded": self.last_loaded.astimezone(TAIPEI).isoformat() if self.last_loaded else None}


def _change(wh: Warehouse, code: str, old: str, new: str, letter: str, reason: str, now: datetime) -> None:
    wh.con.execute("UPDATE units SET state = ?, updated_at = ? WHERE unit_code = ?", [new, now, code])
    wh.con.execute("""INSERT INTO unit_state_log (unit_code, from_state, to_state, letter_no, reason, changed_at, field,
        old_value, new_value, effective_date, changed_by) VALUES (?, ?, ?, ?, ?, ?, 'state', ?, ?, ?, ?)""",
                   [code, old, new, letter, reason, now, old, new, now.astimezone(TAIPEI).date(), actor()])


def _letter(letter: str | None) -> str:
    if not letter or not letter.strip():
        raise WarehouseError("a state change needs the approval letter number (--letter)")
    return letter.strip()


def set_state(wh: Warehouse, code: str, state: str, letter: str | None, now: datetime | None = None) -> str:
    """Change a unit's state; returns the reason logged (promote, seal, reapply)."""
    letter = _letter(letter)
    if state not in UNIT_STATES:
        raise WarehouseError(f"state must be one of {UNIT_STATES}")
    unit = wh.unit(code)
    if unit is None:
        raise WarehouseError(f"unit {code} is not registered")
    if unit.state == state:
        raise WarehouseError(f"unit {code} is already {state}")
    reason = TRANSITIONS.get((unit.state, state))
    if reason is None:
        hint = " (a sealed unit re-applies: set it to testing)" if unit.state == "sealed" else \
            " (a production unit is not demoted; seal it if it is dormant)"
        raise WarehouseError(f"unit {code}: {unit.state} → {state} is not allowed{hint}")
    with wh.transaction():
        _change(wh, code, unit.state, state, letter, reason, now or datetime.now(TAIPEI))
    return reason


def state_log(wh: Warehouse, code: str | None = None) -> list[dict]:
    cur = wh.con.execute("""SELECT * FROM unit_state_log WHERE ? IS NULL OR unit_code = ?
        ORDER BY changed_at, unit_code""", [code, code])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def dormant_units(wh: Warehouse, start: date = DORMANT_FROM, end: date = DORMANT_TO) -> list[Dormant]:
    """Units (not sealed, joined by `end`) with no loaded upload or feed day received from `start`
    to `end` inclusive (Asia/Taipei days), whatever the channel or area."""
    if end < start:
        raise WarehouseError(f"the window ends ({end}) before it starts ({start})")
    lo = datetime.combine(start, time(0), TAIPEI)
    hi = datetime.combine(end + timedelta(days=1), time(0), TAIPEI)
    rows = wh.con.execute("""SELECT u.unit_code, u.name, u.state, u.joined,
            (SELECT max(p.received_at) FROM uploads p WHERE p.unit_code = u.unit_code AND p.status = 'loaded')
        FROM units u
        WHERE u.state <> 'sealed' AND u.joined <= ?
          AND NOT EXISTS (SELECT 1 FROM uploads p WHERE p.unit_code = u.unit_code AND p.status = 'loaded'
                          AND p.received_at >= ? AND p.received_at < ?)
        ORDER BY u.unit_code""", [end, lo, hi]).fetchall()
    return [Dormant(*r) for r in rows]


def seal_dormant(wh: Warehouse, start: date = DORMANT_FROM, end: date = DORMANT_TO, confirm: bool = False,
                 letter: str | None = None, now: datetime | None = None) -> dict:
    """List the dormant units; seal them (one transaction, each logged) only when `confirm`."""
    sealed: list[str] = []
    if not confirm:
        found = dormant_units(wh, start, end)
    else:
        letter = _letter(letter)
        when = now or datetime.now(TAIPEI)
        with wh.transaction():  # listed and sealed in one transaction: an upload cannot slip in between
            found = dormant_units(wh, start, end)
            for u in found:
                _change(wh, u.unit_code, u.state, "sealed", letter, f"seal_dormant {start}..{end}", when)
                sealed.append(u.unit_code)
    return {"from": start.isoformat(), "to": end.isoformat(), "confirmed": confirm,
            "dormant": [u.as_dict() for u in found], "sealed": sealed}
