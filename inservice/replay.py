"""Replay under the rules in force (issue 16): archived originals re-run through today's rules.

A rule change (spec 1.1 made an unknown tag the warning W06 where 1.0 refused the course and all its
attendance, C03/A05) must reach the archive. For each file upload of the chosen units and data months,
the original kept in the archive (or quarantine, or still in the inbox: `inbox.find_upload`, the copy
with the recorded SHA-256) is validated again, as received then (on time, C09 against the day it
arrived), against the warehouse as it is now, and compared row by row with the evaluation in force —
the upload's latest record of those bytes, a replay's if one was applied — so a second replay
changes nothing.

Without `apply` nothing is written. With it, every upload whose outcome changed is loaded again through
the one ingest (`Ingestor.ingest(..., replay_of=…)`): one transaction, what is accepted now is merged
(unchanged rows are no-ops, a closed course is locked — C08/A08 — so a replay never changes it), the
upload is recorded with `replay_of`, the courses it brings in get a `replay` line in `history`, and the
unit gets a receipt marked as a re-evaluation. Rows refused now that were loaded then stay loaded:
a replay adds, it never deletes (a withdrawal is the unit's, a correction the authority's).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from inservice.config import TAIPEI, Settings
from inservice.errors import OperatorError
from inservice.inbox import find_upload
from inservice.ingest import Ingestor
from inservice.schemas.fields import UNIT_CODE
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Warehouse

_MONTHS = re.compile(r"^(\d{4}-\d{2})(?:\.\.(\d{4}-\d{2}))?$")
LOCK_RULES = frozenset({"C08", "A08"})  # the warehouse's locks, not a rule change


@dataclass
class RowChange:
    record: str  # course | attendance
    row: int
    course_code: str | None
    before: str  # accepted | refused
    after: str
    added: list[str] = field(default_factory=list)  # rule[:field] found now, not then
    gone: list[str] = field(default_factory=list)  # found then, not now

    @property
    def locked(self) -> bool:
        """Refused now only because its course is closed in the warehouse (a correction's business)."""
        return any(a.split(":")[0] in LOCK_RULES for a in self.added)


@dataclass
class UploadReplay:
    unit: str
    file: str
    month: str | None
    original: str  # the first upload of these bytes
    in_force: str  # the evaluation compared against (the latest record of these bytes)
    before: str  # loaded | refused <rule>
    after: str | None = None  # loaded | refused <rule>; None when the original is missing
    original_path: str | None = None
    changes: list[RowChange] = field(default_factory=list)
    applied: str | None = None  # the replay's upload id (with --apply)
    receipt_files: list[str] = field(default_factory=list)
    skipped: str | None = None  # why it was not re-run (original missing, unit sealed or moved area)

    @property
    def changed(self) -> bool:
        return self.after is not None and (bool(self.changes) or self.after != self.before)

    def as_json(self) -> dict:
        return {**asdict(self), "changed": self.changed}


def parse_months(text: str) -> tuple[str, str]:
    """`2013-01..2017-12` (or one month) → inclusive bounds."""
    m = _MONTHS.match(text.strip())
    if not m:
        raise OperatorError(f"--months must be YYYY-MM or YYYY-MM..YYYY-MM, not {text!r}")
    first, last = m[1], m[2] or m[1]
    if last < first:
        raise OperatorError(f"--months {text}: {last} is before {first}")
    return first, last


def parse_units(values: list[str]) -> list[str]:
    units = sorted({u.strip().upper() for v in values for u in v.split(",") if u.strip()})
    bad = [u for u in units if not re.fullmatch(UNIT_CODE, u)]
    if not units or bad:
        raise OperatorError(f"--units needs unit codes (e.g. T001,T002), not {', '.join(bad) or 'nothing'}")
    return units


def _status(status: str, refusal: str | None) -> str:
    return "loaded" if status in ("loaded", "checked") else f"refused {refusal}"


def _outcomes(findings: list[dict]) -> dict[tuple[str, int], tuple[frozenset[str], bool, str | None]]:
    """(record, row) → (rule[:field] found, refused?, course code), for course and attendance rows."""
    found: dict[tuple[str, int], list] = {}
    for f in findings:
        if f["record"] not in ("course", "attendance") or f["row"] is None:
            continue
        entry = found.setdefault((f["record"], int(f["row"])), [set(), False, None])
        entry[0].add(f"{f['rule']}:{f['field']}" if f.get("field") else f["rule"])
        entry[1] = entry[1] or f["severity"] == "error"
        entry[2] = entry[2] or f.get("course_code")
    return {k: (frozenset(v[0]), v[1], v[2]) for k, v in found.items()}


def diff(before: list[dict], after: list[dict]) -> list[RowChange]:
    """The rows whose findings differ between two evaluations of one upload, in record/row order."""
    then, now = _outcomes(before), _outcomes(after)
    out = []
    for key in sorted(then.keys() | now.keys(), key=lambda k: (k[0] != "course", k[1])):
        old, new = then.get(key, (frozenset(), False, None)), now.get(key, (frozenset(), False, None))
        if old[0] == new[0]:
            continue
        course = new[2] if new[2] and new[2] != "…" else old[2]
        out.append(RowChange(key[0], key[1], course, "refused" if old[1] else "accepted",
                             "refused" if new[1] else "accepted", sorted(new[0] - old[0]), sorted(old[0] - new[0])))
    return out


def _evaluations(wh: Warehouse, units: list[str], first: str, last: str) -> list[dict]:
    """Per (unit, area, bytes): the first upload (the original) and the latest record (in force)."""
    marks = ", ".join("?" * len(units))
    cur = wh.con.execute(f"""SELECT upload_id, unit_code, area, file_name, data_month, content_hash, received_at,
            status, refusal, processed_at
        FROM main.uploads WHERE channel = 'file' AND unit_code IN ({marks}) AND data_month BETWEEN ? AND ?
          AND status IN ('loaded', 'refused') AND content_hash IS NOT NULL AND area IS NOT NULL
        ORDER BY processed_at, upload_id""", [*units, first, last])
    names = [d[0] for d in cur.description]
    groups: dict[tuple, list[dict]] = {}
    for r in cur.fetchall():
        row = dict(zip(names, r, strict=True))
        groups.setdefault((row["unit_code"], row["area"], row["content_hash"]), []).append(row)
    return [{"original": g[0], "in_force": g[-1]} for g in groups.values()]


def _findings_of(wh: Warehouse, upload_id: str) -> list[dict]:
    cur = wh.con.execute("""SELECT record, "row", field, rule, severity, course_code FROM main.findings
        WHERE upload_id = ?""", [upload_id])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _received(value: datetime) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=TAIPEI)).astimezone(TAIPEI)


