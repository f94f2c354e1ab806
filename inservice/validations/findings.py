"""Findings: one row per (record row, rule, field), as an Arrow table, with bilingual messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from inservice.schemas.fields import Field
from inservice.schemas.rules import RULES
from inservice.validations import national_id
from inservice.validations.normalize import printable

Detail: TypeAlias = str | pa.Array | Callable[[pa.Array], pa.Array] | None

SCHEMA = pa.schema([
    ("record", pa.string()),
    ("row", pa.int64()),
    ("field", pa.string()),
    ("rule", pa.string()),
    ("severity", pa.string()),
    ("course_code", pa.string()),
    ("message_zh", pa.string()),
    ("message_en", pa.string()),
])


def _text(value: pa.Array | str | None, n: int) -> pa.Array:
    if value is None:
        return pa.array([""] * n, pa.string())
    if isinstance(value, str):
        return pa.array([value] * n, pa.string())
    return pc.fill_null(value.cast(pa.string()), "")


class Findings:
    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._dicts: list[dict] = []

    def add(self, record: str, rule: str, where: pa.Array, rows: pa.Array, course_codes: pa.Array,
            field: Field | None = None, detail_zh: Detail = None, detail_en: Detail = None) -> None:
        """Add a finding for every row where `where` is true.

        A detail is a string, a per-row array, or a function of the selected rows' indices that
        returns one — so messages are built only for the few rows at fault, not for every row.
        """
        where = pc.fill_null(where, False)
        if not pc.any(where).as_py():
            return
        rows_sel = pc.filter(rows, where)
        n = len(rows_sel)
        r = RULES[rule]
        zh_head = f"{r.zh}" + (f"（{field.label}）" if field else "")
        en_head = f"{r.en}" + (f" ({field.code})" if field else "")
        picked: dict[int, pa.Array] = {}

        def pick(d: Detail) -> pa.Array | str | None:
            if callable(d):
                if id(d) not in picked:  # zh and en often share one function
                    picked[id(d)] = d(pc.indices_nonzero(where))
                return picked[id(d)]
            return pc.filter(d, where) if isinstance(d, pa.Array | pa.ChunkedArray) else d

        dz, de = _text(pick(detail_zh), n), _text(pick(detail_en), n)
        sep_z = pc.if_else(pc.equal(dz, ""), "", "：")
        sep_e = pc.if_else(pc.equal(de, ""), "", ": ")
        self._parts.append(pa.table({
            "record": pa.array([record] * n, pa.string()),
            "row": rows_sel.cast(pa.int64()),
            "field": pa.array([field.code if field else None] * n, pa.string()),
            "rule": pa.array([rule] * n, pa.string()),
            "severity": pa.array([r.severity] * n, pa.string()),
            "course_code": shown(pc.filter(course_codes, where).cast(pa.string())),
            "message_zh": shown(pc.binary_join_element_wise(zh_head, sep_z, dz, "")),
            "message_en": shown(pc.binary_join_element_wise(en_head, sep_e, de, "")),
        }, schema=SCHEMA))

    def only(self, record: str, rows: pa.Array, rule: str) -> None:
        """Keep nothing but `rule` for these rows of `record` (an archived course is refused as
        archived: its content is not assessed further)."""
        if not len(rows):
            return
        kept = []
        for part in self._parts:
            other = pc.and_(pc.and_(pc.equal(part["record"], record), pc.is_in(part["row"], rows)),
                            pc.not_equal(part["rule"], rule))
            kept.append(part.filter(pc.invert(other)))
        self._parts = kept

    def extend(self, dicts: list[dict]) -> None:
        self._dicts.extend(dicts)

    def noted_rows(self, record: str, field: str) -> pa.Array:
        """Rows whose `field` a reader's note already reports (e.g. an Access value it cannot
        represent): the field rules then say nothing more about that cell."""
        rows = {d["row"] for d in self._dicts
                if d["record"] == record and d["field"] == field and d["row"] is not None}
        return pa.array(sorted(rows), pa.int64())

    def table(self) -> pa.Table:
        parts = list(self._parts)
        if self._dicts:
            parts.append(from_dicts(self._dicts))
        if not parts:
            return SCHEMA.empty_table()
        t = pa.concat_tables(parts)
        order = {"file": 0, "course": 1, "attendance": 2}
        rank = pc.fill_null(pc.index_in(t["record"], pa.array(list(order))), 0)
        t = t.append_column("_rank", rank)
        t = t.sort_by([("_rank", "ascending"), ("row", "ascending"), ("rule", "ascending")])
        return t.drop_columns(["_rank"])


def shown(text: pa.Array) -> pa.Array:
    """What a finding may show of a value quoted from an upload: printable (no control character, which
    no receipt or warehouse takes) and with every ID-shaped token masked (an ID typed into another
    column must not reach the analysts' `findings` or a receipt whole)."""
    return printable(national_id.mask_in_text(text))


# A value quoted from an upload in a row's message (「…」, values may hold line breaks), and the
# shape a course code must have to be shown to analysts (spec §2.1).
_QUOTED = r"(?s)「.*」"
_COURSE_CODE = r"^[A-Za-z0-9_-]{1,20}$"
HIDDEN = "…"


def for_analysts(findings: pa.Table) -> pa.Table:
    """The warehouse's copy of findings, which analysts read: a row's finding names its rule, field,
    row and course, but quotes no value from the upload (a name typed into the school-code column
    cannot be recognised, and a value that failed its rule may be anything). The partner's receipt
    keeps the quotes. Whole-upload findings (file names, sheets, headers) are kept as they are."""
    if not findings.num_rows:
        return findings
    row_level = pc.not_equal(findings["record"], "file")
    for name in ("message_zh", "message_en"):
        text = findings[name]
        hidden = pc.replace_substring_regex(text, _QUOTED, f"「{HIDDEN}」")
        findings = findings.set_column(SCHEMA.get_field_index(name), name, pc.if_else(row_level, hidden, text))
    code = findings["course_code"]
    odd = pc.and_(pc.is_valid(code), pc.invert(pc.fill_null(pc.match_substring_regex(code, _COURSE_CODE), False)))
    return findings.set_column(SCHEMA.get_field_index("course_code"), "course_code",
                               pc.if_else(odd, HIDDEN, code))


def from_dicts(findings: list[dict]) -> pa.Table:
    """Findings given as dicts (readers' notes, whole-upload refusals), their text made `shown`."""
    table = pa.Table.from_pylist([{k: f.get(k) for k in SCHEMA.names} for f in findings], schema=SCHEMA)
    for name in ("course_code", "message_zh", "message_en"):
        table = table.set_column(SCHEMA.get_field_index(name), name, shown(table[name]))
    return table


def error_rows(findings: pa.Table, record: str) -> pa.Array:
    """Row positions of `record` rows that carry at least one error."""
    mask = pc.and_(pc.equal(findings["record"], record), pc.equal(findings["severity"], "error"))
    if not findings.num_rows:
        return pa.array([], pa.int64())
    return pc.unique(pc.filter(findings["row"].combine_chunks(), mask.combine_chunks()))
