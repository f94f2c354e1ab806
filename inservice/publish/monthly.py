"""Monthly statistics (教師在職進修統計月報, spec §7), computed set-based in DuckDB.

Definitions (where the spec is silent, the choice is written here and in the notes sheet):
- A course belongs to the month of its start_date; attendance to its course's month.
- Production data only (schema main), rows with is_deleted false; attendance of a withdrawn course
  is left out with its course.
- 人次 (person-times) counts completed attendance rows (hours granted); 教師數 counts distinct
  teacher_key among them; 核發時數 sums hours_granted. Rows not completed are shown as 未完成人次.
- A teacher's county and level are those of the school in the school register on the course's start
  date (registers/schools.py); a school not in it that day → 未知. Units appear with the name they had
  on the month's last day (registers/units.py).
- Lights (table 4) are per organizer (開課單位 within its unit), as of the report date (the as-of
  day; 31 December for a December report, since a light counts its calendar year's courses): the
  courses counting toward it that day, by the one definition of validations/lights.py (C11 and the
  warehouse view organizer_light_courses use it too). Every organizer with a course started in the
  year up to that day is listed (green when none counts); an organizer's county is the county of
  most of its courses that year. Summed per county (and nationally) in stat_monthly_lights_county.
- Tags (table 5) national and per course county, labelled from the tag register: the tags valid at
  some day of the month, so a past month lists the tags of its time.
- Every run is a publication keyed by (month, as_of); earlier ones are kept, the latest is current.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from inservice.config import Settings
from inservice.publish.common import (
    ALL,
    LIGHT_GREEN,
    LIGHT_RED,
    LIGHT_YELLOW,
    ROW_GROUP,
    SENT_COUNTS,
    UNKNOWN,
    Chart,
    Col,
    Month,
    Report,
    as_of_now,
    course_join,
    ensure_tables,
    fetch,
    register_refs,
    rowid_ranges,
)
from inservice.registers import units as units_register
from inservice.registers.schools import VALID_ON
from inservice.schemas import codelists
from inservice.schemas.plans import owes_monthly
from inservice.schemas.rules import C11_FROM, LIGHT_RED_AT
from inservice.validations import lights
from inservice.warehouse import checks
from inservice.warehouse.analyst import AccessRefresh, WriteSession
from inservice.warehouse.compute import Compute, compute_session

SERIES_MONTHS = 36
ONE_DAY = timedelta(days=1)
STAT_MONTHLY = ("stat_monthly_course_county_level", "stat_monthly_teacher_county_level", "stat_monthly_organizer",
                "stat_monthly_not_closed", "stat_monthly_lights_county", "stat_monthly_not_closed_courses",
                "stat_monthly_tags",
                "stat_monthly_meeting_flags", "stat_monthly_transmission", "stat_monthly_refusals",
                "stat_monthly_series", "stat_monthly_not_closed_county_level",
                "stat_monthly_not_closed_institution")
COURSE_LEVELS = [c.code for c in codelists.LEVELS]  # K E J S V X A (A 不限 is its own column)
SCHOOL_LEVELS = [c.code for c in codelists.LEVELS if c.code != "A"] + [UNKNOWN]
NOT_DELETED = "NOT coalesce({}.is_deleted, false)"


@dataclass(frozen=True)
class Publication:
    month: str
    as_of: datetime
    revision: int
    report_date: date
    totals: dict
    files: list[str]
    access: AccessRefresh | None = None  # the analysts' refresh after the publication's commit

    def as_json(self) -> dict:
        return {"month": self.month, "as_of": self.as_of.isoformat(), "revision": self.revision,
                "report_date": self.report_date.isoformat(), "files": self.files, "totals": self.totals}


# --- compute: warehouse → stat_* (long tables keyed by month, as_of) ---------------------------------
def _stage(con: duckdb.DuckDBPyConnection, m: Month) -> None:
    """The month's courses and their attendance, once; every table below reads these temp tables.

    Attendance is read in two passes: the cheap key columns over the whole table (also giving the
    36-month series and the row groups that hold month M), then teacher_key and the rest only from
    those row groups (see common.rowid_ranges)."""
    first = m.shift(1 - SERIES_MONTHS)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_courses AS
        SELECT unit_code, course_code, title, organizer, organizer_type, county_code, hours, class_type,
               audience, tags, upload_id, start_date
        FROM main.courses c WHERE start_date >= ? AND start_date < ? AND {NOT_DELETED.format('c')}""",
                [m.start, m.end])
    # the register as it stood on the month's last day: a unit renamed later keeps its name of then
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_units AS
        SELECT u.unit_code, coalesce(v.name, u.name) AS name, coalesce(v.channel, u.channel) AS channel, u.state,
               u.joined, coalesce(v.county_code, u.county_code) AS county_code
        FROM units u LEFT JOIN ({units_register.VERSIONS_ON}) v USING (unit_code)""", [m.end - ONE_DAY] * 2)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_window AS
        SELECT unit_code, course_code, CAST(date_trunc('month', start_date) AS DATE) AS sm FROM main.courses c
        WHERE start_date >= ? AND start_date < ? AND {NOT_DELETED.format('c')}""", [first.start, m.end])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_window_att AS
        SELECT w.sm, CASE WHEN w.sm = ? THEN a.rowid // {ROW_GROUP} END AS block,
               count(*) FILTER (WHERE coalesce(a.completed, false)) AS person_times
        FROM main.attendance a JOIN pm_window w ON {course_join('a', 'w')}
        WHERE {NOT_DELETED.format('a')} GROUP BY ALL""", [m.start])
    within = rowid_ranges(con, "SELECT block FROM pm_window_att WHERE block IS NOT NULL")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_att AS
        SELECT a.unit_code, a.course_code, a.teacher_key, a.hours_granted, coalesce(a.completed, false) AS completed,
               coalesce(s.county_code, '{UNKNOWN}') AS t_county, coalesce(s.level, '{UNKNOWN}') AS t_level
        FROM main.attendance a JOIN pm_courses c USING (unit_code, course_code)
        LEFT JOIN main.school_register s ON s.school_code = a.school_code AND {VALID_ON.format(d='c.start_date')}
        WHERE {within} AND {NOT_DELETED.format('a')}""")
    # per-course attendance figures, for the tables keyed by course attributes
    con.execute("""CREATE OR REPLACE TEMP TABLE pm_course_att AS
        SELECT unit_code, course_code, count(*) FILTER (WHERE completed) AS person_times,
               coalesce(sum(hours_granted), 0) AS granted_hours
        FROM pm_att GROUP BY ALL""")


