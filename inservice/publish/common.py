"""Shared pieces of the publications: periods and ROC labels, code-list reference views, the report
model that the workbook, HTML and CSV writers render, and the publication tables (stat_*, yearbook_*).
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
from inservice.warehouse.ddl import Column, Table

ALL = "*"  # the "all values" marker of the long stat tables (a total or subtotal row)
UNKNOWN = "未知"  # a teacher whose school is not in the MOE school list

COUNTY_ORDER = codelists.COUNTY_ORDER  # spec §3.1 order
LIGHT_GREEN, LIGHT_YELLOW, LIGHT_RED = "綠燈", "黃燈", "紅燈"
BLOCK_FROM = date(2017, 11, 1)  # from this day a red light blocks registering new courses (spec §7)

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


def as_of_now(value: datetime | str | None = None) -> datetime:
    """The publication's as-of time: Asia/Taipei, whole seconds (it keys the stat tables)."""
    if value is None:
        dt = datetime.now(TAIPEI)
    else:
        dt = datetime.fromisoformat(value) if isinstance(value, str) else value
        dt = dt if dt.tzinfo else dt.replace(tzinfo=TAIPEI)
    return dt.astimezone(TAIPEI).replace(microsecond=0)


# --- reference views ---------------------------------------------------------------------------------
def _codes_table() -> pa.Table:
    """(list, code, label, ord) for every code list the publications label, plus the markers."""
    names = codelists.county_names()
    rows: list[tuple[str, str, str, int]] = []
    for i, code in enumerate(COUNTY_ORDER):
        rows.append(("county", code, names.get(code, code), i))
    rows += [("county", UNKNOWN, UNKNOWN, 900), ("county", ALL, "合計", 999)]
    for name in ("level", "class_type", "category", "organizer_type", "delivery", "time_slot", "tag"):
        rows += [(name, c.code, c.label, i) for i, c in enumerate(codelists.codelist(name))]
        rows.append((name, ALL, "合計", 999))
    rows.append(("level", UNKNOWN, UNKNOWN, 900))
    cols = list(zip(*rows, strict=True))
    return pa.table({"list": cols[0], "code": cols[1], "label": cols[2], "ord": pa.array(cols[3], pa.int32())})


def register_refs(con: duckdb.DuckDBPyConnection) -> None:
    """Zero-copy Arrow views on this connection (nothing written): school list and code labels."""
    con.register("pub_ref_schools", schools().select(["school_code", "county_code", "level"]))
    con.register("pub_ref_codes", _codes_table())
    con.register("pub_ref_institutions", training_institutions())


# --- reading a slice of attendance -------------------------------------------------------------------
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
    if kind == "int":
        return str(int(value))
    if kind in ("dec1", "dec2"):
        places = Decimal("0.1") if kind == "dec1" else Decimal("0.01")
        return str(Decimal(str(value)).quantize(places))
    if isinstance(value, bool):
        return "是" if value else "否"
    return str(value)


# --- publication tables ------------------------------------------------------------------------------
C = Column
_MONTH_COLS = (C("month", "VARCHAR", "統計月份 YYYY-MM"), C("as_of", "TIMESTAMPTZ", "發布時點（資料截至）"))

