"""The rule engine: canonical raw tables in, typed tables + findings out (spec §5).

Field rules are pyarrow compute over whole columns; rules across rows or against the warehouse
(C06, C08, C11, A04–A08, W05) are DuckDB SQL over the same Arrow tables. No per-row Python
(tags, W06, are read against the register: a few Python steps per dropped tag, for its message).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inservice.loaders.base import ROW, RawUpload
from inservice.schemas import codelists, messages, reference
from inservice.schemas.fields import ATTENDANCE, COURSE, Field, Kind, RecordType
from inservice.schemas.rules import C11_FROM, LIGHT_RED_AT
from inservice.validations import lights, national_id, normalize
from inservice.validations.findings import Findings, error_rows
from inservice.validations.pseudonym import Pseudonymiser

# Content columns compared for "unchanged" (no-op) and "differs" (C08/A08).
COURSE_CONTENT = COURSE.content
ATTENDANCE_CONTENT = ATTENDANCE.content

MEETING_WORDS = ("校務會議", "學年會議", "行政會議")
# What may surround a meeting name in a title that is "only a meeting name" (W02):
# academic year, term, ordinal, 期初/期末/臨時, joiners and punctuation.
_MEETING_ONLY = (
    r"^(?:[0-9０-９一二三四五六七八九十百]+學年度|[0-9０-９]+年度?|第?[0-9０-９一二三四五六七八九十上下]+學期|"
    r"第[0-9０-９一二三四五六七八九十]+次|期初|期末|期中|臨時|定期|[\s　、,，;；/／&＆()（）\-—:：暨及與和]|"
    + "|".join(MEETING_WORDS) + r")+$"
)


class WarehouseState(Protocol):
    """What the engine needs to know of the warehouse (C08/A08, A04, W05), as Arrow tables."""

    def existing_courses(self, unit: str, codes: pa.Array) -> pa.Table: ...

    def existing_attendance(self, unit: str, codes: pa.Array) -> pa.Table: ...

    def sessions(self, organizer_titles: pa.Table) -> pa.Table:
        """Sessions (with their attendees) of these (organizer, title) pairs that overlap the pair's
        first_day..last_day."""
        ...

    def schools(self) -> pa.Table:
        """The school register (W04): school_code, valid_from, valid_to (dates; null = open-ended)."""
        ...

    def unclosed_courses(self, unit: str, on: date) -> pa.Table:
        """The unit's courses counting toward their organizer's light on `on` (course_code, organizer)."""
        ...


@dataclass
class Exceptions:
    """Archive-cutoff exceptions in force for one unit on the receipt date."""

    all_courses: bool = False
    course_codes: frozenset[str] = frozenset()


@dataclass
class Context:
    unit: str
    channel: str  # "file" | "db"
    received_on: date
    pseudonymiser: Pseudonymiser
    cutoff: date = date(2012, 12, 31)
    exceptions: Exceptions = field(default_factory=Exceptions)
    state: WarehouseState | None = None
    tags: pa.Table | None = None  # the tag register (normalize.TAG_REGISTER); None: the seed of §3.8
    c11_from: date = C11_FROM  # INSERVICE_C11_FROM: from this day a red organizer registers nothing new
    # False: W04 and W05, the warnings that read the school register and the warehouse's other sessions,
    # are not judged. For a caller that keeps no warnings (the backfill): they change no row's outcome
    # or content, and W05's look-up grows with the warehouse.
    warehouse_warnings: bool = True


@dataclass
class Validated:
    courses: pa.Table  # typed; `_ok` marks accepted rows
    attendance: pa.Table  # typed, pseudonymised (teacher_key, id_masked; no raw ID or name)
    findings: pa.Table

    @property
    def accepted_courses(self) -> pa.Table:
        return self.courses.filter(self.courses["_ok"])

    @property
    def accepted_attendance(self) -> pa.Table:
        return self.attendance.filter(self.attendance["_ok"])


_TYPES = {Kind.DATE: pa.date32(), Kind.DATETIME: pa.timestamp("s"), Kind.NUMBER: pa.float64(),
          Kind.YESNO: pa.bool_()}


def _none(n: int) -> pa.Array:
    """An all-false mask (a Python list of n booleans costs more than the rule it feeds)."""
    return pa.repeat(pa.scalar(False, pa.bool_()), n)


def national_ids(values: pa.Array) -> pa.Array:
    """National IDs as the field rules normalise them (folded, upper case)."""
    return pc.utf8_upper(normalize.fold(values))


def parse_field(f: Field, values: pa.Array) -> tuple[pa.Array, pa.Array, str]:
    """typed values, bad mask, and the rule suffix for bad values ("02" unparseable, "03" code)."""
    if values.null_count == len(values):  # an absent optional column: nothing to parse
        return (pa.nulls(len(values), _TYPES.get(f.kind, pa.string())), _none(len(values)),
                "02")
    if f.kind is Kind.DATE:
        return (*normalize.parse_date(values), "02")
    if f.kind is Kind.DATETIME:
        return (*normalize.parse_datetime(values), "02")
    if f.kind is Kind.NUMBER:
        return (*normalize.parse_number(values), "02")
    if f.kind is Kind.YESNO:
        return (*normalize.parse_yesno(values), "02")
    if f.kind in (Kind.CODE, Kind.CODES):
        if f.codelist is None:  # a declaration error in schemas/fields.py
            raise ValueError(f"field {f.code} holds codes but names no code list")
        parse = normalize.parse_code if f.kind is Kind.CODE else normalize.parse_codes
        return (*parse(values, f.codelist), "03")
    if f.kind is Kind.NATIONAL_ID:
        v = national_ids(values)
        return v, _none(len(v)), "02"  # validity is A03, checked separately
    v = normalize.fold(values) if f.fold_width else normalize.clean_text(values)
    bad = normalize.has_control(v)
    if not f.personal:  # a name is never stored nor quoted: an ID in it goes nowhere
        bad = pc.or_(bad, normalize.holds_national_id(v))
    if f.max_len:
        bad = pc.or_(bad, pc.fill_null(pc.greater(pc.utf8_length(v), f.max_len), False))
    if f.pattern:
        bad = pc.or_(bad, pc.fill_null(pc.invert(pc.match_substring_regex(v, f"^(?:{f.pattern})$")), False))
    return v, bad, "02"


def parse_column(f: Field, src: pa.Array) -> tuple[pa.Array, pa.Array, str, pa.Array]:
    """`parse_field`, plus the mask of present values. Most large columns repeat a few values (unit,
    course and school codes, hours, yes/no): those are parsed once per distinct value and spread
    back by index. IDs and personal fields are mostly distinct, so they are parsed as they are."""
    if len(src) >= _DISTINCT_MIN and f.kind is not Kind.NATIONAL_ID and not f.personal:
        encoded = pc.dictionary_encode(src, null_encoding="encode")  # a null is a value too
        if len(encoded.dictionary) * 4 <= len(src):
            value, bad, suffix, present = _parse_values(f, encoded.dictionary)
            return (pc.take(value, encoded.indices), pc.take(bad, encoded.indices), suffix,
                    pc.take(present, encoded.indices))
    return _parse_values(f, src)


_DISTINCT_MIN = 10_000


def _parse_values(f: Field, src: pa.Array) -> tuple[pa.Array, pa.Array, str, pa.Array]:
    value, bad, suffix = parse_field(f, src)
    present = pc.is_valid(value) if f.kind in (Kind.TEXT, Kind.NATIONAL_ID) else pc.is_valid(normalize.clean_text(src))
    return value, bad, suffix, present


def _show(values: pa.Array) -> pa.Array:
    """Values quoted for a message (Findings makes every message printable)."""
    return pc.binary_join_element_wise("「", pc.utf8_slice_codeunits(values, 0, 40), "」", "")


def _shown(values: pa.Array):
    """A lazy detail: the offending values, quoted, built only for the selected rows."""
    return lambda idx: _show(pc.take(values, idx))


_CONTROL_NOTE = {"zh": ("（含控制字元）", "含控制字元"),
                 "en": (" (holds a control character)", "holds a control character")}
_ID_NOTE = {"zh": "（含身分證字號）", "en": " (holds a national ID)"}


def value_detail(values: pa.Array, personal: bool, lang: str):
    """A field rule's lazy detail: the value quoted (never a personal one, and its ID-shaped tokens
    masked by Findings), and a note when it holds a control character — shown as U+FFFD, which alone
    would not tell the unit what is wrong — or a national ID (shown masked)."""
    after_value, alone = _CONTROL_NOTE[lang]

    def detail(idx: pa.Array) -> pa.Array:
        picked = pc.take(values, idx)
        control = normalize.has_control(picked)
        if personal:
            return pc.if_else(control, alone, "")
        holds_id = pc.if_else(normalize.holds_national_id(picked), _ID_NOTE[lang], "")
        return pc.binary_join_element_wise(_show(picked), pc.if_else(control, after_value, ""), holds_id, "")
    return detail


def _per_row(values: list[tuple[str, str]]) -> tuple[pa.Array, pa.Array]:
    return pa.array([v[0] for v in values], pa.string()), pa.array([v[1] for v in values], pa.string())


def _hints(build: Callable[[pa.Array], list[tuple[str, str]]]):
    """zh and en lazy hints from one function of the selected rows (built once, for those rows only)."""
    made: dict[str, tuple[pa.Array, pa.Array]] = {}

    def pick(lang: int) -> Callable[[pa.Array], pa.Array]:
        def get(idx: pa.Array) -> pa.Array:
            if "v" not in made:
                made["v"] = _per_row(build(idx))
            return made["v"][lang]
        return get
    return pick(0), pick(1)


def _bad_items(values: pa.Array, listname: str):
    """C03 on a list field: which items of the list are not codes, and the codes allowed."""
    lookup = codelists.lookup(listname)

    def build(idx: pa.Array) -> list[tuple[str, str]]:
        out = []
        for text in pc.take(values, idx).to_pylist():
            items = [i.strip() for i in re.split("[;；]", text or "") if i.strip()]
            wrong = [i[:20] for i in items if codelists.fold_key(i) not in lookup]
            out.append(messages.bad_items(wrong, listname))
        return out
    return _hints(build)


def field_rules(rt: RecordType, raw: pa.Table, channel: str, out: Findings, id_rule: str = "A03",
                key_field: str | None = "course_code") -> dict[str, pa.Array]:
    """<prefix>01 required, <prefix>02 unparseable, <prefix>03 code for every field of `rt`, and
    `id_rule` for an invalid national ID; returns the typed columns. Findings name the row by
    `key_field`'s value (the course code), or by nothing."""
    rows = raw[ROW].combine_chunks()
    parsed = {}
    if key_field is not None:
        parsed[key_field] = parse_column(rt.field(key_field), raw[key_field].combine_chunks())
        codes = parsed[key_field][0]  # a folded text field: its value is the folded code
    else:
        codes = pa.nulls(len(rows), pa.string())
    typed: dict[str, pa.Array] = {ROW: rows}
    p = rt.error_prefix
    for f in rt.fields:
        src = raw[f.code].combine_chunks()
        if f.codelist == "tag":  # judged against the register on the start date (W06), in _course_rules
            typed[f.code] = src
            continue
        value, bad, suffix, present = parsed.get(f.code) or parse_column(f, src)
        typed[f.code] = value
        if f.required_in(channel):
            out.add(rt.name, p + "01", pc.invert(present), rows, codes, f)
        if f.kind is Kind.NATIONAL_ID:
            valid, typed["_id_number"] = national_id.check(value)
            typed["_id_valid"] = pc.fill_null(valid, False)
            invalid = pc.and_(present, pc.invert(typed["_id_valid"]))
            masked = lambda idx, v=value: national_id.mask(pc.take(v, idx))  # noqa: E731
            out.add(rt.name, id_rule, invalid, rows, codes, f, masked, masked)
            continue
        noted = out.noted_rows(rt.name, f.code)
        if len(noted):  # the reader already said why this cell is bad: say it once
            bad = pc.and_(bad, pc.invert(pc.is_in(rows, noted)))
        hint = _bad_items(src, f.list_name) if f.kind is Kind.CODES else (None, None)
        out.add(rt.name, p + suffix, bad, rows, codes, f, value_detail(src, f.personal, "zh"),
                value_detail(src, f.personal, "en"), *hint)
    return typed


