"""The planning survey's four publications per school year (planning-survey.md §5), set-based in
DuckDB on either backend (warehouse/compute.py), as the monthly statistics are:

1. participation (各學年度參與縣市資料) — stat_plan_participation
2. the demand report (填報需求報告) — stat_plan_demand, stat_plan_demand_domains, stat_plan_demand_choices
3. supply against demand (供需對照) — stat_plan_supply, stat_plan_supply_mix
4. plan fulfilment (規劃落實) — stat_plan_fulfilment

Definitions (where the spec is silent, the choice is written here and in the notes):
- Plans are those in force at the as-of time (the latest revision loaded by then; an older as-of
  reads replaced revisions from the history), production area only.
- A school's county is that of the MOE school list (unknown school → 未知); a teacher's county and
  level are those of the school named in the teacher's plan (level: the school's plan, else the
  list, else 未知). Supply is attendance of the school year's courses (start date 8/1..7/31, not
  withdrawn), completed rows only, by the attending teacher's school county.
- Shares of domains: distinct teachers naming the domain ÷ distinct teachers filed. Distributions:
  each row's each code counts once (a mention); share = mentions ÷ all mentions of that list.
- Coverage ratio = granted hours ÷ planned hours; gap = planned − granted hours. Demand vs supply
  shares by time slot and delivery: mentions in teacher plans vs person-times of completed attendance.
- Fulfilment: teachers who planned a domain and completed at least one course of that category in the
  school year, joined on teacher_key only; '*' = teachers who fulfilled at least one planned domain.
- Every run is a publication keyed by (school_year, as_of); earlier ones are kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from inservice.config import Settings
from inservice.publish.common import ALL, UNKNOWN, Chart, Col, Report, as_of_now, fetch, register_refs
from inservice.schemas import codelists
from inservice.schemas.plans import (
    CHOICE_FIELDS,
    FIRST_SCHOOL_YEAR,
    roc_school_year,
    school_year_bounds,
)
from inservice.warehouse import checks, ddl
from inservice.warehouse.analyst import AccessRefresh, WriteSession
from inservice.warehouse.backend import Connection
from inservice.warehouse.compute import Compute, compute_session
from inservice.warehouse.plans import plans_at

PUBLICATIONS = ("participation", "demand", "supply", "fulfilment")
STAT_PLAN = tuple(t.name for t in ddl.STAT_PLAN_TABLES if t.name != "stat_plan_publications")
CHOICE_LISTS = {"modes": "class_type", "times": "time_slot", "places": "place", "tiers": "tier",
                "deliveries": "delivery"}
CHOICE_ZH = {"modes": "進修方式", "times": "進修時間", "places": "進修地點", "tiers": "進修階層",
             "deliveries": "實施方式"}
TITLES = {"participation": "各學年度參與縣市資料", "demand": "教師進修研習規劃填報需求報告",
          "supply": "教師進修研習供需對照", "fulfilment": "教師進修研習規劃落實情形"}
NOT_DELETED = "NOT coalesce({}.is_deleted, false)"


@dataclass(frozen=True)
class PlanPublication:
    school_year: int
    as_of: datetime
    revision: int
    totals: dict
    files: list[str]
    access: AccessRefresh | None = None  # the analysts' refresh after the publication's commit

    def as_json(self) -> dict:
        return {"school_year": f"{self.school_year:03d}", "as_of": self.as_of.isoformat(), "files": self.files,
                "totals": self.totals}


def parse_school_year(text: str | int) -> int:
    year = int(str(text).strip())
    if not FIRST_SCHOOL_YEAR <= year <= 999:
        raise ValueError(f"school year must be an ROC school year from {FIRST_SCHOOL_YEAR}, e.g. 106, not {text!r}")
    return year


def ensure_tables(con: Connection) -> None:
    ddl.ensure(con, ddl.STAT_PLAN_TABLES)


# --- compute: plans + attendance → stat_plan_* ----------------------------------------------------------
def _stage(con: duckdb.DuckDBPyConnection, year: int, as_of: datetime) -> None:
    """The plans in force at as-of (years up to Y), with counties and levels; the year's completed attendance.

    Teachers are counted by `tid`, a small integer standing for the teacher_key within this computation
    (distinct counts over 64-character keys cost several times those over integers); attendance rows
    of teachers without a plan up to Y have none."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pp_school_all AS
        SELECT p.*, coalesce(s.county_code, '{UNKNOWN}') AS county
        FROM ({plans_at('school')}) p LEFT JOIN pub_ref_schools s USING (school_code)
        WHERE p.school_year <= ?""", [as_of, as_of, as_of, year])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pp_teacher_raw AS
        SELECT * FROM ({plans_at('teacher')}) p WHERE p.school_year <= ?""", [as_of, as_of, as_of, year])
    con.execute("""CREATE OR REPLACE TEMP TABLE pp_tid AS
        SELECT teacher_key, CAST(row_number() OVER () AS INTEGER) AS tid
        FROM (SELECT DISTINCT teacher_key FROM pp_teacher_raw WHERE teacher_key IS NOT NULL)""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pp_teacher_all AS
        SELECT p.* EXCLUDE (teacher_key), k.tid, coalesce(s.county_code, '{UNKNOWN}') AS county, s.level AS ref_level
        FROM pp_teacher_raw p LEFT JOIN pp_tid k USING (teacher_key) LEFT JOIN pub_ref_schools s USING (school_code)""")
    con.execute("DROP TABLE pp_teacher_raw")
    con.execute("CREATE OR REPLACE TEMP TABLE pp_school AS SELECT * FROM pp_school_all WHERE school_year = ?", [year])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pp_teacher AS
        SELECT t.*, coalesce(l.school_level, t.ref_level, '{UNKNOWN}') AS level
        FROM pp_teacher_all t LEFT JOIN (SELECT school_code, min(school_level) AS school_level FROM pp_school
                                         GROUP BY school_code) l USING (school_code)
        WHERE t.school_year = ?""", [year])
    first, after = school_year_bounds(year)
    supplied = f"""FROM main.attendance a JOIN main.courses c USING (unit_code, course_code) {{join}}
        WHERE c.start_date >= ? AND c.start_date < ? AND {NOT_DELETED.format('c')} AND {NOT_DELETED.format('a')}
          AND coalesce(a.completed, false)"""
    # one row per course and attendee county: person-times (pt) and granted hours summed
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pp_att AS
        SELECT a.unit_code, a.course_code, c.category AS domain, c.hours, c.time_slot, c.delivery,
               coalesce(s.county_code, '{UNKNOWN}') AS county, count(*) AS pt, sum(a.hours_granted) AS granted
        {supplied.format(join="LEFT JOIN pub_ref_schools s ON s.school_code = a.school_code")}
        GROUP BY ALL""", [first, after])
    # the (teacher, domain) pairs attended by teachers with a plan, joined on the pseudonym only (its
    # own narrow join: carried through pp_att's wide one it costs several times more)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pp_done AS
        SELECT DISTINCT k.tid, c.category AS domain
        {supplied.format(join="JOIN pp_tid k ON k.teacher_key = a.teacher_key")}""", [first, after])


def _all(col: str) -> str:
    return f"CASE WHEN grouping({col}) = 1 THEN '{ALL}' ELSE {col} END"


def compute(con: duckdb.DuckDBPyConnection, year: int, as_of: datetime) -> None:
    _stage(con, year, as_of)
    key = [year, as_of]
    for t in STAT_PLAN:
        con.execute(f"DELETE FROM {t} WHERE school_year = ? AND as_of = ?", key)

    # 1. participation: county × plan year (all years up to Y), '*' = nationwide
    con.execute(f"""INSERT INTO stat_plan_participation
        WITH s AS (SELECT {_all('county')} AS county, school_year, count(DISTINCT school_code) AS n
                   FROM pp_school_all GROUP BY GROUPING SETS ((county, school_year), (school_year))),
        t AS (SELECT {_all('county')} AS county, school_year, count(DISTINCT tid) AS n
              FROM pp_teacher_all GROUP BY GROUPING SETS ((county, school_year), (school_year)))
        SELECT ?, ?, county, school_year, coalesce(s.n, 0), coalesce(t.n, 0)
        FROM s FULL JOIN t USING (county, school_year)""", key)

    # 2. demand: county × school level with every subtotal
    cube = "GROUPING SETS ((county, level), (county), (level), ())"
    con.execute(f"""INSERT INTO stat_plan_demand
        WITH s AS (SELECT {_all('county')} AS county, {_all('level')} AS level, count(DISTINCT school_code) AS n
                   FROM (SELECT county, school_level AS level, school_code FROM pp_school) GROUP BY {cube}),
        t AS (SELECT {_all('county')} AS county, {_all('level')} AS level, count(DISTINCT tid) AS n,
                     sum(planned_hours) AS hours
              FROM pp_teacher GROUP BY {cube})
        SELECT ?, ?, county, level, coalesce(s.n, 0), coalesce(t.n, 0), coalesce(t.hours, 0),
               CASE WHEN coalesce(t.n, 0) > 0 THEN CAST(t.hours AS DOUBLE) / t.n END
        FROM s FULL JOIN t USING (county, level)""", key)
    con.execute(f"""INSERT INTO stat_plan_demand_domains
        WITH d AS (SELECT {_all('county')} AS county, {_all('level')} AS level, domain,
                          count(DISTINCT tid) AS n
                   FROM pp_teacher GROUP BY GROUPING SETS ((county, level, domain), (county, domain), (level, domain),
                                                           (domain)))
        SELECT ?, ?, d.county, d.level, d.domain, d.n, CAST(d.n AS DOUBLE) / t.teachers
        FROM d JOIN stat_plan_demand t ON t.school_year = ? AND t.as_of = ? AND t.county_code = d.county
             AND t.school_level = d.level""", key + key)
    lists = ", ".join(CHOICE_FIELDS)
    for who, table, level in (("school", "pp_school", "school_level"), ("teacher", "pp_teacher", "level")):
        # the five lists in one pass: a row's each code of each list is one mention
        con.execute(f"""INSERT INTO stat_plan_demand_choices
            WITH l AS (SELECT county, level, dimension, v, count(*) AS rows_
                       FROM (UNPIVOT (SELECT county, {level} AS level, {lists} FROM {table})
                             ON {lists} INTO NAME dimension VALUE v) GROUP BY ALL),  -- each list once
            m AS (SELECT county, level, dimension, rows_, unnest(string_split(v, ';')) AS code FROM l),
            g AS (SELECT {_all('county')} AS county, {_all('level')} AS level, dimension, code,
                         CAST(sum(rows_) AS BIGINT) AS n
                  FROM m GROUP BY GROUPING SETS ((county, level, dimension, code), (county, dimension, code),
                                                 (level, dimension, code), (dimension, code)))
            SELECT ?, ?, county, level, ?, dimension, code, n,
                   CAST(n AS DOUBLE) / sum(n) OVER (PARTITION BY county, level, dimension)
            FROM g""", [*key, who])

    # 3. supply against demand: county × domain
    cube = "GROUPING SETS ((county, domain), (county), (domain), ())"
    con.execute(f"""INSERT INTO stat_plan_supply
        WITH d AS (SELECT {_all('county')} AS county, {_all('domain')} AS domain, count(DISTINCT tid) AS n,
                          sum(planned_hours) AS hours
                   FROM pp_teacher GROUP BY {cube}),
        c AS (SELECT {_all('county')} AS county, {_all('domain')} AS domain, count(*) AS courses,
                     sum(hours) AS hours
              FROM (SELECT DISTINCT county, domain, unit_code, course_code, hours FROM pp_att) GROUP BY {cube}),
        a AS (SELECT {_all('county')} AS county, {_all('domain')} AS domain, CAST(sum(pt) AS BIGINT) AS pt,
                     sum(granted) AS granted
              FROM pp_att GROUP BY {cube})
        SELECT ?, ?, county, domain, coalesce(d.n, 0), coalesce(d.hours, 0), coalesce(c.courses, 0),
               coalesce(c.hours, 0), coalesce(a.pt, 0), coalesce(a.granted, 0),
               CASE WHEN coalesce(d.hours, 0) > 0 THEN CAST(coalesce(a.granted, 0) AS DOUBLE) / d.hours END,
               coalesce(d.hours, 0) - coalesce(a.granted, 0)
        FROM d FULL JOIN c USING (county, domain) FULL JOIN a USING (county, domain)""", key)
    for dim, plan_list, course_col in (("time_slot", "times", "time_slot"), ("delivery", "deliveries", "delivery")):
        con.execute(f"""INSERT INTO stat_plan_supply_mix
            WITH dl AS (SELECT county, domain, {plan_list} AS v, count(*) AS rows_ FROM pp_teacher GROUP BY ALL),
            dm AS (SELECT county, domain, rows_, unnest(string_split(v, ';')) AS code FROM dl),
            d AS (SELECT {_all('county')} AS county, {_all('domain')} AS domain, code, CAST(sum(rows_) AS BIGINT) AS n
                  FROM dm GROUP BY GROUPING SETS ((county, domain, code), (county, code), (domain, code), (code))),
            s AS (SELECT {_all('county')} AS county, {_all('domain')} AS domain, {course_col} AS code,
                         CAST(sum(pt) AS BIGINT) AS n
                  FROM pp_att GROUP BY GROUPING SETS ((county, domain, {course_col}), (county, {course_col}),
                                                      (domain, {course_col}), ({course_col})))
            SELECT ?, ?, county, domain, ?, code,
                   coalesce(CAST(d.n AS DOUBLE) / sum(d.n) OVER (PARTITION BY county, domain), 0),
                   coalesce(CAST(s.n AS DOUBLE) / sum(s.n) OVER (PARTITION BY county, domain), 0)
            FROM d FULL JOIN s USING (county, domain, code)""", [*key, dim])

    # 4. fulfilment: (teacher, domain) planned, and attended at least one course of that category. A
    # teacher counts once per total row, as fulfilled when any planned domain of that row was.
    con.execute(f"""INSERT INTO stat_plan_fulfilment
        WITH p AS (SELECT DISTINCT county, domain, tid FROM pp_teacher WHERE tid IS NOT NULL),
        f AS (SELECT p.*, a.tid IS NOT NULL AS done FROM p LEFT JOIN pp_done a USING (tid, domain)),
        g AS (SELECT county, domain, count(*) AS planned, count(*) FILTER (WHERE done) AS attended
              FROM f GROUP BY county, domain
              UNION ALL SELECT county, '{ALL}', count(*), count(*) FILTER (WHERE done)
              FROM (SELECT county, tid, bool_or(done) AS done FROM f GROUP BY county, tid) GROUP BY county
              UNION ALL SELECT '{ALL}', domain, count(*), count(*) FILTER (WHERE done)
              FROM (SELECT domain, tid, bool_or(done) AS done FROM f GROUP BY domain, tid) GROUP BY domain
              UNION ALL SELECT '{ALL}', '{ALL}', count(*), count(*) FILTER (WHERE done)
              FROM (SELECT tid, bool_or(done) AS done FROM f GROUP BY tid))
        SELECT ?, ?, county, domain, planned, attended,
               CASE WHEN planned > 0 THEN CAST(attended AS DOUBLE) / planned END FROM g""", key)


def _totals(con: duckdb.DuckDBPyConnection, key: list) -> dict:
    d = fetch(con, f"""SELECT schools, teachers, planned_hours FROM stat_plan_demand
        WHERE school_year = ? AND as_of = ? AND county_code = '{ALL}' AND school_level = '{ALL}'""", key)
    s = fetch(con, f"""SELECT granted_hours FROM stat_plan_supply
        WHERE school_year = ? AND as_of = ? AND county_code = '{ALL}' AND domain = '{ALL}'""", key)
    schools, teachers, planned = d[0] if d else (0, 0, 0)
    granted = float(s[0][0]) if s else 0.0
    planned = float(planned or 0)
    return {"schools": int(schools), "teachers": int(teachers), "planned_hours": planned,
            "coverage_ratio": round(granted / planned, 4) if planned else None, "granted_hours": granted}


# --- render: stat_plan_* → reports -----------------------------------------------------------------------
def _county_label() -> str:
    return f"""CASE WHEN {{c}} = '{ALL}' THEN '全國' ELSE coalesce((SELECT label FROM pub_ref_codes k
        WHERE k.list = 'county' AND k.code = {{c}}), {{c}}) END"""


def _county_order(col: str) -> str:
    return f"coalesce((SELECT ord FROM pub_ref_codes k WHERE k.list = 'county' AND k.code = {col}), 800)"


def _label(listname: str, code: str) -> str:
    return codelists.label_of(listname, code) if code not in (ALL, UNKNOWN) else {ALL: "合計", UNKNOWN: UNKNOWN}[code]


def render(con: duckdb.DuckDBPyConnection, year: int, as_of: datetime) -> dict[str, list[Report]]:
    key = [year, as_of]
    period = roc_school_year(year)
    county = _county_label()
    out: dict[str, list[Report]] = {}

    # 1. participation
    years = list(range(FIRST_SCHOOL_YEAR, year + 1))
    rows = fetch(con, f"""SELECT county_code, {county.format(c='county_code')}, plan_year, schools, teachers
        FROM stat_plan_participation WHERE school_year = ? AND as_of = ? ORDER BY {_county_order('county_code')}""",
                 key)
    grid: dict[str, dict] = {}
    names: dict[str, str] = {}
    for code, name, plan_year, schools, teachers in rows:
        names[code] = name
        grid.setdefault(code, {})[plan_year] = (schools, teachers)
    counties = [c for c in grid if c != ALL]
    grid_rows = [(names[c], *("●" if grid[c].get(y, (0, 0)) != (0, 0) else "" for y in years)) for c in counties]
    total = grid.get(ALL, {})
    grid_rows.append(("參與學校數(所)", *(total.get(y, (0, 0))[0] for y in years)))
    grid_rows.append(("參與教師數(人)", *(total.get(y, (0, 0))[1] for y in years)))
    current = [(names[c], *grid[c].get(year, (0, 0))) for c in counties]
    current.append(("合計", *total.get(year, (0, 0))))
    out["participation"] = [
        Report("p1_grid", "1 參與縣市", f"各學年度參與縣市資料（{FIRST_SCHOOL_YEAR}至{period}）",
               [Col("縣市", "text"), *(Col(f"{y}學年度", "text") for y in years)],
               [tuple(str(v) for v in r) for r in grid_rows], total_rows=2,
               notes=["● 表示該縣市於該學年度有學校或教師填報規劃。", "縣市依學校代碼對照教育部學校名冊。"]),
        Report("p2_counts", "2 填報數", f"{period}各縣市填報學校數及教師數",
               [Col("縣市", "text"), Col("參與學校數(所)"), Col("參與教師數(人)")], current, total_rows=1),
    ]

    # 2. demand report
    lv = f"CASE WHEN school_level = '{ALL}' THEN '合計' ELSE coalesce((SELECT label FROM pub_ref_codes k " \
         f"WHERE k.list = 'level' AND k.code = school_level), school_level) END"
    order = f"{_county_order('county_code')}, CASE WHEN school_level = '{ALL}' THEN 1 ELSE 0 END, school_level"
    domains = [c.code for c in codelists.CATEGORIES]
    share_cols = ", ".join(f"""coalesce((SELECT 100 * share FROM stat_plan_demand_domains x
        WHERE x.school_year = d.school_year AND x.as_of = d.as_of AND x.county_code = d.county_code
        AND x.school_level = d.school_level
        AND x.domain = '{c}'), 0)""" for c in domains)
    rows = fetch(con, f"""SELECT {county.format(c='county_code')}, {lv}, schools, teachers, planned_hours,
            hours_per_teacher, {share_cols}
        FROM stat_plan_demand d WHERE school_year = ? AND as_of = ? ORDER BY {order}""", key)
    demand = [Report("d1_demand", "1 填報與範疇", f"{period}教師進修研習規劃填報需求（縣市 × 學校教育階段）",
                     [Col("縣市", "text"), Col("教育階段", "text"), Col("填報學校數"), Col("填報教師數"),
                      Col("規劃時數", "dec1"), Col("每位教師規劃時數", "dec1"),
                      *(Col(f"{c} {_label('category', c)}", "dec1", "選填範疇之教師比率（%）") for c in domains)],
                     rows, notes=["教師比率為選填該範疇之教師數占填報教師數之百分比（可複選，合計可逾 100%）。",
                                  "教師之縣市及教育階段依其規劃所填服務學校。"])]
    for who, who_zh in (("school", "學校"), ("teacher", "教師")):
        for dim in CHOICE_FIELDS:
            codes = codelists.codelist(CHOICE_LISTS[dim])
            cells = ", ".join(f"""coalesce(max(100 * share) FILTER (WHERE code = '{c.code}'), 0)""" for c in codes)
            rows = fetch(con, f"""SELECT {county.format(c='county_code')}, {lv}, {cells}
                FROM stat_plan_demand_choices WHERE school_year = ? AND as_of = ? AND who = ? AND dimension = ?
                GROUP BY county_code, school_level ORDER BY {order}""", [*key, who, dim])
            demand.append(Report(f"d_{who}_{dim}", f"{who_zh}{CHOICE_ZH[dim]}",
                                 f"{period}{who_zh}規劃之{CHOICE_ZH[dim]}分布（%）",
                                 [Col("縣市", "text"), Col("教育階段", "text"),
                                  *(Col(f"{c.code} {c.label}", "dec1") for c in codes)], rows,
                                 notes=["每列每代碼計一次勾選；比率為占該項目勾選總次數之百分比。"]))
    out["demand"] = demand

    # 3. supply against demand, largest gaps first
    dom = f"CASE WHEN domain = '{ALL}' THEN '合計' ELSE domain || ' ' || coalesce((SELECT label FROM pub_ref_codes k " \
          f"WHERE k.list = 'category' AND k.code = domain), domain) END"
    rows = fetch(con, f"""SELECT {county.format(c='county_code')}, {dom}, teachers, planned_hours, courses,
            course_hours, person_times, granted_hours,
            CASE WHEN coverage_ratio IS NULL THEN NULL ELSE 100 * coverage_ratio END, gap_hours
        FROM stat_plan_supply WHERE school_year = ? AND as_of = ? AND county_code <> '{ALL}' AND domain <> '{ALL}'
        ORDER BY gap_hours DESC, {_county_order('county_code')}, domain""", key)
    national = fetch(con, f"""SELECT '全國', '合計', teachers, planned_hours, courses, course_hours, person_times,
            granted_hours, CASE WHEN coverage_ratio IS NULL THEN NULL ELSE 100 * coverage_ratio END, gap_hours
        FROM stat_plan_supply WHERE school_year = ? AND as_of = ? AND county_code = '{ALL}' AND domain = '{ALL}'""",
                  key)
    cols = [Col("縣市", "text"), Col("研習範疇", "text"), Col("規劃教師數", "int", "需求"),
            Col("規劃時數", "dec1", "需求"), Col("課程數", "int", "供給"), Col("課程時數", "dec1", "供給"),
            Col("研習人次", "int", "供給"), Col("核發時數", "dec1", "供給"), Col("涵蓋率（%）", "dec1"),
            Col("缺口時數", "dec1")]
    top = [r for r in rows if r[9] and r[9] > 0][:20]
    supply = [
        Report("s1_supply", "1 供需對照", f"{period}各縣市研習範疇供需對照（缺口大者在前）", cols, rows + national,
               total_rows=len(national),
               notes=["需求為教師規劃時數；供給為該縣市教師（依服務學校）於本學年度完成研習之核發時數。",
                      "涵蓋率 = 核發時數 ÷ 規劃時數；缺口時數 = 規劃時數 − 核發時數。"]),
        Report("s2_gaps", "2 缺口圖", f"{period}供需缺口最大之縣市研習範疇（前 20）",
               [Col("縣市・範疇", "text"), Col("規劃時數", "dec1"), Col("核發時數", "dec1"), Col("缺口時數", "dec1")],
               [(f"{r[0]}・{r[1]}", r[3], r[7], r[9]) for r in top],
               chart=Chart(f"{period}供需缺口（規劃時數與核發時數）", 0, (1, 2), (), "時數")),
    ]
    for dim, zh, listname in (("time_slot", "研習時段", "time_slot"), ("delivery", "實施方式", "delivery")):
        rows = fetch(con, f"""SELECT code, 100 * demand_share, 100 * supply_share FROM stat_plan_supply_mix
            WHERE school_year = ? AND as_of = ? AND county_code = '{ALL}' AND domain = '{ALL}' AND dimension = ?
            ORDER BY code""", [*key, dim])
        supply.append(Report(f"s_{dim}", f"{len(supply) + 1} {zh}", f"{period}{zh}之需求與供給比率（全國，%）",
                             [Col(zh, "text"), Col("需求比率", "dec1"), Col("供給比率", "dec1")],
                             [(f"{c} {_label(listname, c)}", d, s) for c, d, s in rows],
                             notes=["需求比率：教師規劃勾選次數占比；供給比率：研習人次占比。"]))
    out["supply"] = supply

    # 4. fulfilment
    rows = fetch(con, f"""SELECT {county.format(c='county_code')}, {dom}, planned_teachers, attended_teachers,
            100 * share FROM stat_plan_fulfilment WHERE school_year = ? AND as_of = ?
        ORDER BY CASE WHEN county_code = '{ALL}' THEN 1 ELSE 0 END, {_county_order('county_code')},
                 CASE WHEN domain = '{ALL}' THEN 1 ELSE 0 END, domain""", key)
    out["fulfilment"] = [Report("f1_fulfilment", "1 規劃落實", f"{period}教師進修研習規劃落實情形（縣市 × 研習範疇）",
                                [Col("縣市", "text"), Col("研習範疇", "text"), Col("規劃教師數"),
                                 Col("已完成該範疇研習之教師數"), Col("落實比率（%）", "dec1")], rows,
                                notes=["規劃某範疇之教師中，本學年度完成至少一門該範疇（課程類別）研習者之比率。",
                                       "「合計」範疇：至少落實一個所規劃範疇之教師。"])]
    return out


def _pull_inputs(cx: Compute, year: int) -> None:
    """On PostgreSQL: the plans up to Y (in force and replaced) and their revisions, the year's courses and
    their attendance, and the year's earlier publications, into the compute DuckDB."""
    for table in ("school_plans", "school_plans_history", "teacher_plans", "teacher_plans_history",
                  "plan_revisions"):
        cx.pull(f"main.{table}", "school_year <= ?", [year])
    first, after = school_year_bounds(year)
    window = "start_date >= ? AND start_date < ?"
    cx.pull("main.courses", window, [first, after])
    cx.pull("main.attendance", f"""(unit_code, course_code) IN (
        SELECT unit_code, course_code FROM main.courses WHERE {window})""", [first, after])
    cx.pull("main.stat_plan_publications", "school_year = ?", [year])


