"""Shared pieces of the publications: periods and ROC labels, code-list reference views, the report
model that the workbook, HTML and CSV writers render, and the creation of the publication tables
(stat_*, yearbook_*: declared with every other table in inservice/warehouse/ddl.py).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa

from inservice.config import TAIPEI
from inservice.schemas import codelists
from inservice.schemas.reference import schools, training_institutions
from inservice.schemas.rules import LIGHTS
from inservice.warehouse import ddl
from inservice.warehouse.backend import Connection

ALL = "*"  # the "all values" marker of the long stat tables (a total or subtotal row)
UNKNOWN = "未知"  # a teacher whose school is not in the MOE school list

COUNTY_ORDER = codelists.COUNTY_ORDER  # spec §3.1 order
LIGHT_GREEN, LIGHT_YELLOW, LIGHT_RED = LIGHTS["green"], LIGHTS["yellow"], LIGHTS["red"]

# What a unit sent (an aggregate over its `uploads` rows), counted once for the statistics' table 6 and
# the audit worklist: files, Taipei days of feed runs, on time or late, refused whole, rows by outcome.
SENT_COUNTS = """count(*) FILTER (WHERE channel = 'file') AS files,
    count(DISTINCT CAST(timezone('Asia/Taipei', received_at) AS DATE)) FILTER (WHERE channel = 'db') AS feed_days,
    count(*) FILTER (WHERE channel = 'file' AND on_time) AS on_time_files,
    count(*) FILTER (WHERE channel = 'file' AND NOT coalesce(on_time, false)) AS late_files,
    count(*) FILTER (WHERE status = 'refused') AS refused_uploads,
    coalesce(sum(courses_accepted), 0) AS courses_accepted, coalesce(sum(courses_rejected), 0) AS courses_rejected,
    coalesce(sum(attendance_accepted), 0) AS attendance_accepted,
    coalesce(sum(attendance_rejected), 0) AS attendance_rejected"""

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        m = _MONTH.match(text.strip())
        if not m:
            raise ValueError(f"month must be YYYY-MM, not {text!r}")
        return cls(int(m[1]), int(m[2]))

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def end(self) -> date:
        """The first day of the next month (exclusive bound)."""
        return self.shift(1).start

    @property
    def roc(self) -> str:
        return f"{roc_year(self.year)}{self.month}月"

    def shift(self, months: int) -> Month:
        idx = self.year * 12 + self.month - 1 + months
        return Month(idx // 12, idx % 12 + 1)


def roc_year(year: int) -> str:
    return f"{year - 1911}年"


def parse_year(text: str | int) -> int:
    year = int(text)
    if not 1912 <= year <= 9999:
        raise ValueError(f"year must be a Gregorian year such as 2017, not {text!r}")
    return year


def as_of_now(value: datetime | str | None = None, exact: bool = False) -> datetime:
    """The publication's as-of time: Asia/Taipei, whole seconds (it keys the stat tables); `exact`
    keeps the microseconds (the plans' publications, which tell apart revisions loaded in one second)."""
    if value is None:
        dt = datetime.now(TAIPEI)
    else:
        dt = datetime.fromisoformat(value) if isinstance(value, str) else value
        dt = dt if dt.tzinfo else dt.replace(tzinfo=TAIPEI)
    dt = dt.astimezone(TAIPEI)
    return dt if exact else dt.replace(microsecond=0)


# --- reference views ---------------------------------------------------------------------------------
def _codes_table(tags: pa.Table | None = None, period: tuple[date, date] | None = None) -> pa.Table:
    """(list, code, label, ord) for every code list the publications label, plus the markers.

    Tags come from the register (`tags`, validations.normalize.TAG_REGISTER): those valid at some day
    of `period` [start, end), so a past period lists the tags of its time and a new tag needs no code."""
    names = codelists.county_names()
    rows: list[tuple[str, str, str, int]] = []
    for i, code in enumerate(COUNTY_ORDER):
        rows.append(("county", code, names.get(code, code), i))
    rows += [("county", UNKNOWN, UNKNOWN, 900), ("county", ALL, "合計", 999)]
    for name in ("level", "class_type", "category", "organizer_type", "delivery", "time_slot"):
        rows += [(name, c.code, c.label, i) for i, c in enumerate(codelists.codelist(name))]
        rows.append((name, ALL, "合計", 999))
    for t in (tags.sort_by("position").to_pylist() if tags is not None else []):
        if period is None or (t["valid_from"] < period[1] and (t["valid_to"] is None or t["valid_to"] >= period[0])):
            rows.append(("tag", t["code"], t["short_label"], int(t["position"])))
    rows.append(("tag", ALL, "合計", 999))
    rows.append(("level", UNKNOWN, UNKNOWN, 900))
    cols = list(zip(*rows, strict=True))
    return pa.table({"list": cols[0], "code": cols[1], "label": cols[2], "ord": pa.array(cols[3], pa.int32())})


def register_refs(con: duckdb.DuckDBPyConnection, tags: pa.Table | None = None,
                  period: tuple[date, date] | None = None) -> None:
    """Zero-copy Arrow views on this connection (nothing written): school list and code labels (the
    tags of the register valid in `period`)."""
    con.register("pub_ref_schools", schools().select(["school_code", "county_code", "level"]))
    con.register("pub_ref_codes", _codes_table(tags, period))
    con.register("pub_ref_institutions", training_institutions())


# --- reading a slice of attendance -------------------------------------------------------------------
def course_join(a: str, c: str) -> str:
    """The join condition of attendance `a` to courses `c` on (unit_code, course_code), exact: DuckDB
    hash-joins on one 64-bit hash of the pair and compares the strings only on the matches (a residual
    condition), instead of hashing and comparing two VARCHAR keys for every probe row (measured on 31M
    attendance rows: 18.0 s → 12.4 s under load)."""
    return (f"hash({a}.unit_code, {a}.course_code) = hash({c}.unit_code, {c}.course_code) "
            f"AND ({a}.unit_code = {c}.unit_code AND {a}.course_code = {c}.course_code) IS TRUE")


ROW_GROUP = 122_880  # DuckDB's row-group size: the unit its zone maps prune


def rowid_ranges(con: duckdb.DuckDBPyConnection, blocks_sql: str, alias: str = "a") -> str:
    """A filter on `alias.rowid` keeping only the row groups listed by `blocks_sql` (one column: rowid //
    ROW_GROUP), consecutive groups merged.

    Any query that reads attendance.teacher_key pays for decompressing it in every row group it
    touches (~3.6 s for 20M rows), whatever the selectivity. Uploads append, so a month's or a year's
    rows sit in a few row groups (plus scattered late supplements); this filter lets DuckDB skip the
    others. It only prunes: the caller's join still decides which rows belong, so it is exact even
    when the rows are scattered (then it simply prunes nothing).
    """
    ranges = fetch(con, f"""SELECT min(b) * {ROW_GROUP}, (max(b) + 1) * {ROW_GROUP} - 1 FROM (
            SELECT b, b - row_number() OVER (ORDER BY b) AS island FROM (SELECT DISTINCT * FROM ({blocks_sql}) t(b)))
        GROUP BY island ORDER BY 1""")
    if not ranges:
        return "false"
    return "(" + " OR ".join(f"{alias}.rowid BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in ranges) + ")"


# --- the report model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Col:
    label: str
    kind: str = "int"  # text | int | dec1 | dec2 | date | light
    group: str | None = None  # a spanning header above consecutive columns of the same group


@dataclass(frozen=True)
class Chart:
    title: str
    category: int  # column index of the categories
    bars: tuple[int, ...]  # primary axis
    lines: tuple[int, ...] = ()  # secondary axis
    bar_axis: str = ""
    line_axis: str = ""


@dataclass
class Report:
    key: str  # ascii file stem and HTML anchor
    sheet: str  # Excel sheet name (≤ 31 characters)
    title: str  # Chinese title with the ROC period
    columns: list[Col]
    rows: list[tuple]
    total_rows: int = 0  # trailing rows that are totals (set in bold)
    notes: list[str] = field(default_factory=list)
    chart: Chart | None = None
    subtotal_marker: str | None = None  # rows whose first cell starts with it are subtotals


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def display_width(text: str) -> int:
    """Columns a text takes in a monospace grid: East Asian wide characters count 2."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def fmt_value(value: object, kind: str) -> str:
    """Fixed text form of a cell (CSV and HTML): no float noise, so re-runs are byte-identical."""
    if value is None:
        return ""
    if kind == "int" and isinstance(value, int | float | Decimal):
        return str(int(value))
    if kind in ("dec1", "dec2"):
        places = Decimal("0.1") if kind == "dec1" else Decimal("0.01")
        return str(Decimal(str(value)).quantize(places))
    if isinstance(value, bool):
        return "是" if value else "否"
    return str(value)


# --- publication tables (declared in the warehouse's registry: inservice/warehouse/ddl.py) --------------
def ensure_tables(con: Connection) -> None:
    """The publication tables on `con` (the warehouse, or the statistics' in-memory DuckDB): created
    by the first publication, their added columns by any later one."""
    ddl.ensure(con, ddl.PUBLICATION_TABLES)