def _course_rules(typed: dict[str, pa.Array], ctx: Context, out: Findings) -> None:
    rows, codes = typed[ROW], typed["course_code"]
    start, end, closed, hours = typed["start_date"], typed["end_date"], typed["closed_date"], typed["hours"]
    f = COURSE.field
    out.add("course", "C04", pc.less(end, start), rows, codes, f("end_date"),
            *_hints(lambda idx: [(f"研習起日 {s}，研習迄日 {e}", f"start {s}, end {e}") for s, e in zip(
                pc.take(start, idx).to_pylist(), pc.take(end, idx).to_pylist(), strict=True)]),
            *_hints(lambda idx: [messages.expected_of("C04")] * len(idx)))
    days = pc.add(pc.days_between(start, end), 1)
    # the daily cap only means something for a real date range (C04 reports a reversed one)
    over_daily = pc.and_(pc.and_(pc.equal(typed["class_type"], "1"), pc.greater(days, 0)),
                         pc.greater(hours, pc.multiply(days, 12)))
    out_of_range = pc.or_kleene(pc.or_(pc.less_equal(hours, 0), pc.greater(hours, 999)), over_daily)
    out.add("course", "C05", out_of_range, rows, codes, f("hours"), _shown(typed["_hours_raw"]),
            _shown(typed["_hours_raw"]), *_hints(lambda idx: [messages.hours_range(d, t) for d, t in zip(
                pc.take(days, idx).to_pylist(), pc.take(typed["class_type"], idx).to_pylist(), strict=True)]))
    archived = pc.less_equal(start, pa.scalar(ctx.cutoff, pa.date32()))
    if ctx.exceptions.all_courses:
        archived = pc.and_(archived, False)
    elif ctx.exceptions.course_codes:
        archived = pc.and_(archived, pc.invert(pc.is_in(codes, pa.array(sorted(ctx.exceptions.course_codes)))))
    cutoff = ctx.cutoff.isoformat()
    out.add("course", "C07", archived, rows, codes, f("start_date"), f"封存基準日 {cutoff}", f"cutoff {cutoff}")
    received = pa.scalar(ctx.received_on, pa.date32())
    bad_close = pc.or_kleene(pc.less(closed, end), pc.greater(closed, received))
    out.add("course", "C09", bad_close, rows, codes, f("closed_date"), _shown(typed["_closed_raw"]),
            _shown(typed["_closed_raw"]), *_hints(lambda idx: [
                messages.closed_between(e and e.isoformat(), ctx.received_on.isoformat())
                for e in pc.take(end, idx).to_pylist()]))
    if ctx.channel == "file":
        no_close = pc.and_(pc.is_null(closed), pc.is_null(normalize.clean_text(typed["_closed_raw"])))
        out.add("course", "C10", no_close, rows, codes, f("closed_date"))
    title = typed["title"]
    contains = None
    for word in MEETING_WORDS:
        hit = pc.match_substring(title, word)
        contains = hit if contains is None else pc.or_(contains, hit)
    out.add("course", "W01", contains, rows, codes, f("title"))
    only = pc.and_(contains, pc.match_substring_regex(title, _MEETING_ONLY))
    out.add("course", "W02", only, rows, codes, f("title"))
    out.add("course", "W03", pc.greater(pc.days_between(end, closed), 7), rows, codes, f("closed_date"))
    # W06 (spec 1.1): a tag not in the register on the start date is dropped; the row loads
    register = ctx.tags if ctx.tags is not None else normalize.tag_seed()
    typed["tags"], dropped, detail = normalize.parse_tags(typed["tags"], start, register)
    out.add("course", "W06", dropped, rows, codes, f("tags"), lambda idx: pc.take(detail, idx),
            lambda idx: pc.take(detail, idx))