def light_day(m: Month, report_date: date) -> date:
    """The day table 4's lights are judged on: the report date, but at most 31 December of the month's
    year (a light counts the courses of its calendar year: December's report shows the year's end)."""
    return min(report_date, date(m.year, 12, 31))


def compute(con: duckdb.DuckDBPyConnection, m: Month, as_of: datetime, report_date: date,
            block_from: date = C11_FROM) -> None:
    _stage(con, m)
    key = [m.key, as_of]
    for t in STAT_MONTHLY:
        con.execute(f"DELETE FROM {t} WHERE month = ? AND as_of = ?", key)

    # 1. courses by course county × audience level; '*' level counts each course once
    con.execute(f"""INSERT INTO stat_monthly_course_county_level
        SELECT ?, ?, coalesce(county_code, '{ALL}'), level, count(*), coalesce(sum(hours), 0)
        FROM (SELECT county_code, unnest(string_split(audience, ';')) AS level, hours FROM pm_courses
              UNION ALL SELECT county_code, '{ALL}' AS level, hours FROM pm_courses)
        GROUP BY GROUPING SETS ((county_code, level), (level))""", key)

    # 2. attendance by the teacher's school county × level, with all subtotals (distinct teachers per cell)
    con.execute(f"""INSERT INTO stat_monthly_teacher_county_level
        SELECT ?, ?, CASE WHEN grouping(t_county) = 1 THEN '{ALL}' ELSE t_county END,
               CASE WHEN grouping(t_level) = 1 THEN '{ALL}' ELSE t_level END,
               count(*) FILTER (WHERE completed), count(DISTINCT teacher_key) FILTER (WHERE completed),
               coalesce(sum(hours_granted), 0), count(*) FILTER (WHERE NOT completed)
        FROM pm_att GROUP BY CUBE (t_county, t_level)""", key)

    # 3. organizer types; teacher-training universities (type 3) one by one
    con.execute(f"""INSERT INTO stat_monthly_organizer
        WITH c AS (SELECT c.organizer_type, c.organizer, c.hours, coalesce(a.person_times, 0) AS pt,
                          coalesce(a.granted_hours, 0) AS gh
                   FROM pm_courses c LEFT JOIN pm_course_att a USING (unit_code, course_code))
        SELECT ?, ?, coalesce(organizer_type, '{ALL}'), '{ALL}', count(*), coalesce(sum(hours), 0),
               coalesce(sum(pt), 0), coalesce(sum(gh), 0)
        FROM c GROUP BY GROUPING SETS ((organizer_type), ())
        UNION ALL
        SELECT ?, ?, organizer_type, organizer, count(*), sum(hours), sum(pt), sum(gh)
        FROM c WHERE organizer_type = '3' GROUP BY organizer_type, organizer""", key + key)

    # 4. lights per organizer within its unit, on the light day (validations/lights.py), and per county
    day = light_day(m, report_date)
    light_label = f"""CASE WHEN not_closed = 0 THEN '{LIGHT_GREEN}' WHEN not_closed < {LIGHT_RED_AT}
                           THEN '{LIGHT_YELLOW}' ELSE '{LIGHT_RED}' END"""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_not_closed AS
        SELECT s.unit_code, s.organizer, s.course_code, c.title, c.county_code, s.end_date,
               CAST(?::DATE - s.end_date AS INTEGER) AS days_since_end
        FROM ({lights.spans_sql("main.courses")}) s JOIN main.courses c USING (unit_code, course_code)
        WHERE ?::DATE BETWEEN s.counts_from AND s.counts_until""", [day, day])
    con.execute("""INSERT INTO stat_monthly_not_closed_courses (month, as_of, unit_code, organizer, county_code,
            course_code, title, end_date, days_since_end)
        SELECT ?, ?, unit_code, organizer, county_code, course_code, title, end_date, days_since_end
        FROM pm_not_closed""", key)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_organizers AS
        WITH o AS (SELECT unit_code, organizer, county_code FROM main.courses c
                   WHERE {NOT_DELETED.format('c')} AND start_date >= ? AND start_date < ?
                   UNION ALL SELECT unit_code, organizer, county_code FROM pm_not_closed),
        k AS (SELECT unit_code, organizer, county_code, count(*) AS n FROM o GROUP BY ALL)
        SELECT unit_code, organizer, first(county_code ORDER BY n DESC, county_code) AS county_code
        FROM k GROUP BY unit_code, organizer""", [date(day.year, 1, 1), min(day + timedelta(days=1), m.end)])
    con.execute(f"""INSERT INTO stat_monthly_not_closed (month, as_of, report_date, unit_code, unit_name, organizer,
            county_code, not_closed, light, blocked)
        WITH n AS (SELECT unit_code, organizer, count(*) AS not_closed FROM pm_not_closed GROUP BY ALL),
        r AS (SELECT o.unit_code, u.name, o.organizer, o.county_code, coalesce(n.not_closed, 0) AS not_closed
              FROM pm_organizers o LEFT JOIN n USING (unit_code, organizer)
              LEFT JOIN pm_units u ON u.unit_code = o.unit_code)
        SELECT ?, ?, ?::DATE, unit_code, name, organizer, county_code, not_closed, {light_label},
               not_closed >= {LIGHT_RED_AT} AND ?::DATE >= ?::DATE
        FROM r""", [*key, day, day, block_from])
    con.execute(f"""INSERT INTO stat_monthly_lights_county (month, as_of, county_code, organizers, green, yellow, red,
            not_closed)
        SELECT ?, ?, coalesce(county_code, '{ALL}'), count(*), count(*) FILTER (WHERE not_closed = 0),
               count(*) FILTER (WHERE not_closed BETWEEN 1 AND {LIGHT_RED_AT - 1}),
               count(*) FILTER (WHERE not_closed >= {LIGHT_RED_AT}), coalesce(sum(not_closed), 0)
        FROM stat_monthly_not_closed WHERE month = ? AND as_of = ?
        GROUP BY GROUPING SETS ((county_code), ())""", [*key, *key])

    _not_closed_by_level(con, key)

    # 5. attribute tags, national and per course county (a course counts under each of its tags;
    #    '*' = courses with any tag, once)
    con.execute(f"""INSERT INTO stat_monthly_tags (month, as_of, county_code, tag, courses, course_hours,
            person_times, granted_hours)
        WITH c AS (SELECT c.unit_code, c.course_code, c.county_code, c.hours, c.tags,
                          coalesce(a.person_times, 0) AS pt, coalesce(a.granted_hours, 0) AS gh
                   FROM pm_courses c LEFT JOIN pm_course_att a USING (unit_code, course_code)
                   WHERE coalesce(c.tags, '') <> ''),
        t AS (SELECT county_code, unnest(string_split(tags, ';')) AS tag, hours, pt, gh FROM c
              UNION ALL SELECT county_code, '{ALL}', hours, pt, gh FROM c)
        SELECT ?, ?, coalesce(county_code, '{ALL}'), tag, count(*), sum(hours), sum(pt), sum(gh)
        FROM t GROUP BY GROUPING SETS ((county_code, tag), (tag))""", key)
    #    meeting-title flags: the findings of the upload that last wrote the course (its current content)
    con.execute("""INSERT INTO stat_monthly_meeting_flags
        SELECT ?, ?, c.county_code, c.unit_code, c.course_code, c.title,
               bool_or(f.rule = 'W01') OR bool_or(f.rule = 'W02'), bool_or(f.rule = 'W02')
        FROM pm_courses c JOIN findings f ON f.upload_id = c.upload_id AND f.course_code = c.course_code
        WHERE f.rule IN ('W01', 'W02') AND f.record = 'course'
        GROUP BY ALL""", key)

    # 6. transmission status per unit for data month M, and the audit cadence (spec §7)
    _transmission(con, m, key, report_date)

    # 7. the 36-month series ending at M (attendance counted in the staging pass)
    first = m.shift(1 - SERIES_MONTHS)
    con.execute("""INSERT INTO stat_monthly_series
        WITH cc AS (SELECT sm, count(*) AS n FROM pm_window GROUP BY sm),
        pt AS (SELECT sm, sum(person_times) AS n FROM pm_window_att GROUP BY sm),
        months AS (SELECT CAST(d AS DATE) AS sm FROM generate_series(?::DATE, ?::DATE, INTERVAL 1 MONTH) g(d))
        SELECT ?, ?, strftime(months.sm, '%Y-%m'), coalesce(cc.n, 0), coalesce(pt.n, 0)
        FROM months LEFT JOIN cc USING (sm) LEFT JOIN pt USING (sm)""", [first.start, m.start, *key])


