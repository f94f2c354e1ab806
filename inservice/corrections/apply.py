"""Applying a correction workbook: each row decided on its own, the accepted ones written in ONE
transaction through the history, a bilingual receipt for every row.

A row is applied only when the course is in the production area and closed, the field may be
corrected, 原內容 equals the current value after the uploads' normalisation, and the corrected
course (or attendance row) passes the rule engine as a file upload would (so C04, C05 with the
12 h/day cap, C09, C10, C07, A03, A06 … are the engine's, not a second copy). Rows are decided in
sheet order, each against the state the rows before it left: every intermediate state is valid.

Attendance rows (修改欄位 `attendance:<op>`; national IDs only ever leave masked):
    attendance:add            原內容 empty        修改後內容 `ID;school_code;hours[;completed]`
    attendance:remove         原內容 `ID`         修改後內容 empty
    attendance:hours_granted  原內容 `ID:6`       修改後內容 `ID:4`        (completed follows: hours > 0)
    attendance:school_code    原內容 `ID:423605`  修改後內容 `ID:423606`
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import overload

import pyarrow as pa

from inservice.channel import as_received_at, registered_unit, rule_context, sha256_file
from inservice.config import TAIPEI, Settings
from inservice.corrections.reasons import REASONS
from inservice.corrections.receipt import WorkbookReceipt, stage
from inservice.corrections.workbook import LABELS, CorrectionRow, WorkbookRefused, read_workbook
from inservice.loaders.base import RawUpload, UploadRefused, canonical_table, fold_header
from inservice.receipts import discard, free_receipt_paths, publish
from inservice.schemas.fields import ATTENDANCE, COURSE, Field
from inservice.validations import national_id, normalize
from inservice.validations.engine import ATTENDANCE_CONTENT, parse_field, validate
from inservice.validations.normalize import holds_control, printable_text
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse import ddl
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import ROW_JSON, Source, Warehouse, failpoint

AREA = "production"  # corrections change the production area only (spec §6)
SCHEMA = ddl.AREAS[AREA]
FOLDER = "_corrections"  # inbox/_corrections, outbox/_corrections, archive/_corrections
# Keys identify the row; modified_at is the partner system's; withdrawal is the partner's to send.
FORBIDDEN = ("unit_code", "course_code", "modified_at", "is_deleted")
ATTENDANCE_FIELDS = ("hours_granted", "school_code")
PLACEHOLDER_NAME = "（更正）"  # names are never stored; the engine requires one (A01)
UNIT_REFUSALS = {"F05": "unknown_unit", "F06": "sealed_unit"}  # a correction row's reason for the register's rule


@dataclass
class Decision:
    row: int
    unit_code: str | None
    course_code: str | None
    field: str | None  # field code, or attendance:<op>
    field_label: str | None
    record: str | None  # course | attendance
    original: str | None  # as shown: IDs masked
    new: str | None
    authority: str | None
    letter_no: str | None
    letter_date: date | None
    status: str = "refused"
    reason: str | None = None
    message_zh: str = ""
    message_en: str = ""
    correction_id: str = ""
    teacher_key: str | None = None
    row_key: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)  # `field` is a column here

    def refuse(self, reason: str, zh: str | None = "", en: str | None = "") -> Decision:
        head_zh, head_en = REASONS[reason]
        self.status, self.reason = "refused", reason
        self.message_zh = f"{head_zh}：{zh}" if zh else head_zh
        self.message_en = f"{head_en}: {en}" if en else head_en
        return self

    def public(self) -> dict:
        out = asdict(self)
        for internal in ("row_key", "teacher_key"):  # the audit table keeps them; a receipt needs neither
            out.pop(internal)
        return out


CELLS = ("unit_code", "course_code", "field", "original", "new", "authority", "letter_no", "letter_date")
SHOWN = ("unit_code", "course_code", "field", "original", "new", "authority", "letter_no", "message_zh",
         "message_en")


class Refused(Exception):
    """A correction row refused for `reason` (a key of REASONS); zh/en: what it was about, if anything."""

    def __init__(self, reason: str, zh: str | None = "", en: str | None = "") -> None:
        super().__init__(reason)
        self.reason, self.zh, self.en = reason, zh, en


# --- values ------------------------------------------------------------------------------------
def fold(text: str | None) -> str | None:
    """Codes and keys: full-width folded, trimmed; empty is None."""
    if text is None:
        return None
    out = unicodedata.normalize("NFKC", text).strip()
    return out or None


def parse_one(f: Field, text: str | None, tags: pa.Table | None = None) -> tuple[object, bool]:
    """The engine's parser for one value: (typed value, present but unparseable). Tags are read against
    the register `tags` (any tag it holds; validity on the start date is the engine's W06)."""
    if f.codelist == "tag" and tags is not None:
        values, dropped, _ = normalize.parse_tags(pa.array([text], pa.string()), pa.nulls(1, pa.date32()), tags)
        return values[0].as_py(), bool(dropped[0].as_py())
    values, bad, _ = parse_field(f, pa.array([text], pa.string()))
    return values[0].as_py(), bool(bad[0].as_py())


def same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float | Decimal | int) and isinstance(b, float | Decimal | int) \
            and (isinstance(a, float | Decimal) or isinstance(b, float | Decimal)):
        return round(float(a), 1) == round(float(b), 1)
    return a == b