def _typed_table(rt: RecordType, typed: dict[str, pa.Array]) -> pa.Table:
    return pa.table({ROW: typed[ROW], **{f.code: typed[f.code] for f in rt.fields}})


def _not_deleted(values: pa.Array) -> pa.Array:
    """is_deleted is optional: absent means the row stands (stored as false, compared as false)."""
    return pc.fill_null(values, False)


def validate(raw: RawUpload, ctx: Context, both_read: Callable[[RawUpload], None] | None = None) -> Validated:
    """`both_read` runs once the attendance table is there too, before its rules (ingest's F04 row
    check, which refuses the whole upload): the course rules may run while that sheet is still being
    read, and have no effect of their own before the upload is accepted."""
    out = Findings()
    noted = len(raw.notes)
    out.extend(raw.notes)
    con = duckdb.connect()
    try:
        courses = _validate_courses(raw.courses, ctx, out, con)
        attendance = raw.attendance  # waits for a read still under way, which may add notes
        out.extend(raw.notes[noted:])
        if both_read is not None:
            both_read(raw)
        attendance = _validate_attendance(attendance, courses, ctx, out, con)
    finally:
        con.close()
    return Validated(courses, attendance, out.table())


def _validate_courses(raw: pa.Table, ctx: Context, out: Findings, con: duckdb.DuckDBPyConnection) -> pa.Table:
    typed = field_rules(COURSE, raw, ctx.channel, out)
    typed["_closed_raw"] = raw["closed_date"].combine_chunks()
    typed["_hours_raw"] = raw["hours"].combine_chunks()
    _course_rules(typed, ctx, out)
    typed["is_deleted"] = _not_deleted(typed["is_deleted"])
    table = _typed_table(COURSE, typed)
    rows, codes = table[ROW].combine_chunks(), table["course_code"].combine_chunks()
    con.register("crs", table)
    # C06: the first row of a course_code is kept
    dup = con.sql(f"""SELECT {ROW}, kept FROM (SELECT {ROW}, row_number() OVER (
        PARTITION BY course_code ORDER BY {ROW}) AS n, min({ROW}) OVER (PARTITION BY course_code) AS kept
        FROM crs WHERE course_code IS NOT NULL) WHERE n > 1""").to_arrow_table()
    out.add("course", "C06", pc.is_in(rows, dup[ROW].combine_chunks()), rows, codes, COURSE.field("course_code"),
            *_hints(_kept("C06", rows, dup)))
    # C08: already closed in the warehouse and the content differs
    if ctx.state is not None and len(codes):
        existing = ctx.state.existing_courses(ctx.unit, pc.unique(pc.drop_null(codes)))
        con.register("old", existing)
        differs = " OR ".join(f"c.{c} IS DISTINCT FROM o.{c}" for c in COURSE_CONTENT)
        locked = con.sql(f"""SELECT c.{ROW} FROM crs c JOIN old o USING (course_code)
            WHERE o.closed_date IS NOT NULL AND ({differs})""").to_arrow_table()
        out.add("course", "C08", pc.is_in(rows, locked[ROW].combine_chunks()), rows, codes)
    findings = out.table()
    archived = pc.filter(findings["row"], pc.and_(pc.equal(findings["record"], "course"),
                                                  pc.equal(findings["rule"], "C07")))
    out.only("course", archived.combine_chunks(), "C07")
    if ctx.state is not None and len(codes) and ctx.received_on >= ctx.c11_from:
        _c11(table, existing, error_rows(out.table(), "course"), ctx, out, con)
    bad = error_rows(out.table(), "course")
    return table.append_column("_ok", pc.invert(pc.is_in(rows, bad)))