def _not_closed_by_level(con: duckdb.DuckDBPyConnection, key: list) -> None:
    """Table 4's not-closed courses (pm_not_closed) by course county × audience level, and by
    teacher-training university / subject centre (the reference list, each listed, 0 when none)."""
    con.execute("""CREATE OR REPLACE TEMP TABLE pm_nc AS
        SELECT c.unit_code, c.course_code, c.county_code, c.audience, c.organizer
        FROM main.courses c JOIN (SELECT DISTINCT unit_code, course_code FROM pm_not_closed) n
             USING (unit_code, course_code)""")
    con.execute(f"""INSERT INTO stat_monthly_not_closed_county_level
        SELECT ?, ?, coalesce(county_code, '{ALL}'), level, count(*)
        FROM (SELECT county_code, unnest(string_split(audience, ';')) AS level FROM pm_nc
              UNION ALL SELECT county_code, '{ALL}' AS level FROM pm_nc)
        GROUP BY GROUPING SETS ((county_code, level), (level))""", key)
    con.execute("""INSERT INTO stat_monthly_not_closed_institution
        SELECT ?, ?, i.institution_id, i.name, i.kind, count(n.course_code)
        FROM pub_ref_institutions i LEFT JOIN pm_nc n ON trim(n.organizer) = i.name
        GROUP BY ALL""", key)