def render(value: object) -> str | None:
    """A stored value as the text a loader would hand the engine (dates ISO, booleans true/false)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | float):
        return f"{float(value):g}"
    return str(value)


def mask(nid: str) -> str:
    return national_id.mask(pa.array([nid], pa.string()))[0].as_py()


def _field_by_name(rt_fields: tuple[Field, ...], text: str) -> Field | None:
    key = fold_header(text)
    for f in rt_fields:
        if key in (fold_header(f.code), fold_header(f.label)):
            return f
    return None


_ATT_PREFIX = re.compile(r"^(?:attendance|研習名單|名單)\s*:\s*(.+)$", re.IGNORECASE)
_ADD, _REMOVE = ("add", "新增"), ("remove", "delete", "刪除")


def resolve_field(text: str) -> tuple[str, Field | str] | None:
    """("course", Field) or ("attendance", "add" | "remove" | Field); None if unknown."""
    folded = unicodedata.normalize("NFKC", text).strip()
    m = _ATT_PREFIX.match(folded)
    if m:
        op = m.group(1).strip()
        if op.lower() in _ADD:
            return "attendance", "add"
        if op.lower() in _REMOVE:
            return "attendance", "remove"
        f = _field_by_name(ATTENDANCE.fields, op)
        return ("attendance", f) if f is not None else None
    f = _field_by_name(COURSE.fields, folded)
    return ("course", f) if f is not None else None


def _split(text: str | None, seps: str) -> list[str]:
    if text is None:
        return []
    return [p.strip() for p in re.split(f"[{seps}]", unicodedata.normalize("NFKC", text))]


# --- the run -----------------------------------------------------------------------------------
class CorrectionRun:
    """Decides and writes the rows of one workbook inside the caller's transaction."""

    def __init__(self, wh: Warehouse, settings: Settings, content_hash: str, received: datetime) -> None:
        self.wh = wh
        self.settings = settings
        self.content_hash = content_hash
        self.received_on = received.astimezone(TAIPEI).date()
        self.key = warehouse_key(settings.home, wh, writable=False)  # checked (and recorded) before the run
        self.pseudonymiser = Pseudonymiser(self.key)
        self._last = datetime.now(TAIPEI)

    def _now(self) -> datetime:
        """Strictly increasing per row: the history orders a course's changes by time."""
        now = datetime.now(TAIPEI)
        self._last = now if now > self._last else self._last + timedelta(microseconds=1)
        return self._last

    def _row_key(self, *parts: object) -> str:
        text = "\x1f".join("" if p is None else repr(p) for p in parts)
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def _one(self, sql: str, params: list) -> dict | None:
        cur = self.wh.con.execute(sql, params)
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    # --- one row ---------------------------------------------------------------------------------
    def decide(self, r: CorrectionRow) -> Decision:
        # ID-shaped tokens are masked in whatever a receipt shows, whatever the row turns out to be
        d = Decision(r.row, fold(r.unit_code), fold(r.course_code), r.field, None, None, self._masked(r.original),
                     self._masked(r.new), r.authority, r.letter_no, None,
                     correction_id=f"{self.content_hash}:{r.row}")
        try:
            self._decide(r, d)
        except Refused as exc:
            d.refuse(exc.reason, exc.zh, exc.en)
        d.message_zh, d.message_en = self._masked(d.message_zh), self._masked(d.message_en)
        d.field = self._masked(d.field)
        for name in SHOWN:  # the audit table (PostgreSQL text cannot hold NUL) and the receipt's workbook
            value = getattr(d, name)
            if isinstance(value, str):
                setattr(d, name, printable_text(value))
        return d

    def _decide(self, r: CorrectionRow, d: Decision) -> None:
        control = [LABELS[c] for c in CELLS if holds_control(getattr(r, c))]
        if control:
            raise Refused("control_character", "、".join(control), ", ".join(control))
        missing = [LABELS[c] for c in ("unit_code", "course_code", "field", "authority", "letter_no", "letter_date")
                   if getattr(r, c) is None]
        resolved = resolve_field(r.field) if r.field else None
        if missing:
            raise Refused("missing", "、".join(missing), ", ".join(missing))
        letter_date, _ = parse_one(COURSE.field("closed_date"), r.letter_date)  # a date, as uploads read them
        d.letter_date = letter_date if isinstance(letter_date, date) else None
        if d.letter_date is None or d.letter_date > self.received_on:
            raise Refused("letter_date", f"「{r.letter_date}」", f"'{r.letter_date}'")
        if resolved is None:
            raise Refused("unknown_field", f"「{r.field}」", f"'{r.field}'")
        record, what = resolved
        d.record = record
        d.field = what.code if isinstance(what, Field) else what
        if record == "attendance":
            d.field = f"attendance:{d.field}"
        d.field_label = (what.label if isinstance(what, Field) else {"add": "名單新增", "remove": "名單刪除"}[what])
        if record == "course" and isinstance(what, Field) and what.code in FORBIDDEN:
            raise Refused("forbidden_field", f"{what.label}（{what.code}）", what.code)
        if record == "attendance" and isinstance(what, Field) and what.code not in ATTENDANCE_FIELDS:
            raise Refused("forbidden_field", f"名單的{what.label}（{what.code}）", f"attendance {what.code}")
        try:  # the register's answer, as for uploads and feeds
            unit = registered_unit(self.wh, d.unit_code or "")
        except UploadRefused as refusal:
            raise Refused(UNIT_REFUSALS[refusal.rule], d.unit_code, d.unit_code) from None
        if unit.state == "testing":
            raise Refused("testing_unit", d.unit_code, d.unit_code)
        course = self._one(f"SELECT * FROM {SCHEMA}.courses WHERE unit_code = ? AND course_code = ?",
                           [d.unit_code, d.course_code])
        if course is None:
            raise Refused("unknown_course", f"{d.unit_code} {d.course_code}", f"{d.unit_code} {d.course_code}")
        if course["closed_date"] is None:
            raise Refused("open_course", d.course_code, d.course_code)
        if isinstance(what, Field) and record == "course":
            self._course(r, d, what, course)
        else:
            self._attendance(r, d, what, course)

    @overload
    def _masked(self, text: str) -> str: ...

    @overload
    def _masked(self, text: None) -> None: ...

    @overload
    def _masked(self, text: str | None) -> str | None: ...

    def _masked(self, text: str | None) -> str | None:
        """Every ID-shaped token masked (a raw ID never reaches a receipt, the audit table or a log)."""
        if text is None:
            return None
        return re.sub(r"[A-Za-zＡ-Ｚａ-ｚ][0-9A-Da-d０-９Ａ-Ｄ][0-9０-９]{8}",
                      lambda m: mask(unicodedata.normalize("NFKC", m.group(0)).upper()), text)

    def _already(self, d: Decision) -> bool:
        earlier = self._one("""SELECT correction_id, decided_at FROM corrections
            WHERE row_key = ? AND status = 'applied' ORDER BY decided_at LIMIT 1""", [d.row_key])
        if earlier is None:
            return False
        d.status = "already_applied"
        d.message_zh = f"此更正已於更正 {earlier['correction_id'][:12]}… 套用，未重複套用"
        d.message_en = f"already applied by correction {earlier['correction_id'][:12]}…; not applied again"
        return True

    def _engine(self, d: Decision, course_text: dict[str, str | None],
                attendance_text: dict[str, str | None] | None) -> pa.Table:
        """The corrected course (and attendance row) through the rule engine, as a file upload;
        returns the typed row, or refuses with the engine's own messages."""
        n, unit = d.row, d.unit_code or ""  # a registered unit's code by now
        courses = canonical_table(COURSE, pa.array([n], pa.int64()),
                                  {k: pa.array([v], pa.string()) for k, v in course_text.items()})
        att_rows = [attendance_text] if attendance_text else []
        attendance = canonical_table(ATTENDANCE, pa.array([n] * len(att_rows), pa.int64()),
                                     {f.code: pa.array([a.get(f.code) for a in att_rows], pa.string())
                                      for f in ATTENDANCE.fields})
        ctx = rule_context(self.settings, self.wh, unit, "file", self.received_on, self.pseudonymiser)
        v = validate(RawUpload(courses, attendance), ctx)
        errors = [f for f in v.findings.to_pylist() if f["severity"] == "error"]
        # warnings about what this row changes (W01/W02 on a title, W04 on a school), not older ones
        d.warnings = [f"{f['rule']} {f['message_zh']} / {f['message_en']}" for f in v.findings.to_pylist()
                      if f["severity"] == "warning" and (f["record"] == "attendance" if attendance_text
                                                         else f["field"] == d.field)]
        if errors:
            raise Refused("invalid_value", "；".join(f"{f['rule']} {f['message_zh']}" for f in errors),
                          "; ".join(f"{f['rule']} {f['message_en']}" for f in errors))
        return v.attendance if attendance_text else v.courses

    # --- course fields ---------------------------------------------------------------------------
    def _course(self, r: CorrectionRow, d: Decision, f: Field, course: dict) -> None:
        tags = self.wh.tag_register() if f.codelist == "tag" else None
        old, old_bad = parse_one(f, r.original, tags)
        new_parsed, new_bad = parse_one(f, r.new, tags)
        d.row_key = self._row_key(d.unit_code, d.course_code, f.code, r.original if old_bad else old,
                                  r.new if new_bad else new_parsed, d.letter_no)
        if self._already(d):
            return
        current = course[f.code]
        if old_bad or not same(old, current):
            shown = render(current) or "（空白）"
            raise Refused("original_mismatch", f"現有內容「{shown}」，原內容「{r.original or ''}」",
                          f"current '{shown}', 原內容 '{r.original or ''}'")
        text = {c.code: render(course.get(c.code)) for c in COURSE.fields}
        text[f.code] = r.new
        typed = self._engine(d, text, None)
        new = typed[f.code][0].as_py()
        if same(new, current):
            raise Refused("no_change", f"「{render(current)}」", f"'{render(current)}'")
        sql_type = next(c.type for c in ddl.COURSES.columns if c.name == f.code)
        con = self.wh.con
        cols = ", ".join(f'CAST(? AS {sql_type}) AS "{c.name}"' if c.name == f.code else f'"{c.name}"'
                         for c in ddl.COURSES.columns)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE corr_stage AS
            SELECT {cols} FROM {SCHEMA}.courses
            WHERE unit_code = ? AND course_code = ?""", [new, d.unit_code, d.course_code])
        _, updated = self.wh.upsert(f"{SCHEMA}.courses", "corr_stage", ["unit_code", "course_code"], [f.code],
                                     [f.code], self._source(d), self._now(), action="correction")
        assert updated == 1, updated
        self._applied(d, f"{f.label}「{render(current) or ''}」→「{render(new) or ''}」",
                      f"{f.code} '{render(current) or ''}' → '{render(new) or ''}'")

    def _source(self, d: Decision) -> Source:
        return Source("correction", d.correction_id, d.letter_no)

    def _applied(self, d: Decision, zh: str, en: str) -> None:
        d.status, d.reason = "applied", None
        d.message_zh, d.message_en = f"已更正：{zh}", f"applied: {en}"

    # --- attendance --------------------------------------------------------------------------------
    def _id(self, token: str | None) -> tuple[str, str]:
        """(normalised ID, teacher_key); a malformed ID is refused (A03), shown masked."""
        nid = (fold(token) or "").upper()
        if not nid:
            raise Refused("bad_format", "缺少身分證字號", "the national ID is missing")
        if not national_id.is_valid(pa.array([nid], pa.string()))[0].as_py():
            raise Refused("invalid_value", f"A03 身分證字號或居留證號無效：{mask(nid)}",
                          f"A03 invalid national ID or resident certificate number: {mask(nid)}")
        return nid, self.pseudonymiser.one(nid)

    def _listed(self, d: Decision, teacher_key: str) -> dict | None:
        return self._one(f"""SELECT * FROM {SCHEMA}.attendance WHERE unit_code = ? AND course_code = ?
            AND teacher_key = ?""", [d.unit_code, d.course_code, teacher_key])

    def _attendance(self, r: CorrectionRow, d: Decision, op: str | Field, course: dict) -> None:
        course_text = {c.code: render(course.get(c.code)) for c in COURSE.fields}
        if op == "add":
            parts = _split(r.new, ";；")
            if fold(r.original) is not None or not 3 <= len(parts) <= 4:
                raise Refused("bad_format", "新增：原內容留白，修改後內容為「身分證字號;服務學校代碼;核發時數[;完成]」",
                              "add: 原內容 empty, 修改後內容 'ID;school_code;hours[;completed]'")
            nid, key = self._id(parts[0])
            d.teacher_key = key
            d.row_key = self._row_key(d.unit_code, d.course_code, "add", key, *parts[1:], d.letter_no)
            if self._already(d):
                return
            if self._listed(d, key) is not None:
                raise Refused("already_listed", mask(nid), mask(nid))
            hours: str | None = parts[2]
            completed: str | None = parts[3] if len(parts) == 4 else self._completed(hours)
            row = self._checked_attendance(d, course_text, nid, parts[1], hours, completed)
            self._write_attendance(d, key, row, None)
            self._applied(d, f"新增 {mask(nid)}（{row['school_code']}，{render(row['hours_granted'])} 小時）",
                          f"added {mask(nid)} ({row['school_code']}, {render(row['hours_granted'])} h)")
            return
        if op == "remove":
            parts = _split(r.original, ":：;；")
            if fold(r.new) is not None or not parts or not parts[0]:
                raise Refused("bad_format", "刪除：原內容為「身分證字號」，修改後內容留白",
                              "remove: 原內容 'ID', 修改後內容 empty")
            nid, key = self._id(parts[0])
            d.teacher_key = key
            d.row_key = self._row_key(d.unit_code, d.course_code, "remove", key, d.letter_no)
            if self._already(d):
                return
            current = self._listed(d, key)
            if current is None:
                raise Refused("unknown_teacher", mask(nid), mask(nid))
            self._write_attendance(d, key, None, current)
            self._applied(d, f"刪除 {mask(nid)}", f"removed {mask(nid)}")
            return
        f = op
        assert isinstance(f, Field)  # "add" and "remove" are the other operations, answered above
        old_parts, new_parts = _split(r.original, ":："), _split(r.new, ":：")
        if len(old_parts) != 2 or len(new_parts) != 2:
            raise Refused("bad_format", f"原內容「身分證字號:{f.label}」，修改後內容「身分證字號:{f.label}」",
                          f"原內容 'ID:{f.code}', 修改後內容 'ID:{f.code}'")
        nid, key = self._id(old_parts[0])
        d.teacher_key = key
        if (fold(new_parts[0]) or "").upper() != nid:
            raise Refused("id_mismatch")
        old, old_bad = parse_one(f, old_parts[1] or None)
        d.row_key = self._row_key(d.unit_code, d.course_code, f.code, key, old_parts[1], new_parts[1], d.letter_no)
        if self._already(d):
            return
        current = self._listed(d, key)
        if current is None:
            raise Refused("unknown_teacher", mask(nid), mask(nid))
        if old_bad or not same(old, current[f.code]):
            shown = render(current[f.code]) or "（空白）"
            raise Refused("original_mismatch", f"{mask(nid)} 現有{f.label}「{shown}」",
                          f"{mask(nid)} current {f.code} '{shown}'")
        school: str | None = new_parts[1] if f.code == "school_code" else current["school_code"]
        hours = new_parts[1] if f.code == "hours_granted" else render(current["hours_granted"])
        completed = self._completed(hours) if f.code == "hours_granted" else render(current["completed"])
        row = self._checked_attendance(d, course_text, nid, school, hours, completed)
        if all(same(row[c], current[c]) for c in ("school_code", "hours_granted", "completed")):
            raise Refused("no_change", f"{mask(nid)} {f.label}「{render(current[f.code])}」",
                          f"{mask(nid)} {f.code} '{render(current[f.code])}'")
        self._write_attendance(d, key, row, current)
        self._applied(d, f"{mask(nid)} {f.label}「{render(current[f.code])}」→「{render(row[f.code])}」",
                      f"{mask(nid)} {f.code} '{render(current[f.code])}' → '{render(row[f.code])}'")

    @staticmethod
    def _completed(hours: str | None) -> str:
        """completed follows the hours (A06: completed needs > 0, not completed needs 0)."""
        value, bad = parse_one(ATTENDANCE.field("hours_granted"), hours)
        return "N" if not bad and value == 0 else "Y"

    def _checked_attendance(self, d: Decision, course_text: dict, nid: str, school: str | None,
                            hours: str | None, completed: str | None) -> dict:
        typed = self._engine(d, course_text, {
            "unit_code": d.unit_code, "course_code": d.course_code, "national_id": nid, "name": PLACEHOLDER_NAME,
            "school_code": school, "hours_granted": hours, "completed": completed})
        row = typed.to_pylist()[0]
        return {c: row[c] for c in ("school_code", "hours_granted", "completed")}

    def _write_attendance(self, d: Decision, key: str, row: dict | None, current: dict | None) -> None:
        """Add (row, no current), change (row and current) or remove (current only), with history."""
        con, target = self.wh.con, f"{SCHEMA}.attendance"
        keys = ["unit_code", "course_code", "teacher_key"]
        source, now = self._source(d), self._now()
        if row is None:
            con.execute("""CREATE OR REPLACE TEMP TABLE corr_stage AS
                SELECT ?::VARCHAR AS unit_code, ?::VARCHAR AS course_code, ?::VARCHAR AS teacher_key""",
                        [d.unit_code, d.course_code, key])
            join = f"FROM {target} t JOIN corr_stage s USING ({', '.join(keys)})"
            self.wh.record_history(target, join, "remove", ROW_JSON.format("t"), "NULL", source, now)
            self.wh.note_change(target, "corr_stage", now, deleted=True)
            con.execute(f"""DELETE FROM {target} t USING corr_stage s WHERE t.unit_code = s.unit_code
                AND t.course_code = s.course_code AND t.teacher_key = s.teacher_key""")
            return
        modified = current["modified_at"] if current else None
        con.execute("""CREATE OR REPLACE TEMP TABLE corr_stage AS SELECT ?::VARCHAR AS unit_code,
            ?::VARCHAR AS course_code, ?::VARCHAR AS teacher_key, ?::VARCHAR AS school_code,
            ?::DECIMAL(5,1) AS hours_granted, ?::BOOLEAN AS completed, ?::TIMESTAMP AS modified_at,
            false AS is_deleted""", [d.unit_code, d.course_code, key, row["school_code"], row["hours_granted"],
                                      row["completed"], modified])
        inserted, updated = self.wh.upsert(target, "corr_stage", keys, [*ATTENDANCE_CONTENT, "modified_at"],
                                            ATTENDANCE_CONTENT, source, now, action="correction")
        assert (inserted, updated) == ((0, 1) if current else (1, 0)), (inserted, updated)
        if current is None:  # an insert leaves no history by itself: record the addition
            self.wh.record_history(target, f"FROM {target} t JOIN corr_stage s USING ({', '.join(keys)})", "add",
                             "NULL", ROW_JSON.format("t"), source, now)

    # --- the audit trail -----------------------------------------------------------------------
    def record(self, d: Decision, now: datetime) -> None:
        self.wh.con.execute("""INSERT INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
            ?, ?, ?)""", [d.correction_id, self.content_hash, d.row, d.row_key, d.unit_code, d.course_code, d.record,
                          d.field, d.teacher_key, d.original, d.new, d.authority, d.letter_no, d.letter_date,
                          d.status, d.reason, d.message_zh, d.message_en, now])


# --- one workbook ----------------------------------------------------------------------------------
def processed_before(wh: Warehouse, content_hash: str) -> dict | None:
    cur = wh.con.execute("""SELECT file_name, processed_at, receipt_json FROM correction_workbooks
        WHERE content_hash = ? AND status = 'processed' ORDER BY processed_at LIMIT 1""", [content_hash])
    row = cur.fetchone()
    return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None


def process_workbook(path: Path, settings: Settings, wh: Warehouse,
                     received_at: datetime | str | None = None) -> dict:
    """Process one correction workbook; returns its receipt's JSON object (also written as JSON + Excel)."""
    path = Path(path)
    warehouse_key(settings.home, wh)  # the warehouse's own key, or nothing is decided (PseudonymKeyError)
    received = as_received_at(received_at)
    content_hash = sha256_file(path)
    # outbox/_corrections/<file>.<received>[-n].receipt.{json,xlsx}, never overwriting
    json_path, xlsx_path = free_receipt_paths(settings.outbox / FOLDER, path.name, received)
    receipt = WorkbookReceipt(path.name, received.isoformat(), content_hash, [str(json_path), str(xlsx_path)])
    earlier = processed_before(wh, content_hash)
    if earlier is not None:  # the same bytes again: nothing is applied twice, nothing written
        receipt.status = "duplicate"
        name, when = earlier["file_name"], earlier["processed_at"]
        receipt.notes.append(f"與 {name}（{when}）內容相同，未再處理 / same content as {name} processed {when}; "
                             "nothing applied again")
        publish(stage(receipt, json_path, xlsx_path))
        return receipt.document()
    try:
        book = read_workbook(path, settings.limits)
    except WorkbookRefused as exc:
        receipt.status, receipt.refusal = "refused", exc.code
        receipt.notes.append(f"{exc.zh} / {exc.en}")
        book = None
    if book is not None:
        receipt.sheet = book.sheet
        if book.ignored_columns:
            names = "、".join(book.ignored_columns)
            receipt.notes.append(f"未定義欄位，已略過：{names} / unknown column(s) ignored: {names}")
    staged = None
    try:
        with wh.transaction():
            if book is not None:
                run = CorrectionRun(wh, settings, content_hash, received)
                for i, r in enumerate(book.rows):
                    d = run.decide(r)
                    run.record(d, datetime.now(TAIPEI))
                    receipt.changes.append(d.public())
                    if d.status == "applied" and i == 0:
                        failpoint("corrections.after_first_row")
            receipt.count()
            counts = receipt.rows
            wh.con.execute("INSERT INTO correction_workbooks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                content_hash, path.name, received, receipt.status, receipt.refusal, counts.received,
                counts.applied, counts.refused, counts.already_applied, str(json_path), str(xlsx_path),
                datetime.now(TAIPEI)])
            wh.con.execute("DROP TABLE IF EXISTS corr_stage")
            staged = stage(receipt, json_path, xlsx_path)  # published only once the rows are committed
            failpoint("corrections.before_commit")
    except BaseException:
        if staged is not None:
            discard(staged)
        raise
    publish(staged)
    return receipt.document()


def process_paths(paths: list[Path], settings: Settings, received_at: str | None = None) -> list[dict]:
    with WriteSession(settings) as wh:
        return [process_workbook(p, settings, wh, received_at) for p in paths]