def _c11(table: pa.Table, existing: pa.Table, bad: pa.Array, ctx: Context, out: Findings,
         con: duckdb.DuckDBPyConnection) -> None:
    """C11: a course new to the warehouse without closed_date (a registration) whose organizer is red.

    The light is the warehouse's on the day received, after this delivery's accepted rows of courses
    already there (closings, updates, withdrawals) replace theirs; new courses never count."""
    rows, codes = table[ROW].combine_chunks(), table["course_code"].combine_chunks()
    ok = pc.invert(pc.is_in(rows, bad))
    known = pc.is_in(codes, existing["course_code"].combine_chunks())
    fresh = pc.and_(pc.and_(ok, pc.invert(pc.fill_null(known, False))),
                    pc.and_(pc.is_null(table["closed_date"]), pc.is_valid(codes)))
    if not pc.any(fresh).as_py():
        return
    if ctx.state is None:  # a self-check without a warehouse: no lights to judge by
        return
    con.register("c11_wh", ctx.state.unclosed_courses(ctx.unit, ctx.received_on))
    con.register("c11_up", table.filter(pc.and_(ok, pc.fill_null(known, False))))
    on = ctx.received_on.isoformat()
    red = con.sql(f"""WITH now_counting AS (
            SELECT course_code, organizer FROM c11_wh WHERE course_code NOT IN (SELECT course_code FROM c11_up)
            UNION ALL
            SELECT course_code, organizer FROM ({lights.spans_sql("c11_up")}) s
            WHERE DATE '{on}' BETWEEN counts_from AND counts_until)
        SELECT organizer, count(*) AS n FROM now_counting GROUP BY organizer
        HAVING count(*) >= {LIGHT_RED_AT}""").to_arrow_table()
    con.unregister("c11_wh")
    con.unregister("c11_up")
    if red.num_rows == 0:
        return
    org = table["organizer"].combine_chunks()
    at = pc.index_in(org, red["organizer"].combine_chunks())
    n = pc.cast(pc.take(red["n"].combine_chunks(), at), pa.string())
    blocked = pc.and_(fresh, pc.is_valid(at))
    zh = pc.binary_join_element_wise("開課單位", _show(org), "逾期未結案 ", n, " 門（紅燈）", "")
    en = pc.binary_join_element_wise("organizer ", _show(org), " has ", n, " courses not closed (red)", "")
    out.add("course", "C11", blocked, rows, codes, COURSE.field("organizer"), zh, en)