def replay(settings: Settings, units: list[str], months: tuple[str, str], apply: bool = False,
           session: WriteSession | None = None) -> list[UploadReplay]:
    """Preview (and with `apply`, load) the re-evaluation of the chosen units' archived uploads. A load
    runs in a WriteSession (`session`, else a new one): the analysts' refresh follows its commits."""
    first, last = months
    opened = (session or WriteSession(settings)) if apply else Warehouse(settings, read_only=Warehouse.exists(settings))
    with opened as wh:
        checker = Ingestor(settings, wh, load=False)
        loader = Ingestor(settings, wh, load=True) if apply else None
        out = []
        for ev in sorted(_evaluations(wh, units, first, last),
                         key=lambda e: (e["original"]["unit_code"], e["original"]["data_month"] or "",
                                        _received(e["original"]["received_at"]))):
            orig, now = ev["original"], ev["in_force"]
            rep = UploadReplay(orig["unit_code"], orig["file_name"], orig["data_month"], orig["upload_id"],
                               now["upload_id"], _status(now["status"], now["refusal"]))
            out.append(rep)
            unit = wh.unit(orig["unit_code"])
            if unit is None or unit.state == "sealed" or unit.area != orig["area"]:
                # a sealed unit's uploads wait for its re-application; a unit promoted since sends again
                rep.skipped = (f"unit {orig['unit_code']} is sealed" if unit is not None and unit.state == "sealed"
                               else f"loaded in the {orig['area']} area; the unit is no longer there")
                continue
            path = find_upload(settings, orig["unit_code"], orig["file_name"], orig["content_hash"])
            if path is None:  # nothing to re-run: said in the report, never guessed
                rep.skipped = "original not found in the inbox, archive or quarantine"
                continue
            rep.original_path = str(path)
            received = _received(orig["received_at"])
            checked = checker.ingest(Path(path), received, orig["unit_code"], replay_of=orig["upload_id"])
            rep.after = _status(checked["status"], checked["refusal"])
            rep.changes = diff(_findings_of(wh, now["upload_id"]), checked["findings"])
            if loader is not None and rep.changed:
                loaded = loader.ingest(Path(path), received, orig["unit_code"], replay_of=orig["upload_id"])
                rep.applied = loaded["upload_id"]
                rep.receipt_files = loaded.get("receipt_files", [])
    return out


def report_lines(replays: list[UploadReplay], applied: bool) -> list[str]:
    """The CLI's plain report: per upload its outcome then and now, and each row whose outcome changed."""
    lines = []
    for r in replays:
        head = f"{r.unit} {r.file} ({r.original}): {r.before}"
        if r.after is None:
            lines.append(f"{head} — {r.skipped}; not replayed")
            continue
        if not r.changed:
            lines.append(f"{head} — unchanged")
            continue
        lines.append(f"{head} → {r.after}, {len(r.changes)} row(s) change"
                     + (f"; applied as {r.applied}" if r.applied else ""))
        for c in r.changes:
            note = " (locked: a correction is needed)" if c.locked else ""
            lines.append(f"  {c.record} row {c.row} {c.course_code or ''}: {c.before} → {c.after}"
                         f"  +{','.join(c.added) or '-'}  -{','.join(c.gone) or '-'}{note}")
    changed = sum(r.changed for r in replays)
    lines.append(f"{len(replays)} upload(s) examined, {changed} with a changed outcome"
                 + ("" if applied else "; nothing changed (preview; --apply loads them)"))
    return lines
