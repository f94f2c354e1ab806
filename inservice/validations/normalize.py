"""Vectorised value parsing of spec §2.3. Each parser takes a string array and returns the typed
array plus a mask of values that are present but not parseable (→ C02/A02 or C03).

Missing values (null, empty, white space incl. U+3000) come back null and unflagged: "required"
is a separate rule (C01/A01).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inservice.schemas import codelists
from inservice.schemas.text import clean_text, fold, nfkc  # noqa: F401 (the rules' callers use them from here)

ROC_OFFSET = 1911


# C0 control characters other than tab, line feed and carriage return, and the noncharacters U+FFFE
# and U+FFFF (an .xls cell may hold them): no text in the spec's formats holds them (XML 1.0 cannot, a
# workbook with them is corrupt, PostgreSQL text cannot hold NUL). A value that does is unparseable
# (C02/A02); wherever such a value is shown, each one becomes U+FFFD. (RE2 and Python spellings.)
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{FFFE}\x{FFFF}]"
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
REPLACEMENT = "\ufffd"


def has_control(values: pa.Array) -> pa.Array:
    """Values holding a control character (null → false)."""
    return pc.fill_null(pc.match_substring_regex(values, CONTROL), False)


def holds_national_id(values: pa.Array) -> pa.Array:
    """Values holding a national-ID-shaped token anywhere (checksum or not: a mistyped ID is still
    personal data), also full-width or lower case: C02/A02 in any field but the ID itself (null → false)."""
    from inservice.validations.national_id import TOKEN

    return pc.fill_null(pc.match_substring_regex(pc.utf8_upper(nfkc(values)), TOKEN), False)


def printable(values: pa.Array) -> pa.Array:
    """Control characters replaced by U+FFFD: safe for receipts, workbooks and every warehouse."""
    return pc.replace_substring_regex(values, CONTROL, REPLACEMENT)


def printable_text(value: str) -> str:
    return _CONTROL_RE.sub(REPLACEMENT, value)


def holds_control(value: str | None) -> bool:
    return value is not None and _CONTROL_RE.search(value) is not None


def _is_bad(present: pa.Array, parsed: pa.Array) -> pa.Array:
    return pc.and_(pc.is_valid(present), pc.is_null(parsed))


# --- dates -----------------------------------------------------------------------------------
_TIME = r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?)"
# (pattern, ROC?) — ISO / native date (optionally with a time, as readers render native values),
# ROC with separators, ROC compact (7 digits; 6 for ROC years below 100).
_DATE_FORMS = (
    (r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})", False),
    (r"^(?P<y>\d{2,3})[/.-](?P<m>\d{1,2})[/.-](?P<d>\d{1,2})", True),
    (r"^(?P<y>\d{2,3})(?P<m>\d{2})(?P<d>\d{2})", True),
)
MIN_YEAR = 1912  # ROC year 1: an earlier Gregorian year is a ROC year typed as Gregorian


def _parts(values: pa.Array, with_time: bool) -> tuple[pa.Array, ...]:
    """Year (Gregorian), month, day, hour, minute, second as int arrays; null where no form matches."""
    n = len(values)
    year = pa.nulls(n, pa.int32())
    month = day = hour = minute = second = year
    tail = _TIME + ("?$" if with_time else "?$")
    for pattern, roc in _DATE_FORMS:
        m = pc.extract_regex(values, pattern + tail)
        hit = pc.is_valid(m)
        y = pc.cast(pc.struct_field(m, "y"), pa.int32(), safe=False)
        y = pc.if_else(hit, pc.add(y, ROC_OFFSET) if roc else y, None)
        year = pc.coalesce(year, y)
        for name, acc in (("m", "month"), ("d", "day")):
            v = pc.if_else(hit, pc.cast(pc.struct_field(m, name), pa.int32(), safe=False), None)
            if acc == "month":
                month = pc.coalesce(month, v)
            else:
                day = pc.coalesce(day, v)
        for name in ("H", "M", "S"):
            raw = pc.struct_field(m, name)
            v = pc.if_else(pc.and_(hit, pc.not_equal(raw, "")), pc.cast(
                pc.if_else(pc.equal(raw, ""), "0", raw), pa.int32(), safe=False), None)
            if name == "H":
                hour = pc.coalesce(hour, v)
            elif name == "M":
                minute = pc.coalesce(minute, v)
            else:
                second = pc.coalesce(second, v)
    return year, month, day, hour, minute, second


def _valid_date(year: pa.Array, month: pa.Array, day: pa.Array) -> pa.Array:
    """date32 where year/month/day form a real calendar date on or after 1912-01-01, else null."""
    ok = pc.and_(pc.and_(pc.greater_equal(year, MIN_YEAR), pc.less_equal(year, 9999)),
                 pc.and_(pc.and_(pc.greater_equal(month, 1), pc.less_equal(month, 12)),
                         pc.and_(pc.greater_equal(day, 1), pc.less_equal(day, 31))))
    ok = pc.fill_null(ok, False)
    y = pc.if_else(ok, year, 2000)
    mo = pc.if_else(ok, month, 1)
    d = pc.if_else(ok, day, 1)
    text = pc.binary_join_element_wise(
        pc.utf8_lpad(pc.cast(y, pa.string()), 4, "0"),
        pc.utf8_lpad(pc.cast(mo, pa.string()), 2, "0"),
        pc.utf8_lpad(pc.cast(d, pa.string()), 2, "0"), "-")
    ts = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 02-30 over into March: a real date keeps its month and day
    real = pc.and_(ok, pc.and_(pc.equal(pc.month(ts), pc.cast(mo, pa.int64())),
                               pc.equal(pc.day(ts), pc.cast(d, pa.int64()))))
    return pc.if_else(pc.fill_null(real, False), pc.cast(ts, pa.date32()), pa.scalar(None, pa.date32()))


def parse_date(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    v = fold(values)
    year, month, day, *_ = _parts(v, with_time=True)
    parsed = _valid_date(year, month, day)
    return parsed, _is_bad(v, parsed)


def parse_datetime(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Naive timestamp (Asia/Taipei wall time)."""
    v = fold(values)
    year, month, day, hour, minute, second = _parts(v, with_time=True)
    date = _valid_date(year, month, day)
    hour, minute, second = (pc.fill_null(x, 0) for x in (hour, minute, second))
    time_ok = pc.and_(pc.less_equal(hour, 23), pc.and_(pc.less_equal(minute, 59), pc.less_equal(second, 59)))
    secs = pc.add(pc.add(pc.multiply(pc.cast(hour, pa.int64()), 3600), pc.multiply(pc.cast(minute, pa.int64()), 60)),
                  pc.cast(second, pa.int64()))
    day_secs = pc.multiply(pc.cast(pc.cast(date, pa.int32()), pa.int64()), 86400)
    ts = pc.cast(pc.add(day_secs, secs), pa.timestamp("s"))
    parsed = pc.if_else(pc.and_(pc.is_valid(date), time_ok), ts, pa.scalar(None, pa.timestamp("s")))
    return parsed, _is_bad(v, parsed)