def _validate_attendance(raw: pa.Table, courses: pa.Table, ctx: Context, out: Findings,
                         con: duckdb.DuckDBPyConnection) -> pa.Table:
    # Every present ID is hashed in a thread while the field rules and the rules that need no key run
    # here (their pyarrow and DuckDB work releases the GIL); invalid IDs' keys are dropped below.
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashed = pool.submit(ctx.pseudonymiser.keys, national_ids(raw["national_id"].combine_chunks()))
        typed = field_rules(ATTENDANCE, raw, ctx.channel, out)
        existing = _existing(ctx, courses, typed["course_code"])
        rejected = _course_links(raw, typed, courses, existing, out, con)
        if ctx.warehouse_warnings:
            _w04(typed, courses, existing, ctx, out, con)
        ids, valid = typed["national_id"], typed["_id_valid"]
        repeated = _repeated(typed["_id_number"])
        id_masked = national_id.mask(ids)
        teacher_key = pc.if_else(valid, hashed.result(), pa.scalar(None, pa.string()))
    rows, codes = typed[ROW], typed["course_code"]
    table = pa.table({
        ROW: rows, "unit_code": typed["unit_code"], "course_code": codes,
        "teacher_key": teacher_key,
        "id_masked": id_masked,
        "school_code": typed["school_code"], "hours_granted": typed["hours_granted"],
        "completed": typed["completed"], "modified_at": typed["modified_at"],
        "is_deleted": _not_deleted(typed["is_deleted"]),
    })
    # A07: the same (unit, course, teacher) again; the first is kept. Only rows whose teacher
    # occurs more than once in the upload can repeat one: the window runs over those alone.
    con.register("att_rep", table.filter(pc.and_(repeated, pc.is_valid(codes))))
    dup = con.sql(f"""SELECT {ROW}, kept FROM (SELECT {ROW}, row_number() OVER (
        PARTITION BY unit_code, course_code, teacher_key ORDER BY {ROW}) AS n,
        min({ROW}) OVER (PARTITION BY unit_code, course_code, teacher_key) AS kept FROM att_rep
        WHERE teacher_key IS NOT NULL AND course_code IS NOT NULL) WHERE n > 1""").to_arrow_table()
    out.add("attendance", "A07", pc.is_in(rows, dup[ROW].combine_chunks()), rows, codes, None,
            # the teacher, masked and quoted: the partner's receipt shows it, the analysts' copy does not
            pc.binary_join_element_wise("教師「", id_masked, "」", ""),
            pc.binary_join_element_wise("teacher 「", id_masked, "」", ""),
            *_hints(_kept("A07", rows, dup)))
    # A08: the course is locked (closed in the warehouse) and this row is new or differs
    if ctx.state is not None:
        locked = pc.filter(existing["course_code"], pc.is_valid(existing["closed_date"])).combine_chunks()
        if len(locked):  # no locked course, no A08: the warehouse's rows need not be read
            old = ctx.state.existing_attendance(ctx.unit, pc.unique(pc.drop_null(codes)))
            con.register("old_att", old)
            con.register("att_locked", table.filter(pc.is_in(codes, locked)))
            differs = " OR ".join(f"a.{c} IS DISTINCT FROM o.{c}" for c in ATTENDANCE_CONTENT)
            changed = con.sql(f"""SELECT a.{ROW} FROM att_locked a
                LEFT JOIN old_att o ON o.course_code = a.course_code AND o.teacher_key = a.teacher_key
                WHERE a.teacher_key IS NOT NULL AND (o.teacher_key IS NULL OR {differs})""").to_arrow_table()
            a08 = pc.and_(pc.is_in(rows, changed[ROW].combine_chunks()), pc.invert(rejected))
            out.add("attendance", "A08", a08, rows, codes)
    bad = error_rows(out.table(), "attendance")
    table = table.append_column("_ok", pc.invert(pc.is_in(rows, bad)))
    if ctx.warehouse_warnings:
        _w05(table, courses, existing, repeated, ctx, out, con)
    return table