STAT_TABLES = (
    Table("stat_publications", "統計月報發布紀錄（每次發布一筆；同月份最新者為現行版）", (
        *_MONTH_COLS,
        C("revision", "INTEGER", "版次（同月份第幾次發布）"),
        C("report_date", "DATE", "報表日期（未結案課程計算基準日）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
        C("person_times", "BIGINT", "研習人次（已完成）"),
        C("teachers", "BIGINT", "研習教師數（不重複）"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
        C("files", "VARCHAR", "輸出檔案（JSON 陣列）"),
    )),
    Table("stat_monthly_course_county_level", "表1 課程數及時數：課程縣市 × 研習對象（* 為合計）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼（* 全國）"),
        C("level", "VARCHAR", "研習對象代碼（* 全部對象，每門課計一次）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
    )),
    Table("stat_monthly_teacher_county_level", "表2 研習人次、教師數、核發時數：教師服務學校縣市 × 教育階段", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "學校縣市代碼（未知：學校不在名冊；* 全國）"),
        C("level", "VARCHAR", "學校教育階段（未知；* 全部）"),
        C("person_times", "BIGINT", "研習人次（已完成）"),
        C("teachers", "BIGINT", "教師數（不重複 teacher_key）"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
        C("not_completed", "BIGINT", "未完成人次"),
    )),
    Table("stat_monthly_organizer", "表3 開課單位類別（師資培育之大學逐校列出）", (
        *_MONTH_COLS,
        C("organizer_type", "VARCHAR", "開課單位類別代碼（* 合計）"),
        C("organizer", "VARCHAR", "開課單位名稱（僅類別 3 逐校；* 該類別合計）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
        C("person_times", "BIGINT", "研習人次"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
    )),
    Table("stat_monthly_not_closed", "表4 逾期未結案課程（非學分班，研習迄日後逾 7 日未結案）各單位燈號", (
        *_MONTH_COLS,
        C("report_date", "DATE", "報表日期"),
        C("unit_code", "VARCHAR", "單位代碼"),
        C("unit_name", "VARCHAR", "單位名稱"),
        C("not_closed", "BIGINT", "逾期未結案課程數"),
        C("light", "VARCHAR", "燈號（綠燈 0、黃燈 1–4、紅燈 5 以上）"),
        C("blocked", "BOOLEAN", "停止開課（紅燈，且報表日期在 2017-11-01 以後）"),
    )),
    Table("stat_monthly_not_closed_courses", "表4 明細：逾期未結案課程", (
        *_MONTH_COLS,
        C("unit_code", "VARCHAR", "單位代碼"),
        C("course_code", "VARCHAR", "研習代碼"),
        C("title", "VARCHAR", "研習名稱"),
        C("end_date", "DATE", "研習迄日"),
        C("days_since_end", "INTEGER", "迄日後日數（至報表日期）"),
    )),
    Table("stat_monthly_tags", "表5 屬性標籤課程數（* 為有任一標籤之課程，不重複）", (
        *_MONTH_COLS,
        C("tag", "VARCHAR", "屬性標籤代碼"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
        C("person_times", "BIGINT", "研習人次"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
    )),
    Table("stat_monthly_meeting_flags", "表5 會議名稱課程（W01 含會議名稱、W02 僅為會議名稱）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼"),
        C("unit_code", "VARCHAR", "單位代碼"),
        C("course_code", "VARCHAR", "研習代碼"),
        C("title", "VARCHAR", "研習名稱"),
        C("w01", "BOOLEAN", "W01 名稱含校務會議、學年會議或行政會議"),
        C("w02", "BOOLEAN", "W02 名稱僅為會議名稱"),
    )),
    Table("stat_monthly_transmission", "表6 各單位傳報狀況與查核", (
        *_MONTH_COLS,
        C("unit_code", "VARCHAR", "單位代碼"),
        C("unit_name", "VARCHAR", "單位名稱"),
        C("channel", "VARCHAR", "管道（file、db）"),
        C("files", "BIGINT", "收件檔案數（本資料月份）"),
        C("feed_days", "BIGINT", "資料庫互傳收件日數"),
        C("expected_days", "BIGINT", "應傳日數（資料庫互傳）"),
        C("on_time_files", "BIGINT", "準時檔案數"),
        C("late_files", "BIGINT", "逾期檔案數"),
        C("refused_uploads", "BIGINT", "整批退件數"),
        C("status", "VARCHAR", "狀態（準時、逾期、未傳；完整、缺漏）"),
        C("courses_accepted", "BIGINT", "課程通過筆數"),
        C("courses_rejected", "BIGINT", "課程退件筆數"),
        C("attendance_accepted", "BIGINT", "名單通過筆數"),
        C("attendance_rejected", "BIGINT", "名單退件筆數"),
        C("refusals", "VARCHAR", "退件規則及筆數"),
        C("audit_due", "BOOLEAN", "本月應查核"),
        C("audit_scope", "VARCHAR", "查核範圍"),
    )),
    Table("stat_monthly_refusals", "表6 明細：各單位退件規則筆數", (
        *_MONTH_COLS,
        C("unit_code", "VARCHAR", "單位代碼"),
        C("rule", "VARCHAR", "規則代號"),
        C("rows", "BIGINT", "筆數"),
    )),
    Table("stat_monthly_series", "表7 近 36 個月課程數與研習人次", (
        *_MONTH_COLS,
        C("series_month", "VARCHAR", "月份 YYYY-MM"),
        C("courses", "BIGINT", "課程數"),
        C("person_times", "BIGINT", "研習人次"),
    )),
    Table("stat_monthly_not_closed_county_level", "表4 逾期未結案課程：課程縣市 × 研習對象（* 為合計）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼（* 全國）"),
        C("level", "VARCHAR", "研習對象代碼（* 全部對象，每門課計一次）"),
        C("not_closed", "BIGINT", "逾期未結案課程數"),
    )),
    Table("stat_monthly_not_closed_institution", "表4 逾期未結案課程：師資培育之大學及學科中心（逐一列出，無者為 0）", (
        *_MONTH_COLS,
        C("institution_id", "VARCHAR", "編號（ref_training_institutions）"),
        C("name", "VARCHAR", "名稱"),
        C("kind", "VARCHAR", "類別（university 師資培育之大學、subject_centre 學科中心）"),
        C("not_closed", "BIGINT", "逾期未結案課程數（開課單位為該校或中心）"),
    )),
    Table("yearbook_snapshots", "年報凍結快照（Parquet 檔，內容不再變動）", (
        C("snapshot_id", "VARCHAR", "快照編號"),
        C("year", "INTEGER", "年度"),
        C("taken_at", "TIMESTAMPTZ", "快照時間"),
        C("courses", "BIGINT", "課程筆數"),
        C("attendance", "BIGINT", "名單筆數"),
        C("path", "VARCHAR", "快照資料夾"),
        C("courses_sha256", "VARCHAR", "courses.parquet 雜湊"),
        C("attendance_sha256", "VARCHAR", "attendance.parquet 雜湊"),
    )),
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for t in STAT_TABLES:
        cols = ", ".join(f'"{c.name}" {c.type}' for c in t.columns)
        con.execute(f"CREATE TABLE IF NOT EXISTS main.{t.name} ({cols})")
        con.execute(f"COMMENT ON TABLE main.{t.name} IS {_quote(t.comment)}")
        for c in t.columns:
            con.execute(f'COMMENT ON COLUMN main.{t.name}."{c.name}" IS {_quote(c.comment)}')