def _transmission(con: duckdb.DuckDBPyConnection, m: Month, key: list, report_date: date) -> None:
    # daily feeds are expected for each day of M that has passed by the report date
    expected_days = max(0, (min(m.end, report_date) - m.start).days)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE pm_uploads AS
        SELECT * FROM uploads
        WHERE area = 'production' AND status <> 'duplicate' AND {owes_monthly()}
          AND replay_of IS NULL  -- a replay is no new file
          AND (data_month = ? OR (data_month IS NULL
              AND strftime(timezone('Asia/Taipei', received_at), '%Y-%m') = ?))""", [m.key, m.key])
    con.execute("""INSERT INTO stat_monthly_refusals
        SELECT ?, ?, u.unit_code, f.rule, count(*) FROM findings f JOIN pm_uploads u USING (upload_id)
        WHERE f.severity = 'error' GROUP BY ALL""", key)
    con.execute(f"""INSERT INTO stat_monthly_transmission
        WITH p AS (
            SELECT unit_code, {SENT_COUNTS} FROM pm_uploads GROUP BY unit_code),
        r AS (SELECT unit_code, string_agg(rule || '×' || "rows", '、' ORDER BY rule) AS refusals
              FROM stat_monthly_refusals WHERE month = ? AND as_of = ? GROUP BY unit_code),
        u AS (SELECT unit_code, name, channel, joined FROM pm_units WHERE state = 'production' AND joined < ?
              AND {owes_monthly()}
              UNION ALL SELECT DISTINCT unit_code, NULL, NULL, NULL FROM pm_uploads
              WHERE unit_code NOT IN (SELECT unit_code FROM pm_units WHERE state = 'production' AND joined < ?)),
        a AS (SELECT *, (? * 12 + ?) - (year(joined) * 12 + month(joined)) AS since FROM u)
        SELECT ?, ?, a.unit_code, a.name, coalesce(a.channel, 'file'),
            coalesce(p.files, 0), coalesce(p.feed_days, 0), CASE WHEN a.channel = 'db' THEN ? ELSE 0 END,
            coalesce(p.on_time_files, 0), coalesce(p.late_files, 0), coalesce(p.refused_uploads, 0),
            CASE WHEN a.channel = 'db' THEN
                     CASE WHEN coalesce(p.feed_days, 0) = 0 THEN '未傳'
                          WHEN p.feed_days >= ? THEN '完整' ELSE '缺漏 ' || (? - p.feed_days) || ' 日' END
                 WHEN coalesce(p.files, 0) = 0 THEN '未傳'
                 WHEN p.on_time_files > 0 THEN '準時' ELSE '逾期' END,
            coalesce(p.courses_accepted, 0), coalesce(p.courses_rejected, 0), coalesce(p.attendance_accepted, 0),
            coalesce(p.attendance_rejected, 0), r.refusals,
            -- first 12 months after joining: every month; then January, April, July, October
            a.since IS NOT NULL AND a.since >= 0 AND (a.since < 12 OR ? IN (1, 4, 7, 10)),
            CASE WHEN a.since IS NULL OR a.since < 0 THEN NULL
                 WHEN a.since < 12 THEN '每月查核（加入未滿 12 個月）'
                 WHEN ? IN (4, 7, 10) THEN '每季查核'
                 WHEN ? = 1 THEN '每季查核' ELSE NULL END
              || CASE WHEN ? = 1 AND a.since >= 1 THEN '＋前一年度全年查核' ELSE '' END
        FROM a LEFT JOIN p USING (unit_code) LEFT JOIN r USING (unit_code)""",
                [*key, m.end, m.end, m.year, m.month, *key, expected_days, expected_days, expected_days,
                 m.month, m.month, m.month, m.month])


# --- render: stat_* → reports -------------------------------------------------------------------------
def _county_rows(con: duckdb.DuckDBPyConnection, table: str, values: list[tuple[str, str]], key: list,
                 extra_keys: tuple[str, ...] = ()) -> list[tuple]:
    """Pivot a (county, level) long table: one row per county in spec order, then 未知 and 合計.

    `values` are (level, measure) pairs, one output column each."""
    cells = ", ".join(f"coalesce(max(s.{measure}) FILTER (WHERE s.level = '{level}'), 0)"
                      for level, measure in values)
    shown = ", ".join(f"'{k}'" for k in ("*", *extra_keys))
    return fetch(con, f"""
        WITH s AS (SELECT * FROM {table} WHERE month = ? AND as_of = ?),
        k AS (SELECT code, label, ord FROM pub_ref_codes WHERE list = 'county'
                  AND (code NOT IN ('{UNKNOWN}', '*') OR code IN ({shown}))
              UNION ALL SELECT DISTINCT county_code, county_code, 800 FROM s
                  WHERE county_code NOT IN (SELECT code FROM pub_ref_codes WHERE list = 'county'))
        SELECT k.label, {cells} FROM k LEFT JOIN s ON s.county_code = k.code
        GROUP BY k.code, k.label, k.ord ORDER BY k.ord, k.code""", key)


def _label(list_name: str, code: str) -> str:
    return UNKNOWN if code == UNKNOWN else codelists.label_of(list_name, code)


def render(con: duckdb.DuckDBPyConnection, m: Month, as_of: datetime) -> list[Report]:
    key = [m.key, as_of]
    period = m.roc
    reports: list[Report] = []

    values = [(lv, meas) for lv in COURSE_LEVELS for meas in ("courses", "course_hours")]
    values += [(ALL, "courses"), (ALL, "course_hours")]
    cols = [Col("縣市", "text")]
    for lv in [*COURSE_LEVELS, ALL]:
        group = "合計" if lv == ALL else _label("level", lv)
        cols += [Col("課程數", "int", group), Col("時數", "dec1", group)]
    reports.append(Report("t1_courses", "1 課程縣市別", f"表1 {period}各縣市研習課程數及時數（依研習對象）", cols,
                          _county_rows(con, "stat_monthly_course_county_level", values, key), total_rows=1,
                          notes=["課程依研習起日歸屬月份；縣市為課程之縣市代碼。",
                                 "開放多個研習對象之課程於各對象欄各計一次，合計欄僅計一次；「不限」為研習對象 A。"]))

    values = [(lv, meas) for lv in SCHOOL_LEVELS for meas in ("person_times", "teachers", "granted_hours")]
    values += [(ALL, "person_times"), (ALL, "teachers"), (ALL, "granted_hours"), (ALL, "not_completed")]
    cols = [Col("縣市", "text")]
    for lv in SCHOOL_LEVELS:
        cols += [Col("人次", "int", _label("level", lv)), Col("教師數", "int", _label("level", lv)),
                 Col("核發時數", "dec1", _label("level", lv))]
    cols += [Col("人次", "int", "合計"), Col("教師數", "int", "合計"), Col("核發時數", "dec1", "合計"),
             Col("未完成人次", "int", "合計")]
    reports.append(Report("t2_teachers", "2 教師縣市別",
                          f"表2 {period}研習人次、教師數及核發時數（依教師服務學校縣市及教育階段）", cols,
                          _county_rows(con, "stat_monthly_teacher_county_level", values, key, (UNKNOWN,)),
                          total_rows=1,
                          notes=["人次為完成研習（核發時數）之名單筆數；教師數為不重複教師人數。",
                                 "縣市及教育階段依教師服務學校（教育部學校名冊）；名冊查無之學校列為「未知」。",
                                 "合計列及小計之教師數為不重複人數，不等於各欄相加。"]))

    rows = fetch(con, f"""
        WITH s AS (SELECT * FROM stat_monthly_organizer WHERE month = ? AND as_of = ?),
        k AS (SELECT code, CASE WHEN code = '{ALL}' THEN '合計' ELSE label END AS label, ord FROM pub_ref_codes
              WHERE list = 'organizer_type'
              UNION ALL SELECT DISTINCT organizer_type, organizer_type, 500 FROM s
              WHERE organizer_type NOT IN (SELECT code FROM pub_ref_codes WHERE list = 'organizer_type')),
        r AS (SELECT k.ord, k.code, 0 AS sub, '' AS organizer, k.label, coalesce(s.courses, 0) AS courses,
                     coalesce(s.course_hours, 0) AS hours, coalesce(s.person_times, 0) AS pt,
                     coalesce(s.granted_hours, 0) AS gh
              FROM k LEFT JOIN s ON s.organizer_type = k.code AND s.organizer = '{ALL}'
              UNION ALL  -- teacher-training universities one by one, under their type
              SELECT k.ord, k.code, 1, s.organizer, '　' || s.organizer, s.courses, s.course_hours, s.person_times,
                     s.granted_hours
              FROM s JOIN k ON k.code = s.organizer_type WHERE s.organizer <> '{ALL}')
        SELECT label, courses, hours, pt, gh FROM r ORDER BY ord, code, sub, organizer""", key)
    reports.append(Report("t3_organizers", "3 開課單位類別", f"表3 {period}各類開課單位研習課程數",
                          [Col("開課單位類別", "text"), Col("課程數"), Col("課程時數", "dec1"), Col("研習人次"),
                           Col("核發時數", "dec1")], rows, total_rows=1,
                          notes=["師資培育之大學（類別 3）逐校列出（縮排列）。"]))

    rows = fetch(con, """SELECT unit_code, coalesce(unit_name, ''), organizer, not_closed, light,
                                 CASE WHEN blocked THEN '是' ELSE '否' END
        FROM stat_monthly_not_closed WHERE month = ? AND as_of = ?
        ORDER BY not_closed DESC, unit_code, organizer""", key)
    day = fetch(con, "SELECT max(report_date) FROM stat_monthly_not_closed WHERE month = ? AND as_of = ?", key)[0][0]
    total = sum(r[3] for r in rows)
    rows.append(("合計", f"{len({r[0] for r in rows})} 個單位", f"{len(rows)} 個開課單位", total, "", ""))
    light_note = (f"非學分班（學分班－學士、碩士不列入）、研習起日在 {m.year} 年、研習迄日後逾 7 日"
                  f"（判定日 {day or '—'}）仍未結案之課程，依開課單位（所屬傳報單位內）計；"
                  "本年度有課程之開課單位均列出。")
    reports.append(Report("t4_not_closed", "4 未結案燈號",
                          f"表4 {period}各開課單位逾期未結案課程及燈號（截至 {day or '—'}）",
                          [Col("單位代碼", "text"), Col("單位名稱", "text"), Col("開課單位", "text"),
                           Col("逾期未結案課程數"), Col("燈號", "light"), Col("停止登錄新課程", "text")], rows,
                          total_rows=1,
                          notes=[light_note, "燈號：綠燈 0 門、黃燈 1–4 門、紅燈 5 門以上；"
                                 "2017-11-01 起紅燈之開課單位不得登錄新課程（C11），結案不受限制。"]))
    rows = fetch(con, """SELECT CASE WHEN s.county_code = '*' THEN '全國' ELSE coalesce(k.label, s.county_code) END,
            s.organizers, s.green, s.yellow, s.red, s.not_closed
        FROM stat_monthly_lights_county s LEFT JOIN pub_ref_codes k ON k.list = 'county' AND k.code = s.county_code
        WHERE s.month = ? AND s.as_of = ? ORDER BY s.county_code = '*', coalesce(k.ord, 800), s.county_code""", key)
    reports.append(Report("t4c_lights_county", "4c 燈號縣市別", f"表4 縣市別 {period}開課單位燈號（截至 {day or '—'}）",
                          [Col("縣市", "text"), Col("開課單位數"), Col("綠燈", "int", "開課單位"),
                           Col("黃燈", "int", "開課單位"), Col("紅燈", "int", "開課單位"), Col("逾期未結案課程數")],
                          rows, total_rows=1 if rows else 0,
                          notes=["開課單位之縣市為其本年度課程最多之縣市。"]))
    rows = fetch(con, """SELECT unit_code, organizer, course_code, title, end_date, days_since_end
        FROM stat_monthly_not_closed_courses WHERE month = ? AND as_of = ?
        ORDER BY unit_code, organizer, end_date, course_code""", key)
    reports.append(Report("t4b_not_closed_courses", "4b 未結案明細", f"表4 明細 {period}逾期未結案課程", [
        Col("單位代碼", "text"), Col("開課單位", "text"), Col("研習代碼", "text"), Col("研習名稱", "text"),
        Col("研習迄日", "date"), Col("迄日後日數")], rows))
    values = [(lv, "not_closed") for lv in [*COURSE_LEVELS, ALL]]
    reports.append(Report("t4d_not_closed_levels", "4d 未結案縣市對象",
                          f"表4 {period}逾期未結案課程（依課程縣市及研習對象）",
                          [Col("縣市", "text"), *(Col(_label("level", lv) if lv != ALL else "合計")
                                                  for lv in [*COURSE_LEVELS, ALL])],
                          _county_rows(con, "stat_monthly_not_closed_county_level", values, key), total_rows=1,
                          notes=["開放多個研習對象之課程於各對象欄各計一次，合計欄僅計一次。"]))
    rows = fetch(con, """SELECT CASE kind WHEN 'university' THEN '師資培育之大學' ELSE '學科中心' END, name, not_closed
        FROM stat_monthly_not_closed_institution WHERE month = ? AND as_of = ? ORDER BY kind DESC, institution_id""",
                 key)
    rows.append(("合計", "", sum(r[2] for r in rows)))
    reports.append(Report("t4e_not_closed_institutions", "4e 未結案師培大學",
                          f"表4 {period}逾期未結案課程（師資培育之大學及學科中心）",
                          [Col("類別", "text"), Col("名稱", "text"), Col("逾期未結案課程數")], rows, total_rows=1,
                          notes=["開課單位名稱與師資培育之大學及學科中心名冊相符之課程；名冊所列者均列出，無者為 0。"]))

    tags_listed = """(SELECT code, label, ord FROM pub_ref_codes WHERE list = 'tag'
        UNION ALL SELECT DISTINCT tag, tag, 800 FROM stat_monthly_tags WHERE month = ? AND as_of = ?
            AND tag NOT IN (SELECT code FROM pub_ref_codes WHERE list = 'tag'))"""
    rows = fetch(con, f"""
        SELECT CASE WHEN k.code = '{ALL}' THEN '有屬性標籤之課程（不重複）' ELSE k.code || ' ' || k.label END,
               coalesce(s.courses, 0), coalesce(s.course_hours, 0), coalesce(s.person_times, 0),
               coalesce(s.granted_hours, 0)
        FROM {tags_listed} k LEFT JOIN stat_monthly_tags s ON s.tag = k.code AND s.county_code = '{ALL}'
            AND s.month = ? AND s.as_of = ?
        ORDER BY k.ord, k.code""", key + key)
    reports.append(Report("t5_tags", "5 屬性標籤", f"表5 {period}屬性標籤研習課程數",
                          [Col("屬性標籤", "text"), Col("課程數"), Col("課程時數", "dec1"), Col("研習人次"),
                           Col("核發時數", "dec1")], rows, total_rows=1,
                          notes=["一門課程有多個標籤時於各標籤各計一次；末列為有任一標籤之課程（不重複）。",
                                 "標籤依屬性標籤登錄（本月有效之標籤）。"]))
    tag_cols = fetch(con, f"SELECT code, label FROM {tags_listed} t ORDER BY ord, code", key)
    cells = ", ".join(f"coalesce(max(s.courses) FILTER (WHERE s.tag = '{code}'), 0)" for code, _ in tag_cols)
    rows = fetch(con, f"""
        SELECT CASE WHEN s.county_code = '{ALL}' THEN '全國' ELSE coalesce(k.label, s.county_code) END, {cells}
        FROM stat_monthly_tags s LEFT JOIN pub_ref_codes k ON k.list = 'county' AND k.code = s.county_code
        WHERE s.month = ? AND s.as_of = ?
        GROUP BY s.county_code, k.label, k.ord ORDER BY s.county_code = '{ALL}', coalesce(k.ord, 800), s.county_code
        """, key)
    reports.append(Report("t5c_tags_county", "5c 標籤縣市別", f"表5 縣市別 {period}屬性標籤研習課程數（依課程縣市）",
                          [Col("縣市", "text"), *(Col("有任一標籤" if code == ALL else f"{code} {label}", "int",
                                                     "課程數") for code, label in tag_cols)],
                          rows, total_rows=1 if rows else 0))
    rows = fetch(con, """
        WITH s AS (SELECT * FROM stat_monthly_meeting_flags WHERE month = ? AND as_of = ?)
        SELECT coalesce(k.label, s.county_code), count(*) FILTER (WHERE w01), count(*) FILTER (WHERE w02),
               string_agg(s.unit_code || '/' || s.course_code || ' ' || s.title, '；'
                          ORDER BY s.unit_code, s.course_code)
        FROM s LEFT JOIN pub_ref_codes k ON k.list = 'county' AND k.code = s.county_code
        GROUP BY s.county_code, k.label, k.ord ORDER BY coalesce(k.ord, 800), s.county_code""", key)
    totals = fetch(con, """SELECT count(*) FILTER (WHERE w01), count(*) FILTER (WHERE w02)
        FROM stat_monthly_meeting_flags WHERE month = ? AND as_of = ?""", key)[0]
    rows.append(("合計", totals[0], totals[1], ""))
    reports.append(Report("t5b_meeting_titles", "5b 會議名稱", f"表5 {period}研習名稱為會議之課程（依課程縣市）",
                          [Col("縣市", "text"), Col("W01 含會議名稱"), Col("W02 僅為會議名稱"), Col("課程", "text")],
                          rows, total_rows=1,
                          notes=["W01：研習名稱含校務會議、學年會議或行政會議；"
                                 "W02：研習名稱僅為會議名稱（亦計入 W01）。",
                                 "依最後寫入該課程之傳報的檢核結果。"]))

    rows = fetch(con, """SELECT unit_code, coalesce(unit_name, ''),
            CASE channel WHEN 'db' THEN '資料庫互傳' ELSE '檔案' END,
            files, feed_days, on_time_files, late_files, refused_uploads, status,
            courses_accepted, courses_rejected, attendance_accepted, attendance_rejected, coalesce(refusals, ''),
            CASE WHEN audit_due THEN '是' ELSE '否' END, coalesce(audit_scope, '')
        FROM stat_monthly_transmission WHERE month = ? AND as_of = ? ORDER BY unit_code""", key)
    if rows:
        rows.append(("合計", f"{len(rows)} 個單位", "", *(sum(r[i] for r in rows) for i in range(3, 8)), "",
                     *(sum(r[i] for r in rows) for i in range(9, 13)), "", "", ""))
    reports.append(Report("t6_transmission", "6 傳報狀況", f"表6 {period}各單位資料傳報狀況及查核", [
        Col("單位代碼", "text"), Col("單位名稱", "text"), Col("管道", "text"), Col("檔案數", "int", "收件"),
        Col("互傳日數", "int", "收件"), Col("準時", "int", "收件"), Col("逾期", "int", "收件"),
        Col("整批退件", "int", "收件"), Col("狀態", "text", "收件"), Col("通過", "int", "課程筆數"),
        Col("退件", "int", "課程筆數"), Col("通過", "int", "名單筆數"), Col("退件", "int", "名單筆數"),
        Col("退件規則（筆數）", "text"), Col("本月查核", "text", "查核"), Col("範圍", "text", "查核")],
        rows, total_rows=1 if rows else 0,
        notes=[f"資料月份 {m.key} 之檔案（次月 5 日 23:59:59 前收件為準時）及資料庫互傳日數。",
               "查核：加入後 12 個月內每月查核，其後於 1、4、7、10 月查核；1 月並查核前一年度全年資料。"]))

    rows = fetch(con, """SELECT (CAST(left(series_month, 4) AS INTEGER) - 1911) || '年'
                                || CAST(right(series_month, 2) AS INTEGER) || '月', series_month, courses, person_times
        FROM stat_monthly_series WHERE month = ? AND as_of = ? ORDER BY series_month""", key)
    reports.append(Report("t7_series", "7 近36個月趨勢", f"表7 近 36 個月研習課程數及研習人次（至{period}）",
                          [Col("月份", "text"), Col("YYYY-MM", "text"), Col("課程數"), Col("研習人次")], rows,
                          chart=Chart(f"近 36 個月研習課程數及研習人次（至{period}）", 0, (2,), (3,),
                                      "課程數", "研習人次")))

    rows = fetch(con, """SELECT revision, strftime(timezone('Asia/Taipei', as_of), '%Y-%m-%d %H:%M:%S'), report_date,
            courses, course_hours, person_times, teachers, granted_hours,
            courses - lag(courses) OVER w, person_times - lag(person_times) OVER w
        FROM stat_publications WHERE month = ? WINDOW w AS (ORDER BY revision) ORDER BY revision""", [m.key])
    reports.append(Report("revisions", "發布紀錄", f"{period}統計月報發布紀錄（遲到資料修正）", [
        Col("版次"), Col("資料截至（臺北時間）", "text"), Col("報表日期", "date"), Col("課程數"),
        Col("課程時數", "dec1"), Col("研習人次"), Col("教師數"), Col("核發時數", "dec1"),
        Col("課程數", "int", "與前版差異"),
        Col("研習人次", "int", "與前版差異")], rows,
        notes=["每次發布均保留；最新一版為現行版。遲到或補傳之資料於重新發布時反映。"]))
    return reports


def _totals(con: duckdb.DuckDBPyConnection, key: list) -> dict:
    c = fetch(con, f"""SELECT courses, course_hours FROM stat_monthly_course_county_level
        WHERE month = ? AND as_of = ? AND county_code = '{ALL}' AND level = '{ALL}'""", key)
    t = fetch(con, f"""SELECT person_times, teachers, granted_hours FROM stat_monthly_teacher_county_level
        WHERE month = ? AND as_of = ? AND county_code = '{ALL}' AND level = '{ALL}'""", key)
    courses, hours = c[0] if c else (0, 0)
    pt, teachers, granted = t[0] if t else (0, 0, 0)
    return {"courses": int(courses), "course_hours": float(hours), "person_times": int(pt),
            "teachers": int(teachers), "granted_hours": float(granted)}


def _pull_inputs(cx: Compute, m: Month) -> None:
    """On PostgreSQL: the slice `compute` reads, into the compute DuckDB (see warehouse/compute.py):
    the series window's courses and their attendance, the register, the uploads and the W01/W02 and
    error findings, and the month's earlier publications (revision numbers)."""
    window = "start_date >= ? AND start_date < ?"
    bounds = [m.shift(1 - SERIES_MONTHS).start, m.end]
    cx.pull("main.courses", window, bounds)
    cx.pull("main.attendance", f"""(unit_code, course_code) IN (
        SELECT unit_code, course_code FROM main.courses WHERE {window})""", bounds)
    cx.pull("main.units")
    cx.pull("main.unit_versions")
    cx.pull("main.school_register")
    cx.pull("main.uploads", "area = 'production'")
    cx.pull("main.findings", f"""(rule IN ('W01', 'W02') AND upload_id IN (
        SELECT upload_id FROM main.courses WHERE {window})) OR (severity = 'error' AND upload_id IN (
        SELECT upload_id FROM main.uploads WHERE data_month = ? OR data_month IS NULL))""", [*bounds, m.key])
    cx.pull("main.stat_publications", "month = ?", [m.key])