def _kept(rule: str, rows: pa.Array, dup: pa.Table) -> Callable[[pa.Array], list[tuple[str, str]]]:
    """C06/A07: per repeated row, the row that was kept (the first of its key)."""
    def build(idx: pa.Array) -> list[tuple[str, str]]:
        at = pc.index_in(pc.take(rows, idx), dup[ROW].combine_chunks())
        return [messages.kept_row(rule, k) for k in pc.take(dup["kept"].combine_chunks(), at).to_pylist()]
    return build


def _repeated(id_numbers: pa.Array) -> pa.Array:
    """Rows whose valid ID occurs more than once in the upload. Keys are HMACs of these IDs, so
    only such rows can share a teacher_key: A07 and W05 look no further."""
    present = np.sort(pc.drop_null(id_numbers).to_numpy())  # a sort beats hashing 200,000 numbers
    many = present[1:][present[1:] == present[:-1]]
    return pc.fill_null(pc.is_in(id_numbers, pa.array(many)), False)


def _course_links(raw: pa.Table, typed: dict[str, pa.Array], courses: pa.Table, existing: pa.Table,
                  out: Findings, con: duckdb.DuckDBPyConnection) -> pa.Array:
    """A04 unknown course / A05 its course row rejected / A06 hours against the course's hours;
    returns the A05 mask. Per course in DuckDB (a few thousand rows), then looked up per attendance
    row by index: joining and re-sorting every attendance row cost more than all of these rules."""
    rows, codes = typed[ROW], typed["course_code"]
    con.register("crs", courses)
    up = con.sql(f"""SELECT course_code, bool_or(_ok) AS ok,
                            arg_min(hours, {ROW}) FILTER (WHERE _ok) AS hours
                     FROM crs WHERE course_code IS NOT NULL GROUP BY course_code""").to_arrow_table()
    f = ATTENDANCE.field
    in_up = pc.index_in(codes, up["course_code"].combine_chunks())
    in_wh = pc.index_in(codes, existing["course_code"].combine_chunks())
    unknown = pc.and_(pc.is_null(in_up), pc.is_null(in_wh))  # null course_code stays null: A01's
    out.add("attendance", "A04", pc.if_else(pc.is_valid(codes), unknown, None), rows, codes, f("course_code"))
    rejected = pc.fill_null(pc.invert(pc.take(up["ok"].combine_chunks(), in_up)), False)
    out.add("attendance", "A05", rejected, rows, codes)
    hg, done = typed["hours_granted"], typed["completed"]
    course_hours = pc.coalesce(pc.take(up["hours"].combine_chunks(), in_up),
                               pc.take(existing["hours"].combine_chunks(), in_wh))
    bad_yes = pc.and_(done, pc.or_kleene(pc.less_equal(hg, 0), pc.greater(hg, course_hours)))
    bad_no = pc.and_(pc.invert(done), pc.not_equal(hg, 0))
    out.add("attendance", "A06", pc.or_(pc.fill_null(bad_yes, False), pc.fill_null(bad_no, False)),
            rows, codes, f("hours_granted"), _shown(raw["hours_granted"].combine_chunks()),
            _shown(raw["hours_granted"].combine_chunks()),
            *_hints(lambda idx: [messages.hours_granted_range(h) for h in pc.take(course_hours, idx).to_pylist()]))
    return rejected