def plans_dir(settings: Settings, year: int) -> Path:
    return settings.home / "publish" / "plans" / f"{year:03d}"


def publish_plans(settings: Settings, school_year: str | int, as_of: datetime | str | None = None) -> PlanPublication:
    """Compute school year Y's four publications into the stat_plan_* tables, write each one's workbook
    and HTML page, record the publication — all or nothing; refused while a blocking check fails."""
    from inservice.publish.html import write_html
    from inservice.publish.workbook import write_workbook

    year = parse_school_year(school_year)
    as_of_dt = as_of_now(as_of, exact=True)
    out = plans_dir(settings, year)
    period = roc_school_year(year)
    session = WriteSession(settings)
    with session as wh, compute_session(wh) as cx:
        checks.require_passing(wh.con, settings.archive_cutoff, f"planning survey statistics {period}")
        con = cx.con
        cx.run(ensure_tables)
        register_refs(con)
        _pull_inputs(cx, year)
        with cx.transaction():
            earlier = fetch(con, "SELECT revision FROM stat_plan_publications WHERE school_year = ? AND as_of = ?",
                            [year, as_of_dt])
            con.execute("DELETE FROM stat_plan_publications WHERE school_year = ? AND as_of = ?", [year, as_of_dt])
            revision = earlier[0][0] if earlier else fetch(
                con, "SELECT coalesce(max(revision), 0) + 1 FROM stat_plan_publications WHERE school_year = ?",
                [year])[0][0]
            compute(con, year, as_of_dt)
            key = [year, as_of_dt]
            totals = _totals(con, key)
            # the exports in force at as-of (a row a revision repeated keeps its first upload's id)
            used = dict(fetch(con, """SELECT kind, upload_id FROM main.plan_revisions WHERE school_year = ?
                AND loaded_at <= ? AND (replaced_at IS NULL OR replaced_at > ?)""", [year, as_of_dt, as_of_dt]))
            files = [str(out / f"plans-{year:03d}-{name}.{ext}") for name in PUBLICATIONS for ext in ("xlsx", "html")]
            con.execute("INSERT INTO stat_plan_publications VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [year, as_of_dt, revision, used.get("school"), used.get("teacher"), totals["schools"],
                         totals["teachers"], totals["planned_hours"], totals["granted_hours"],
                         totals["coverage_ratio"], json.dumps(files)])
            for t in (*STAT_PLAN, "stat_plan_publications"):
                cx.push(t, "school_year = ? AND as_of = ?", key)
            reports = render(con, year, as_of_dt)
            subtitle = f"資料截至 {as_of_dt:%Y-%m-%d %H:%M:%S}（臺北時間）・第 {revision} 版・正式版資料庫"
            out.mkdir(parents=True, exist_ok=True)
            for i, name in enumerate(PUBLICATIONS):
                title = f"{period}{TITLES[name]}"
                write_workbook(Path(files[2 * i]), reports[name], title, subtitle, _notes(year, as_of_dt, revision))
                write_html(Path(files[2 * i + 1]), reports[name], title, subtitle, _notes(year, as_of_dt, revision))
            kept = out / "revisions" / f"r{revision}-{as_of_dt:%Y%m%dT%H%M%S%f}"
            kept.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, kept / Path(f).name)
    public = {k: v for k, v in totals.items() if k != "granted_hours"}
    return PlanPublication(year, as_of_dt, revision, public, files, session.refresh)