def monthly_dir(settings: Settings, m: Month) -> Path:
    return settings.home / "publish" / "monthly" / m.key


def publish_month(settings: Settings, month: str, as_of: datetime | str | None = None,
                  report_date: date | None = None) -> Publication:
    """Compute month M into the stat_* tables, write the workbook and HTML page, record the publication."""
    from inservice.publish.html import write_html
    from inservice.publish.workbook import write_workbook

    m = Month.parse(month)
    as_of_dt = as_of_now(as_of)
    report_day = report_date or as_of_dt.date()
    out = monthly_dir(settings, m)
    session = WriteSession(settings)
    with session as wh, compute_session(wh) as cx:
        checks.require_passing(wh.con, settings.archive_cutoff, f"monthly statistics {m.key}")
        con = cx.con
        cx.run(ensure_tables)
        register_refs(con, wh.tag_register(), (m.start, m.end))
        _pull_inputs(cx, m)
        with cx.transaction():
            earlier = fetch(con, "SELECT revision FROM stat_publications WHERE month = ? AND as_of = ?",
                            [m.key, as_of_dt])
            con.execute("DELETE FROM stat_publications WHERE month = ? AND as_of = ?", [m.key, as_of_dt])
            revision = earlier[0][0] if earlier else fetch(
                con, "SELECT coalesce(max(revision), 0) + 1 FROM stat_publications WHERE month = ?", [m.key])[0][0]
            compute(con, m, as_of_dt, report_day, settings.c11_from)
            totals = _totals(con, [m.key, as_of_dt])
            stem = f"stats-{m.key}"
            files = [str(out / f"{stem}.xlsx"), str(out / f"{stem}.html")]
            con.execute("INSERT INTO stat_publications VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [m.key, as_of_dt, revision, report_day, totals["courses"], totals["course_hours"],
                         totals["person_times"], totals["teachers"], totals["granted_hours"], json.dumps(files)])
            for t in (*STAT_MONTHLY, "stat_publications"):
                cx.push(t, "month = ? AND as_of = ?", [m.key, as_of_dt])
            reports = render(con, m, as_of_dt)
            # files last, inside the transaction: a failed write leaves no publication behind
            title = f"教師在職進修統計月報 {m.roc}"
            subtitle = (f"資料截至 {as_of_dt:%Y-%m-%d %H:%M:%S}（臺北時間）・第 {revision} 版・報表日期 {report_day}"
                        "・正式版資料庫")
            out.mkdir(parents=True, exist_ok=True)
            write_workbook(Path(files[0]), reports, title, subtitle, _notes(m, as_of_dt, revision))
            write_html(Path(files[1]), reports, title, subtitle, _notes(m, as_of_dt, revision))
            # each revision is also kept under its own name, so earlier publications stay readable
            kept = out / "revisions" / f"r{revision}-{as_of_dt:%Y%m%dT%H%M%S}"
            kept.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, kept / Path(f).name)
    return Publication(m.key, as_of_dt, revision, report_day, totals, files, session.refresh)