def _w04(typed: dict[str, pa.Array], courses: pa.Table, existing: pa.Table, ctx: Context, out: Findings,
         con: duckdb.DuckDBPyConnection) -> None:
    """W04: a well-formed school code that is not in the MOE school list — with a warehouse, the school
    register on the day the row's course starts (a school opened later, or closed before, is unknown
    then); a row whose course has no start date is judged against every version. Without one (a
    self-check), the list shipped with the project."""
    school = typed["school_code"]
    well_formed = pc.fill_null(pc.match_substring_regex(school, r"^[0-9A-Z]{6}$"), False)
    if ctx.state is None:
        known = pc.is_in(school, reference.school_codes())
    else:
        # most schools have one version, valid throughout: a set membership; only rows of schools with a
        # dated version are joined to their course's start date
        register = ctx.state.schools()
        con.register("w04_reg", register)
        always = con.sql("""SELECT school_code FROM w04_reg GROUP BY school_code
            HAVING count(*) = 1 AND bool_and(valid_from IS NULL AND valid_to IS NULL)""").to_arrow_table()
        always_known = pc.is_in(school, always["school_code"].combine_chunks())
        dated = pc.and_(pc.and_(well_formed, pc.invert(always_known)),
                        pc.is_in(school, register["school_code"].combine_chunks()))
        n = len(school)
        con.register("w04_att", pa.table({"i": pa.array(np.arange(n, dtype=np.int64)), "school_code": school,
                                          "course_code": typed["course_code"]}).filter(dated))
        con.register("w04_crs", courses.select(["course_code", "start_date", ROW]))
        con.register("w04_wh", existing.select(["course_code", "start_date"]))
        hits = con.sql(f"""
            WITH d AS (SELECT course_code, start_date AS day FROM w04_crs WHERE course_code IS NOT NULL
                       QUALIFY row_number() OVER (PARTITION BY course_code ORDER BY {ROW}) = 1
                       UNION ALL
                       SELECT course_code, start_date FROM w04_wh
                       WHERE course_code NOT IN (SELECT course_code FROM w04_crs WHERE course_code IS NOT NULL))
            SELECT DISTINCT a.i FROM w04_att a LEFT JOIN d USING (course_code)
            JOIN w04_reg r ON r.school_code = a.school_code
            WHERE d.day IS NULL OR ((r.valid_from IS NULL OR r.valid_from <= d.day)
                                    AND (r.valid_to IS NULL OR r.valid_to > d.day))""").to_arrow_table()
        known = pc.or_(always_known, pc.is_in(pa.array(np.arange(n, dtype=np.int64)), hits["i"].combine_chunks()))
    unknown_school = pc.and_(well_formed, pc.invert(known))
    out.add("attendance", "W04", unknown_school, typed[ROW], typed["course_code"], ATTENDANCE.field("school_code"),
            _shown(school), _shown(school))