def _notes(year: int, as_of: datetime, revision: int) -> list[tuple[str, str]]:
    first, after = school_year_bounds(year)
    return [
        ("學年度", f"{roc_school_year(year)}（{first} 至 {after - timedelta(days=1)}）"),
        ("資料截至", f"{as_of.isoformat()}（第 {revision} 版；較早版本均保留）"),
        ("規劃資料", "學校本位暨教師自我專業進修規劃之最新匯出版（資料截至時點已載入者）；"
                 "同學年度之新匯出整批取代前版。"),
        ("縣市", "學校之縣市依教育部學校名冊；教師之縣市及教育階段依其規劃所填服務學校；名冊查無者列為「未知」。"),
        ("供給", "本學年度（8 月 1 日至次年 7 月 31 日）開始之研習課程中，已完成研習（核發時數）之名單，"
                "依研習教師服務學校之縣市；範疇為課程類別。"),
        ("涵蓋率", "核發時數 ÷ 規劃時數；缺口時數 = 規劃時數 − 核發時數。"),
        ("規劃落實", "規劃某範疇之教師中，本學年度完成至少一門該範疇研習者之比率；以無法回推身分之教師代碼比對。"),
        ("個資", "本報表不含身分證字號與姓名；教師以無法回推身分之代碼識別，僅供統計。"),
    ]