def _notes(m: Month, as_of: datetime, revision: int) -> list[tuple[str, str]]:
    return [
        ("統計月份", f"{m.key}（{m.roc}）"),
        ("資料截至", f"{as_of.isoformat()}（第 {revision} 版；同月份較早版本均保留，見「發布紀錄」）"),
        ("資料範圍", "正式資料中未撤回之研習課程與名單；測試階段單位之資料不列入。"),
        ("月份歸屬", "課程依研習起日歸屬月份；名單依其課程歸屬。"),
        ("研習人次", "完成研習（核發時數）之名單筆數；未完成者另計「未完成人次」。"),
        ("教師數", "不重複之教師人數（教師以無法回推身分之代碼識別）；小計與合計為不重複人數。"),
        ("教師縣市及教育階段", "依教師服務學校代碼對照教育部學校名冊；查無者列為「未知」。"),
        ("逾期未結案", "依開課單位（所屬傳報單位內）計：非學分班、研習起日在統計年度、研習迄日後逾 7 日"
                    "（依報表日期；12 月報表為 12 月 31 日）仍無結案日期或結案日期晚於該日；綠燈 0、黃燈 1–4、"
                    "紅燈 5 以上；2017-11-01 起紅燈之開課單位不得登錄新課程。學分班不列入。"),
        ("屬性標籤", "依屬性標籤登錄；全國及各縣市（課程縣市）；列出本月有效之標籤。"),
        ("會議名稱", "W01／W02 依最後一次傳報該課程時之檢核結果。"),
        ("傳報狀況", "各單位傳報之檔案依其資料月份計；檔案於次月 5 日 23:59:59（臺北時間）前收件為準時；"
                 "資料庫互傳計收件日數。"),
        ("查核", "加入後 12 個月內每月查核；其後 1、4、7、10 月查核；1 月並查核前一年度全年。"),
        ("版本", "每次發布均保留，最新一版為現行版；遲到或補傳之資料於重新發布時反映。"),
        ("個資", "本報表不含身分證字號與姓名；教師以無法回推身分之代碼識別，僅供統計。"),
    ]