# --- numbers, yes/no ---------------------------------------------------------------------------
_NUMBER = r"^[+-]?\d+(\.\d+)?$"


def parse_number(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Decimal with '.', at most one decimal place in value; no thousands separators."""
    v = fold(values)
    shaped = pc.fill_null(pc.match_substring_regex(v, _NUMBER), False)
    num = pc.cast(pc.if_else(shaped, v, "0"), pa.float64())
    tenths = pc.multiply(num, 10.0)
    one_decimal = pc.less(pc.abs(pc.subtract(tenths, pc.round(tenths))), 1e-6)
    parsed = pc.if_else(pc.and_(shaped, one_decimal), pc.divide(pc.round(tenths), 10.0),
                        pa.scalar(None, pa.float64()))
    return parsed, _is_bad(v, parsed)


_YES = pa.array(["y", "是", "1", "true", "yes"])
_NO = pa.array(["n", "否", "0", "false", "no"])


def parse_yesno(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    v = pc.utf8_lower(fold(values))
    v = pc.if_else(pc.match_substring_regex(v, r"^[01]\.0+$"), pc.utf8_slice_codeunits(v, 0, 1), v)
    yes = pc.is_in(v, value_set=_YES)
    no = pc.is_in(v, value_set=_NO)
    parsed = pc.if_else(yes, True, pc.if_else(no, False, pa.scalar(None, pa.bool_())))
    return parsed, _is_bad(v, parsed)


# --- codes -------------------------------------------------------------------------------------
def fold_code_key(values: pa.Array) -> pa.Array:
    """Vectorised twin of codelists.fold_key."""
    v = pc.utf8_upper(nfkc(values))
    v = pc.replace_substring(v, "台", "臺")
    return pc.replace_substring_regex(v, r"[\s\[\]【】]", "")


def _lookup_arrays(listname: str) -> tuple[pa.Array, pa.Array]:
    table = codelists.lookup(listname)
    return pa.array(list(table.keys())), pa.array(list(table.values()))


def parse_code(values: pa.Array, listname: str) -> tuple[pa.Array, pa.Array]:
    v = clean_text(values)
    keys, codes = _lookup_arrays(listname)
    idx = pc.index_in(fold_code_key(v), value_set=keys)
    parsed = pc.take(codes, idx)
    return parsed, _is_bad(v, parsed)


def parse_codes(values: pa.Array, listname: str) -> tuple[pa.Array, pa.Array]:
    """`;`/`；`-separated list → canonical text of distinct codes in code-list order ("E;K").

    Each row's codes are OR-ed into a bitmask (a list has at most a few dozen codes), and each
    distinct mask is rendered once.
    """
    v = clean_text(values)
    keys, codes = _lookup_arrays(listname)
    order = [c.code for c in codelists.codelist(listname)]
    position = pa.array([order.index(c) for c in codes.to_pylist()], pa.int64())
    pieces = pc.split_pattern_regex(pc.fill_null(v, ""), pattern="[;；]")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(pieces))
    parent = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False)
    nonempty = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    found = pc.index_in(fold_code_key(flat), value_set=keys)
    miss = pc.is_null(found).to_numpy(zero_copy_only=False) & nonempty
    unknown = np.zeros(len(v), dtype=bool)
    unknown[parent[miss]] = True
    bits = pc.fill_null(pc.take(position, found), -1).to_numpy(zero_copy_only=False)
    hit = bits >= 0
    mask = np.zeros(len(v), dtype=np.uint64)
    np.bitwise_or.at(mask, parent[hit], np.left_shift(np.uint64(1), bits[hit].astype(np.uint64)))
    distinct = np.unique(mask)
    rendered = pa.array([";".join(c for i, c in enumerate(order) if int(m) >> i & 1) or None
                         for m in distinct.tolist()], pa.string())
    text = pc.take(rendered, pa.array(np.searchsorted(distinct, mask)))
    bad = pc.and_(pc.is_valid(v), pa.array(unknown))
    return pc.if_else(bad, pa.scalar(None, pa.string()), text), bad


# The tag register as the engine reads it (registers/tags.py keeps it in the warehouse; without a
# warehouse, the seed of spec §3.8). `position` orders a course's tags in their canonical text.
TAG_REGISTER = pa.schema([("code", pa.string()), ("short_label", pa.string()), ("full_name", pa.string()),
                          ("valid_from", pa.date32()), ("valid_to", pa.date32()), ("position", pa.int32())])


def tag_seed() -> pa.Table:
    """The eight tags of §3.8, valid from 2013-01-01 with no end."""
    tags = codelists.TAGS
    return pa.table({"code": [t.code for t in tags], "short_label": [t.label for t in tags],
                     "full_name": [t.aliases[0] for t in tags], "valid_from": [codelists.TAGS_FROM] * len(tags),
                     "valid_to": pa.nulls(len(tags), pa.date32()), "position": list(range(1, len(tags) + 1))},
                    schema=TAG_REGISTER)


def parse_tags(values: pa.Array, start: pa.Array, register: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Tags against the register on each row's start date (W06, spec 1.1): canonical text of the
    tags in force (distinct, in register order), the mask of rows that named a tag not in force (or
    not in the register at all) and, for those rows, the dropped pieces quoted. A tag matches by code,
    short label (with or without brackets) or full name. An unknown start date judges by the register
    alone (the course is refused for its date anyway)."""
    v = clean_text(values)
    reg = register.sort_by("position")
    key_to_row: dict[str, int] = {}
    for i, (code, short, name) in enumerate(zip(reg["code"].to_pylist(), reg["short_label"].to_pylist(),
                                                reg["full_name"].to_pylist(), strict=True)):
        for k in (code, short, name):
            if k:
                key_to_row.setdefault(codelists.fold_key(k), i)
    pieces = pc.split_pattern_regex(pc.fill_null(v, ""), pattern="[;；]")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(pieces))
    parent = pc.list_parent_indices(pieces)
    nonempty = pc.not_equal(flat, "")
    found = pc.index_in(fold_code_key(flat), value_set=pa.array(list(key_to_row), pa.string()))
    row = pc.take(pa.array(list(key_to_row.values()), pa.int64()), found)
    day = pc.take(start, parent)
    vf, vt = pc.take(reg["valid_from"], row), pc.take(reg["valid_to"], row)
    in_force = pc.and_kleene(pc.greater_equal(day, vf), pc.or_kleene(pc.is_null(vt), pc.less_equal(day, vt)))
    valid = pc.and_(pc.is_valid(row), pc.fill_null(pc.or_kleene(in_force, pc.is_null(day)), True))
    dropped = pc.and_(nonempty, pc.invert(valid)).to_numpy(zero_copy_only=False)
    parents = parent.to_numpy(zero_copy_only=False)
    bad = np.zeros(len(v), dtype=bool)
    bad[parents[dropped]] = True
    detail: list[str | None] = [None] * len(v)
    for i, piece in zip(parents[dropped].tolist(), pc.filter(flat, pa.array(dropped)).to_pylist(), strict=True):
        detail[i] = (detail[i] + "、" if detail[i] else "") + f"「{piece[:40]}」"
    keep = valid.to_numpy(zero_copy_only=False)
    bits = pc.fill_null(row, -1).to_numpy(zero_copy_only=False)
    codes = reg["code"].to_pylist()
    if len(codes) <= 64:  # each row's tags OR-ed into a bitmask, each distinct mask rendered once
        mask = np.zeros(len(v), dtype=np.uint64)
        np.bitwise_or.at(mask, parents[keep], np.left_shift(np.uint64(1), bits[keep].astype(np.uint64)))
    else:  # a register grown past 64 tags over the years: Python integers
        mask = np.zeros(len(v), dtype=object)
        mask[:] = 0
        for i, b in zip(parents[keep].tolist(), bits[keep].tolist(), strict=True):
            mask[i] |= 1 << b
    distinct, where = np.unique(mask, return_inverse=True)
    rendered = pa.array([";".join(c for j, c in enumerate(codes) if int(m) >> j & 1) or None
                         for m in distinct.tolist()], pa.string())
    return pc.take(rendered, pa.array(where.ravel())), pa.array(bad), pa.array(detail, pa.string())