def _existing(ctx: Context, courses: pa.Table, att_codes: pa.Array) -> pa.Table:
    """Warehouse courses referenced by this upload's attendance (course_code, hours, closed_date...)."""
    cols = ["course_code", "organizer", "title", "start_date", "end_date", "hours", "closed_date"]
    if ctx.state is None or len(att_codes) == 0:
        return pa.table({c: pa.array([], t) for c, t in zip(
            cols, [pa.string(), pa.string(), pa.string(), pa.date32(), pa.date32(), pa.float64(), pa.date32()],
            strict=True)})
    codes = pc.unique(pc.drop_null(att_codes))
    return ctx.state.existing_courses(ctx.unit, codes).select(cols)


def _w05(att: pa.Table, courses: pa.Table, existing: pa.Table, repeated: pa.Array, ctx: Context,
         out: Findings, con: duckdb.DuckDBPyConnection) -> None:
    """W05: the teacher also attends another session of the same course (same organizer and
    title, another course code, overlapping dates), in this upload or already in the warehouse.

    Only accepted rows take part. A row can only meet another of this upload if its teacher occurs
    more than once in it (`repeated`), or one in the warehouse if the teacher has a session there:
    the join runs over those rows alone, not the whole upload."""
    ok = pc.and_(att["_ok"], pc.is_valid(att["teacher_key"]))
    con.register("att_codes", pa.table({"course_code": pc.unique(pc.filter(att["course_code"], ok))}))
    con.register("crs_ok", courses.filter(courses["_ok"]))
    con.register("wh_c", existing)
    # the sessions of this upload's accepted attendance: its accepted courses, else the warehouse's
    con.sql(f"""CREATE OR REPLACE TEMP TABLE info AS
        WITH info AS (SELECT course_code, organizer, title, start_date, end_date FROM crs_ok
                      QUALIFY row_number() OVER (PARTITION BY course_code ORDER BY {ROW}) = 1
                      UNION ALL
                      SELECT course_code, organizer, title, start_date, end_date FROM wh_c
                      WHERE course_code NOT IN (SELECT course_code FROM crs_ok))
        SELECT * FROM info WHERE course_code IN (SELECT course_code FROM att_codes)""")
    # with the span of their sessions here: a warehouse session outside it overlaps none of them, so the
    # look-up reads only the sessions of those dates, not every year's of a recurring title
    pairs = con.sql("""SELECT organizer, title, min(start_date) AS first_day, max(end_date) AS last_day
        FROM info GROUP BY organizer, title""").to_arrow_table()
    if pairs.num_rows == 0:
        return
    others = ctx.state.sessions(pairs) if ctx.state is not None else None
    if others is None:
        others = pa.table({"unit_code": pa.array([], pa.string()), "course_code": pa.array([], pa.string()),
                           "organizer": pa.array([], pa.string()), "title": pa.array([], pa.string()),
                           "start_date": pa.array([], pa.date32()), "end_date": pa.array([], pa.date32()),
                           "teacher_key": pa.array([], pa.string())})
    keys = att["teacher_key"]
    candidate = pc.and_(ok, pc.or_(repeated, pc.is_in(keys, others["teacher_key"].combine_chunks())))
    con.register("cand", att.filter(candidate).select([ROW, "course_code", "teacher_key"]))
    con.register("wh_sessions", others)
    unit = ctx.unit.replace("'", "''")
    hits = con.sql(f"""
        WITH mine AS (SELECT a.{ROW}, a.course_code, a.teacher_key, i.organizer, i.title, i.start_date,
                             i.end_date
                      FROM cand a JOIN info i USING (course_code)),
        sessions AS (
            SELECT '{unit}' AS unit_code, course_code, teacher_key, organizer, title, start_date, end_date FROM mine
            UNION ALL
            SELECT unit_code, course_code, teacher_key, organizer, title, start_date, end_date FROM wh_sessions
            WHERE NOT (unit_code = '{unit}' AND course_code IN (SELECT course_code FROM info)))
        SELECT m.{ROW}, min(s.course_code) AS other
        FROM mine m JOIN sessions s ON s.teacher_key = m.teacher_key AND s.organizer = m.organizer
             AND s.title = m.title AND NOT (s.unit_code = '{unit}' AND s.course_code = m.course_code)
             AND s.start_date <= m.end_date AND m.start_date <= s.end_date
        GROUP BY m.{ROW}""").to_arrow_table()
    if hits.num_rows == 0:
        return
    rows = att[ROW].combine_chunks()
    other = pc.take(hits["other"].combine_chunks(), pc.index_in(rows, hits[ROW].combine_chunks()))
    out.add("attendance", "W05", pc.is_valid(other), rows, att["course_code"].combine_chunks(), None,
            pc.binary_join_element_wise("另一梯次 ", other, ""),
            pc.binary_join_element_wise("other session ", other, ""))
