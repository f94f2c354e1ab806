"""Monthly statistics, audit cadence, yearbook extract and county export on a small hand-built warehouse.

Every expected figure below is worked out by hand from the rows inserted in `build_warehouse` (the
arithmetic is in the comments); none is computed by the code under test.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from openpyxl import load_workbook

from inservice.cli import main
from inservice.config import TAIPEI, Settings
from inservice.publish.export import export_county
from inservice.publish.monthly import publish_month
from inservice.publish.yearbook import publish_year
from inservice.registers.units import set_county
from inservice.warehouse.store import Warehouse

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
AS_OF = datetime(2017, 6, 6, 6, 0, tzinfo=TAIPEI)  # report date 2017-06-06
M = "2017-05"

# Schools of the MOE list (inservice/schemas/data/schools.csv) and one that is not in it.
SE63, SJ63, SS64, SV66, UNK = "313601", "313301", "120303", "063401", "ZZ9999"
NTNU, NKNU = "國立臺灣師範大學", "國立高雄師範大學"

COURSE_DEFAULTS = {
    "title": "課程", "organizer": "某單位", "organizer_type": "1", "county_code": "63000", "hours": 1,
    "class_type": "1", "category": "A", "delivery": "1", "time_slot": "1", "audience": "E", "tags": None,
    "closed_date": None, "is_deleted": False, "upload_id": "U0",
}


def add_courses(con: duckdb.DuckDBPyConnection, rows: list[dict], schema: str = "main") -> None:
    cols = ["unit_code", "course_code", "start_date", "end_date", *COURSE_DEFAULTS]
    data = [[{**COURSE_DEFAULTS, **r}[c] for c in cols] for r in rows]
    con.executemany(f"INSERT INTO {schema}.courses ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", data)


def add_attendance(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    """(unit, course, teacher, school, hours_granted, completed[, is_deleted])"""
    data = [(*r, False) if len(r) == 6 else r for r in rows]
    con.executemany("""INSERT INTO attendance (unit_code, course_code, teacher_key, school_code, hours_granted,
        completed, is_deleted) VALUES (?, ?, ?, ?, ?, ?, ?)""", data)


def c(unit: str, code: str, start: str, end: str | None = None, **kw: object) -> dict:
    return {"unit_code": unit, "course_code": code, "start_date": start, "end_date": end or start, **kw}


def add_upload(con: duckdb.DuckDBPyConnection, upload_id: str, unit: str, channel: str, month: str, received: str,
               on_time: bool | None, status: str = "loaded", area: str = "production", refusal: str | None = None,
               ca: int = 0, cr: int = 0, aa: int = 0, ar: int = 0) -> None:
    con.execute("""INSERT INTO uploads (upload_id, unit_code, channel, file_name, data_month, received_at, on_time,
        area, status, refusal, courses_accepted, courses_rejected, attendance_accepted, attendance_rejected)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [upload_id, unit, channel, f"{unit}_{month.replace('-', '')}.xlsx" if channel == "file" else None,
                 month, datetime.fromisoformat(received), on_time, area, status, refusal, ca, cr, aa, ar])


def add_findings(con: duckdb.DuckDBPyConnection, upload_id: str, rows: list[tuple[str, str, str, str | None]]) -> None:
    """(record, rule, severity, course_code)"""
    con.executemany("""INSERT INTO findings (upload_id, record, "row", field, rule, severity, course_code)
        VALUES (?, ?, 2, NULL, ?, ?, ?)""", [(upload_id, *r) for r in rows])


def build_warehouse(settings: Settings) -> None:
    with Warehouse(settings) as wh:
        con = wh.con
        wh.add_unit("J005", "五個月前加入", "db", "production", date(2016, 12, 15))
        wh.add_unit("J020", "二十個月前加入", "file", "production", date(2015, 9, 1))
        for unit, county in (("T001", "63000"), ("T002", "64000"), ("T003", "63000")):  # the register's county
            set_county(wh, unit, county, "臺教師(三)字第1060000100號", date(2016, 1, 1))
        add_courses(con, [
            # --- May 2017 (the month under test) ---
            c("T001", "C1", "2017-05-02", audience="K;E", hours=3, organizer_type="3", organizer=NTNU,
              tags="T1;T2", closed_date="2017-05-05"),
            c("T001", "C2", "2017-05-10", title="106學年度第1次校務會議", audience="A", hours=2,
              organizer="臺北市立松山國小", closed_date="2017-05-12", upload_id="U-T001-1"),
            c("T002", "C3", "2017-05-06", "2017-05-20", county_code="64000", audience="J;S", hours=6,
              organizer_type="3", organizer=NKNU, tags="T2", class_type="2", category="B"),  # degree, not closed
            c("T002", "C4", "2017-05-08", title="期末校務會議暨研習", county_code="64000", hours=1.5,
              organizer_type="2", closed_date="2017-05-09", upload_id="U-T002-1"),
            c("T003", "C5", "2017-05-03", hours=4, organizer_type="3", organizer=NTNU, tags="T2;T3",
              closed_date="2017-05-04", upload_id="U-T003-1"),
            c("T001", "N5", "2017-05-30", organizer="臺北市立松山國小"),  # ends 7 days before the report date
            c("T002", "M5", "2017-05-29", county_code="64000"),  # ends 8 days before the report date
            c("T003", "C6", "2017-05-02", hours=10, is_deleted=True),  # withdrawn: nowhere, nor its attendance
            # --- April 2017: not-closed courses (table 4) and the series ---
            c("T001", "C7", "2017-04-05", hours=2, closed_date="2017-04-06"),
            *(c("T001", f"N{i}", "2017-04-10") for i in range(1, 5)),
            *(c("T002", f"M{i}", "2017-04-10", county_code="64000") for i in range(1, 5)),
            c("T003", "D2", "2017-04-10", class_type="2"),  # degree programmes are never counted
            c("T003", "D3", "2017-04-10", class_type="3", county_code="64000"),
            c("T003", "X1", "2017-04-10", closed_date="2017-06-01"),  # closed (late) before the report date
            # --- December 2016: a previous year's course, not closed ---
            c("T003", "P1", "2016-12-10"),
        ])
        add_courses(con, [c("T001", "TEST1", "2017-05-02", hours=50)], schema="testing")  # testing area
        add_attendance(con, [
            ("T001", "C1", "t1", SE63, 3, True), ("T001", "C1", "t2", SJ63, 3, True),
            ("T001", "C1", "t3", UNK, 3, True), ("T001", "C1", "t4", SE63, 0, False),
            ("T001", "C2", "t1", SE63, 2, True), ("T001", "C2", "t5", SS64, 2, True),
            ("T002", "C3", "t5", SS64, 6, True), ("T002", "C3", "t6", SV66, 5.5, True),
            ("T002", "C4", "t1", SE63, 1.5, True), ("T002", "C4", "t2", SJ63, 1.5, True, True),  # withdrawn row
            ("T003", "C5", "t3", UNK, 4, True), ("T003", "C5", "t6", SV66, 4, True),
            ("T003", "C5", "t1", SE63, 4, True),
            ("T002", "M5", "t5", SS64, 1, True),
            ("T003", "C6", "t1", SE63, 10, True),
            ("T001", "C7", "t1", SE63, 2, True), ("T001", "C7", "t2", SJ63, 0, False),
        ])
        # meeting titles: the findings of the upload that last wrote each course
        add_findings(con, "U-T001-1", [("course", "W01", "warning", "C2"), ("course", "W02", "warning", "C2")])
        add_findings(con, "U-T002-1", [("course", "W01", "warning", "C4")])
        add_findings(con, "U-T003-0", [("course", "W01", "warning", "C5")])  # stale: C5 was rewritten since
        # transmission for data month 2017-05
        add_upload(con, "U-T001-1", "T001", "file", M, "2017-06-03T10:00:00+08:00", True, ca=4, cr=1, aa=6, ar=2)
        add_findings(con, "U-T001-1", [("course", "C03", "error", "X9"), ("attendance", "A03", "error", "C1"),
                                       ("attendance", "A03", "error", "C1")])
        add_upload(con, "U-T001-2", "T001", "file", M, "2017-06-08T09:00:00+08:00", False, status="refused",
                   refusal="F07", cr=3)
        add_findings(con, "U-T001-2", [("file", "F07", "error", None)])
        add_upload(con, "U-T002-1", "T002", "file", M, "2017-06-07T09:00:00+08:00", False, ca=3, aa=4)
        # the same bytes sent again: recorded as a duplicate, no new file of the month
        add_upload(con, "U-T002-dup", "T002", "file", M, "2017-06-09T09:00:00+08:00", False, status="duplicate",
                   refusal="F08")
        add_findings(con, "U-T002-dup", [("file", "F08", "warning", None)])
        add_upload(con, "U-J005-a", "J005", "db", M, "2017-05-01T02:00:00+08:00", True, ca=1, aa=2)
        add_upload(con, "U-J005-b", "J005", "db", M, "2017-05-02T02:00:00+08:00", True, ca=1, aa=2)
        add_upload(con, "U-J005-c", "J005", "db", M, "2017-05-02T14:00:00+08:00", True, ca=1, aa=2)
        add_upload(con, "U-T003-t", "T003", "file", M, "2017-06-02T09:00:00+08:00", True, area="testing", ca=9)
        add_upload(con, "U-T001-0", "T001", "file", "2017-04", "2017-05-03T09:00:00+08:00", True, ca=7)


@pytest.fixture
def wh_settings(settings: Settings) -> Settings:
    build_warehouse(settings)
    return settings


def q(settings: Settings, sql: str, params: list | None = None) -> list[tuple]:
    with Warehouse(settings, read_only=True) as wh:
        return wh.con.execute(sql, params or []).fetchall()


def keyed(settings: Settings, table: str, keys: int, cols: str, as_of: datetime = AS_OF, month: str = M) -> dict:
    rows = q(settings, f"SELECT {cols} FROM {table} WHERE month = ? AND as_of = ?", [month, as_of])
    return {r[:keys] if keys > 1 else r[0]: tuple(float(v) if hasattr(v, "as_tuple") else v for v in r[keys:])
            for r in rows}


# --- monthly statistics ------------------------------------------------------------------------------
def test_monthly_tables(wh_settings: Settings) -> None:
    s = wh_settings
    pub = publish_month(s, M, as_of=AS_OF)
    # May courses: C1 C2 C3 C4 C5 N5 M5 (C6 withdrawn, TEST1 in the testing area)
    # hours 3 + 2 + 6 + 1.5 + 4 + 1 + 1 = 18.5; completed rows C1 3, C2 2, C3 2, C4 1, C5 3, M5 1 = 12;
    # teachers t1 t2 t3 t5 t6 = 5; granted 9 + 4 + 11.5 + 1.5 + 12 + 1 = 39.0
    assert pub.totals == {"courses": 7, "course_hours": 18.5, "person_times": 12, "teachers": 5,
                          "granted_hours": 39.0}
    assert pub.revision == 1 and pub.report_date == date(2017, 6, 6)

    # 1. course county × audience: 63000 = C1 (K;E 3h) C2 (A 2h) C5 (E 4h) N5 (E 1h);
    #    64000 = C3 (J;S 6h) C4 (E 1.5h) M5 (E 1h)
    t1 = keyed(s, "stat_monthly_course_county_level", 2, "county_code, level, courses, course_hours")
    assert t1 == {
        ("63000", "K"): (1, 3.0), ("63000", "E"): (3, 8.0), ("63000", "A"): (1, 2.0), ("63000", "*"): (4, 10.0),
        ("64000", "E"): (2, 2.5), ("64000", "J"): (1, 6.0), ("64000", "S"): (1, 6.0), ("64000", "*"): (3, 8.5),
        ("*", "K"): (1, 3.0), ("*", "E"): (5, 10.5), ("*", "J"): (1, 6.0), ("*", "S"): (1, 6.0),
        ("*", "A"): (1, 2.0), ("*", "*"): (7, 18.5),
    }

    # 2. teacher's school county × level: t1 at 313601 (63000 E) C1 3 + C2 2 + C4 1.5 + C5 4 = 10.5, t4 not
    #    completed; t2 at 313301 (63000 J) C1 3 (its C4 row withdrawn); t5 at 120303 (64000 S) C2 2 + C3 6 +
    #    M5 1; t6 at 063401 (66000 V) C3 5.5 + C5 4; t3 at an unknown school C1 3 + C5 4
    t2 = keyed(s, "stat_monthly_teacher_county_level", 2,
               "county_code, level, person_times, teachers, granted_hours, not_completed")
    assert t2 == {
        ("63000", "E"): (4, 1, 10.5, 1), ("63000", "J"): (1, 1, 3.0, 0), ("63000", "*"): (5, 2, 13.5, 1),
        ("64000", "S"): (3, 1, 9.0, 0), ("64000", "*"): (3, 1, 9.0, 0),
        ("66000", "V"): (2, 1, 9.5, 0), ("66000", "*"): (2, 1, 9.5, 0),
        ("未知", "未知"): (2, 1, 7.0, 0), ("未知", "*"): (2, 1, 7.0, 0),
        ("*", "E"): (4, 1, 10.5, 1), ("*", "J"): (1, 1, 3.0, 0), ("*", "S"): (3, 1, 9.0, 0),
        ("*", "V"): (2, 1, 9.5, 0), ("*", "未知"): (2, 1, 7.0, 0), ("*", "*"): (12, 5, 39.0, 1),
    }

    # 3. organizer types: 1 = C2 N5 M5 (2 + 1 + 1 h; 2 + 0 + 1 person-times; 4 + 0 + 1 h granted);
    #    2 = C4; 3 = C1 C5 (NTNU: 3 + 4 h, 3 + 3 pt, 9 + 12 h) and C3 (NKNU: 6 h, 2 pt, 11.5 h)
    t3 = keyed(s, "stat_monthly_organizer", 2, "organizer_type, organizer, courses, course_hours, person_times, "
               "granted_hours")
    assert t3 == {
        ("1", "*"): (3, 4.0, 3, 5.0), ("2", "*"): (1, 1.5, 1, 1.5), ("3", "*"): (3, 13.0, 8, 32.5),
        ("3", NTNU): (2, 7.0, 6, 21.0), ("3", NKNU): (1, 6.0, 2, 11.5), ("*", "*"): (7, 18.5, 12, 39.0),
    }

    # 5. tags: T1 = C1; T2 = C1 C3 C5; T3 = C5; any = C1 C3 C5
    #    per course county: 臺北市 C1 (T1;T2) and C5 (T2;T3); 高雄市 C3 (T2)
    t5 = keyed(s, "stat_monthly_tags", 2, "county_code, tag, courses, course_hours, person_times, granted_hours")
    assert t5 == {("*", "T1"): (1, 3.0, 3, 9.0), ("*", "T2"): (3, 13.0, 8, 32.5), ("*", "T3"): (1, 4.0, 3, 12.0),
                  ("*", "*"): (3, 13.0, 8, 32.5),
                  ("63000", "T1"): (1, 3.0, 3, 9.0), ("63000", "T2"): (2, 7.0, 6, 21.0),
                  ("63000", "T3"): (1, 4.0, 3, 12.0), ("63000", "*"): (2, 7.0, 6, 21.0),
                  ("64000", "T2"): (1, 6.0, 2, 11.5), ("64000", "*"): (1, 6.0, 2, 11.5)}
    # meeting titles: C2 W01+W02 (臺北市), C4 W01 (高雄市); C5's W01 belongs to an upload since replaced
    flags = keyed(s, "stat_monthly_meeting_flags", 2, "county_code, course_code, w01, w02")
    assert flags == {("63000", "C2"): (True, True), ("64000", "C4"): (True, False)}

    # 7. series: 36 months 2014-06 .. 2017-05; P1 in 2016-12; April = C7, N1-4, M1-4, D2, D3, X1 with one
    #    completed row (C7 t1); May as above
    series = keyed(s, "stat_monthly_series", 1, "series_month, courses, person_times")
    assert len(series) == 36 and min(series) == "2014-06" and max(series) == "2017-05"
    assert {k: v for k, v in series.items() if v != (0, 0)} == {
        "2016-12": (1, 0), "2017-04": (12, 1), "2017-05": (7, 12)}


def test_not_closed_lights(wh_settings: Settings) -> None:
    """Lights per organizer within its unit (spec 1.1 §7), summed per county."""
    s = wh_settings
    publish_month(s, M, as_of=AS_OF)
    # report date 2017-06-06. T001/某單位: N1-N4 (ended 2017-04-10) = 4 → yellow; T001/松山國小: N5 ended
    # 2017-05-30, day 7: not yet → green (its C2 is closed). T002/某單位: M1-M4 + M5 (ended 2017-05-29, day 8)
    # = 5 → red; T002/NKNU: C3 is a degree programme (class 2), not counted. T003/某單位: D2, D3 degree
    # programmes, X1 closed 2017-06-01, C6 withdrawn, P1 is 2016's → green. Every organizer with a course
    # started in 2017 up to the month's end is listed; units without one (J005, J020) are not.
    sch = "臺北市立松山國小"
    lights = keyed(s, "stat_monthly_not_closed", 2, "unit_code, organizer, not_closed, light, blocked")
    assert lights == {("T001", "某單位"): (4, "黃燈", False), ("T001", sch): (0, "綠燈", False),
                      ("T001", NTNU): (0, "綠燈", False), ("T002", "某單位"): (5, "紅燈", False),
                      ("T002", NKNU): (0, "綠燈", False), ("T003", "某單位"): (0, "綠燈", False),
                      ("T003", NTNU): (0, "綠燈", False)}
    detail = q(s, "SELECT unit_code, organizer, course_code, days_since_end FROM stat_monthly_not_closed_courses "
                  "WHERE month = ? AND as_of = ? ORDER BY 1, 3", [M, AS_OF])
    assert detail == [("T001", "某單位", f"N{i}", 57) for i in range(1, 5)] + \
        [("T002", "某單位", f"M{i}", 57) for i in range(1, 5)] + [("T002", "某單位", "M5", 8)]
    # per county (an organizer's county: most of its 2017 courses): 臺北市 T001×3 (1 yellow), T003×2;
    # 高雄市 T002/某單位 (M1-M5, C4: 64000) red and T002/NKNU (C3: 64000) green
    county = keyed(s, "stat_monthly_lights_county", 1, "county_code, organizers, green, yellow, red, not_closed")
    assert county == {"63000": (5, 4, 1, 0, 4), "64000": (2, 1, 0, 1, 5), "*": (7, 5, 1, 1, 9)}

    # from 2017-11-01 a red light blocks new courses: month 2017-11, report date 2017-12-06.
    # T001/松山國小 now has N5 (day 190) → 1, yellow: two organizers of one unit, each its own light.
    late = datetime(2017, 12, 6, 6, 0, tzinfo=TAIPEI)
    publish_month(s, "2017-11", as_of=late)
    lights = keyed(s, "stat_monthly_not_closed", 2, "unit_code, organizer, not_closed, light, blocked",
                   as_of=late, month="2017-11")
    assert lights[("T001", "某單位")] == (4, "黃燈", False) and lights[("T001", sch)] == (1, "黃燈", False)
    assert lights[("T002", "某單位")] == (5, "紅燈", True)
    assert lights[("T003", "某單位")] == (0, "綠燈", False)
    # December's report judges the year's end (31 December), not the report date in the next year
    dec = datetime(2018, 1, 6, 6, 0, tzinfo=TAIPEI)
    publish_month(s, "2017-12", as_of=dec)
    days = q(s, "SELECT DISTINCT report_date FROM stat_monthly_not_closed WHERE month = '2017-12'")
    assert days == [(date(2017, 12, 31),)]
    assert keyed(s, "stat_monthly_not_closed", 2, "unit_code, organizer, not_closed", as_of=dec,
                 month="2017-12")[("T002", "某單位")] == (5,)


def test_transmission_status(wh_settings: Settings) -> None:
    s = wh_settings
    publish_month(s, M, as_of=AS_OF)
    rows = keyed(s, "stat_monthly_transmission", 1,
                 "unit_code, channel, files, feed_days, expected_days, on_time_files, late_files, refused_uploads, "
                 "status, courses_accepted, courses_rejected, attendance_accepted, attendance_rejected, refusals")
    assert rows == {
        # two files: one on time (loaded: C03 ×1, A03 ×2), one late and refused whole (F07, 3 courses)
        "T001": ("file", 2, 0, 0, 1, 1, 1, "準時", 4, 4, 6, 2, "A03×2、C03×1、F07×1"),
        "T002": ("file", 1, 0, 0, 0, 1, 0, "逾期", 3, 0, 4, 0, None),
        "T003": ("file", 0, 0, 0, 0, 0, 0, "未傳", 0, 0, 0, 0, None),  # its testing upload does not count
        "J005": ("db", 0, 2, 31, 0, 0, 0, "缺漏 29 日", 3, 0, 6, 0, None),  # two feed days (one twice)
        "J020": ("file", 0, 0, 0, 0, 0, 0, "未傳", 0, 0, 0, 0, None),
    }


@pytest.mark.parametrize(("month", "j05", "j20"), [
    # J05 joined 2016-12-15: months 2016-12 .. 2017-11 are its first 12 → every month
    # J20 joined 2015-09-01: 20 months before 2017-05 → January, April, July, October only
    ("2017-05", (True, "每月查核（加入未滿 12 個月）"), (False, None)),
    ("2017-07", (True, "每月查核（加入未滿 12 個月）"), (True, "每季查核")),
    ("2017-11", (True, "每月查核（加入未滿 12 個月）"), (False, None)),
    ("2017-12", (False, None), (False, None)),
    ("2018-01", (True, "每季查核＋前一年度全年查核"), (True, "每季查核＋前一年度全年查核")),
])
def test_audit_cadence(wh_settings: Settings, month: str, j05: tuple, j20: tuple) -> None:
    publish_month(wh_settings, month, as_of=AS_OF)
    audit = keyed(wh_settings, "stat_monthly_transmission", 1, "unit_code, audit_due, audit_scope", month=month)
    assert audit["J005"] == j05
    assert audit["J020"] == j20


def test_revision_keeps_earlier_publications(wh_settings: Settings) -> None:
    s = wh_settings
    first = publish_month(s, M, as_of=AS_OF)
    with Warehouse(s) as wh:  # a late supplement for May
        add_courses(wh.con, [c("T003", "L1", "2017-05-15", hours=2, closed_date="2017-05-16")])
        add_attendance(wh.con, [("T003", "L1", "t6", SV66, 2, True)])
    later = datetime(2017, 6, 20, 9, 0, tzinfo=TAIPEI)
    second = publish_month(s, M, as_of=later)
    assert second.revision == 2
    assert second.totals == {"courses": 8, "course_hours": 20.5, "person_times": 13, "teachers": 5,
                             "granted_hours": 41.0}
    pubs = q(s, "SELECT revision, courses, person_times FROM stat_publications WHERE month = ? ORDER BY 1", [M])
    assert pubs == [(1, 7, 12), (2, 8, 13)]
    # the first publication's figures are still there, unchanged
    assert keyed(s, "stat_monthly_course_county_level", 2, "county_code, level, courses")[("*", "*")] == (7,)
    assert keyed(s, "stat_monthly_course_county_level", 2, "county_code, level, courses", as_of=later)[
        ("*", "*")] == (8,)
    folder = s.home / "publish" / "monthly" / M / "revisions"
    assert sorted(p.name for p in folder.iterdir()) == ["r1-20170606T060000", "r2-20170620T090000"]
    ws = load_workbook(second.files[0])["發布紀錄"]
    values = [[cell.value for cell in row] for row in ws.iter_rows(min_row=5, max_row=6)]
    assert [v[0] for v in values] == [1, 2]
    assert values[1][-2:] == [1, 1]  # one more course, one more person-time than revision 1
    assert first.files == second.files  # the current files are replaced; revisions/ keeps both


def test_workbook_and_html(wh_settings: Settings) -> None:
    pub = publish_month(wh_settings, M, as_of=AS_OF)
    wb = load_workbook(pub.files[0])
    assert wb.sheetnames[0] == "1 課程縣市別" and "說明" in wb.sheetnames
    ws = wb.worksheets[0]
    assert "106年5月" in ws["A1"].value and ws["A1"].value.startswith("表1")
    assert ws.freeze_panes == "B5"  # two header rows (level groups, then 課程數/時數) stay visible
    assert ws["B3"].value == "幼兒園" and ws["B4"].value == "課程數"
    first_county = ws["A5"].value
    assert first_county == "臺北市" and ws["B5"].value == 1 and ws["C5"].value == 3
    last = ws.max_row
    totals = [r for r in ws.iter_rows(min_row=5, max_row=last, values_only=True) if r[0] == "合計"]
    assert totals[0][-2:] == (7, 18.5)
    organizers = [r for r in wb["3 開課單位類別"].iter_rows(min_row=4, values_only=True) if r[0]]
    assert organizers[:9] == [  # every type listed; universities one by one under type 3
        ("學校", 3, 4, 3, 5), ("縣市政府/教師研習中心", 1, 1.5, 1, 1.5), ("師資培育之大學", 3, 13, 8, 32.5),
        ("　國立臺灣師範大學", 2, 7, 6, 21), ("　國立高雄師範大學", 1, 6, 2, 11.5), ("其他大專校院", 0, 0, 0, 0),
        ("社教機構/法人團體", 0, 0, 0, 0), ("中央政府機關", 0, 0, 0, 0), ("教師專業組織/工會", 0, 0, 0, 0)]
    assert organizers[9] == ("合計", 7, 18.5, 12, 39)
    series = wb["7 近36個月趨勢"]
    assert len(series._charts) == 1
    lights = wb["4 未結案燈號"]
    red = [r for r in lights.iter_rows(min_row=4) if r[4].value == "紅燈"][0]
    assert red[0].value == "T002" and red[2].value == "某單位" and red[4].fill.fgColor.rgb.endswith("FFC7CE")
    county = [r for r in wb["4c 燈號縣市別"].iter_rows(min_row=3, values_only=True) if r[0] == "高雄市"]
    assert county == [("高雄市", 2, 1, 0, 1, 5)]
    page = Path(pub.files[1]).read_text(encoding="utf-8")
    assert "表1 106年5月各縣市研習課程數及時數" in page and "<svg" in page and "研習人次" in page
    assert "臺北市" in page and "紅燈" in page


@pytest.mark.slow
def test_html_screenshot(wh_settings: Settings, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (scripts/setup installs it)")
        pytest.skip("chromium not installed")
    pub = publish_month(wh_settings, M, as_of=AS_OF)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "publish-monthly-2017-05.png"
    shot.unlink(missing_ok=True)
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,5200",
                    "--hide-scrollbars", f"--screenshot={shot}", Path(pub.files[1]).as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000


# --- yearbook ------------------------------------------------------------------------------------------
def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


def test_yearbook_extract(wh_settings: Settings) -> None:
    s = wh_settings
    ext = publish_year(s, 2017, taken_at=datetime(2018, 1, 20, 9, 0, tzinfo=TAIPEI))
    # 2017 courses: April 12 (C7 2h, ten more of 1h) + May 7 (18.5h) = 19 courses, 31.5h;
    # completed rows: May 12 + C7 t1 = 13; teachers t1 t2 t3 t5 t6; granted 39.0 + 2.0 = 41.0
    assert ext.totals == {"courses": 19, "course_hours": 31.5, "person_times": 13, "teachers": 5,
                          "granted_hours": 41.0}
    # snapshot rows include the not completed: May C1 4, C2 2, C3 2, C4 1, C5 3, M5 1; April C7 2 = 15
    assert ext.snapshot.courses == 19 and ext.snapshot.attendance == 15
    out = s.home / "publish" / "yearbook" / "2017"
    # class type: 2 = C3 (6h; t5 6, t6 5.5) + D2 (1h); 3 = D3 (1h, nobody); 1 = the other 16
    assert read_csv(out / "y4_class_type.csv") == [
        ["代碼", "名稱", "課程數", "課程時數", "教師數", "人次", "核發時數", "每人平均時數"],
        ["1", "非學分班", "16", "23.5", "5", "11", "29.5", "5.90"],
        ["2", "學分班-學士", "2", "7.0", "2", "2", "11.5", "5.75"],
        ["3", "學分班-碩士", "1", "1.0", "0", "0", "0.0", ""],
        ["*", "合計", "19", "31.5", "5", "13", "41.0", "8.20"],
    ]
    # tags: T1 = C1 (t1 t2 t3); T2 = C1 C3 C5 (t1 t2 t3 t5 t6); T3 = C5 (t3 t6 t1)
    # tags per course county: 臺北市 C1 (T1;T2), C5 (T2;T3); 高雄市 C3 (T2); labels from the register
    by_county = [r[:6] for r in read_csv(out / "y7b_tag_county.csv")[1:]]
    assert by_county == [
        ["63000", "臺北市", "T1", "教專評鑑", "1", "3.0"], ["63000", "臺北市", "T2", "性平教育", "2", "7.0"],
        ["63000", "臺北市", "T3", "環境教育", "1", "4.0"], ["64000", "高雄市", "T2", "性平教育", "1", "6.0"],
        ["*", "全國", "T1", "教專評鑑", "1", "3.0"], ["*", "全國", "T2", "性平教育", "3", "13.0"],
        ["*", "全國", "T3", "環境教育", "1", "4.0"]]
    tags = read_csv(out / "y7_tag.csv")
    assert tags[1:4] == [["T1", "教專評鑑", "1", "3.0", "3", "3", "9.0", "3.00"],
                         ["T2", "性平教育", "3", "13.0", "5", "8", "32.5", "6.50"],
                         ["T3", "環境教育", "1", "4.0", "3", "3", "12.0", "4.00"]]
    assert tags[-1] == ["*", "合計", "3", "13.0", "5", "8", "32.5", "6.50"]
    assert len(tags) == 1 + 8 + 1
    # school county × level: t1 at 313601 (63000 E): C1 3, C2 2, C4 1.5, C5 4, C7 2 = 12.5h in 5 rows;
    # t2 at 313301 (63000 J): C1 3; t5 (64000 S): C2 2, C3 6, M5 1; t6 (66000 V): C3 5.5, C5 4;
    # t3 (unknown school): C1 3, C5 4
    y1 = {(r[0], r[2]): r[4:] for r in read_csv(out / "y1_school_county_level.csv")[1:]}
    assert y1 == {
        ("63000", "E"): ["1", "5", "12.5", "12.50"], ("63000", "J"): ["1", "1", "3.0", "3.00"],
        ("63000", "*"): ["2", "6", "15.5", "7.75"],
        ("64000", "S"): ["1", "3", "9.0", "9.00"], ("64000", "*"): ["1", "3", "9.0", "9.00"],
        ("66000", "V"): ["1", "2", "9.5", "9.50"], ("66000", "*"): ["1", "2", "9.5", "9.50"],
        ("未知", "未知"): ["1", "2", "7.0", "7.00"], ("未知", "*"): ["1", "2", "7.0", "7.00"],
        ("*", "E"): ["1", "5", "12.5", "12.50"], ("*", "J"): ["1", "1", "3.0", "3.00"],
        ("*", "S"): ["1", "3", "9.0", "9.00"], ("*", "V"): ["1", "2", "9.5", "9.50"],
        ("*", "未知"): ["1", "2", "7.0", "7.00"], ("*", "*"): ["5", "13", "41.0", "8.20"],
    }
    # course county × audience, 2017: 64000 = C3 (J;S 6h; t5 6, t6 5.5), C4 (E 1.5h; t1), M5 (E; t5),
    # M1-M4 (E), D3 (E, nobody)
    y2 = {(r[0], r[2]): r[4:] for r in read_csv(out / "y2_county_audience.csv")[1:]}
    assert y2[("64000", "E")] == ["7", "7.5", "2", "2", "2.5", "1.25"]
    assert y2[("64000", "J")] == ["1", "6.0", "2", "2", "11.5", "5.75"]
    assert y2[("64000", "*")] == ["8", "13.5", "3", "4", "14.0", "4.67"]
    # category: B = C3 only
    cat = {r[0]: r[2:] for r in read_csv(out / "y3_category.csv")[1:]}
    assert cat["B"] == ["1", "6.0", "2", "2", "11.5", "5.75"]
    wb = load_workbook(ext.files[0])
    assert "106年" in wb.worksheets[0]["A1"].value
    assert "中華民國師資培育統計年報 — 教師進修篇 106年" in wb.worksheets[0]["A2"].value
    notes = [r for r in wb["說明"].iter_rows(values_only=True) if r[0] == "快照編號"]
    assert notes[0][1] == ext.snapshot.snapshot_id == "2017-20180120T090000"


@pytest.mark.slow
def test_yearbook_snapshot_reproducible(wh_settings: Settings) -> None:
    s = wh_settings
    first = publish_year(s, 2017, taken_at=datetime(2018, 1, 20, 9, 0, tzinfo=TAIPEI))
    csvs = sorted(p for p in Path(first.files[0]).parent.glob("*.csv"))
    assert len(csvs) == 8
    before = {p.name: p.read_bytes() for p in csvs}
    with Warehouse(s) as wh:  # the warehouse moves on after the snapshot
        add_courses(wh.con, [c("T003", "L1", "2017-09-15", hours=2, closed_date="2017-09-16")])
        add_attendance(wh.con, [("T003", "L1", "t6", SV66, 2, True)])
        wh.con.execute("UPDATE courses SET hours = 9 WHERE course_code = 'C1'")
    again = publish_year(s, 2017, snapshot=first.snapshot.snapshot_id)
    assert again.snapshot.snapshot_id == first.snapshot.snapshot_id
    assert {p.name: p.read_bytes() for p in csvs} == before  # byte-identical
    latest = publish_year(s, 2017, snapshot="latest")
    assert latest.totals == first.totals
    fresh = publish_year(s, 2017, taken_at=datetime(2018, 2, 1, 9, 0, tzinfo=TAIPEI))
    assert fresh.totals["courses"] == 20 and fresh.totals["course_hours"] == 39.5  # 31.5 + 2 + (9 - 3)
    assert q(s, "SELECT snapshot_id, courses, attendance FROM yearbook_snapshots ORDER BY taken_at") == [
        ("2017-20180120T090000", 19, 15), ("2017-20180201T090000", 20, 16)]


@pytest.mark.slow
def test_yearbook_teacher_ids_exact_path(wh_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Teachers are counted by hash(teacher_key) unless two keys collide; the exact fallback (dense
    ids) must give the same bytes."""
    import inservice.publish.yearbook as yb

    first = publish_year(wh_settings, 2017, taken_at=datetime(2018, 1, 20, 9, 0, tzinfo=TAIPEI))
    csvs = sorted(Path(first.files[0]).parent.glob("*.csv"))
    hashed = {p.name: p.read_bytes() for p in csvs}
    monkeypatch.setattr(yb, "TEACHER_HASH", False)
    publish_year(wh_settings, 2017, snapshot=first.snapshot.snapshot_id)
    assert {p.name: p.read_bytes() for p in csvs} == hashed


# --- export ---------------------------------------------------------------------------------------------
def test_export_county(wh_settings: Settings) -> None:
    s = wh_settings
    # the register: T001 and T003 in 63000 (T003's D3 is coded 64000 and comes along), T002 in 64000
    ex = export_county(s, "63000", "2017-04", "2017-05", "csv")
    assert ex.units == ["T001", "T003"]
    # T001: C1 C2 N5 C7 N1-N4 = 8; T003: C5 D2 D3 X1 = 4 (P1 is 2016, C6 withdrawn)
    # attendance: C1 4, C2 2, C7 2, C5 3 = 11
    assert ex.rows == {"courses": 12, "attendance": 11}
    courses = read_csv(Path(ex.files[0]))
    assert "D3" in {r[1] for r in courses[1:]}  # the unit's course in another county comes along
    att = read_csv(Path(ex.files[1]))
    assert att[0] == ["unit_code", "course_code", "teacher_key", "school_code", "hours_granted", "completed",
                      "modified_at"]
    assert not any(h in att[0] for h in ("national_id", "name"))
    pq = export_county(s, "64000", "2017-05", "2017-05", "parquet")
    assert pq.units == ["T002"] and pq.rows == {"courses": 3, "attendance": 4}  # C3 C4 M5; C3 2, C4 1, M5 1
    assert duckdb.sql(f"SELECT count(*) FROM '{pq.files[1]}'").fetchall() == [(4,)]
    xl = export_county(s, "63000", "2017-05", "2017-05", "xlsx")
    wb = load_workbook(xl.files[0], read_only=True)
    assert wb.sheetnames == ["課程", "研習名單", "說明"]
    assert next(wb["研習名單"].iter_rows(values_only=True))[2] == "教師假名鍵"
    assert sum(1 for _ in wb["課程"].iter_rows()) == 1 + 4  # C1 C2 N5 C5


# --- CLI -----------------------------------------------------------------------------------------------
TOTAL_KEYS = {"courses", "course_hours", "person_times", "teachers", "granted_hours"}


def run_json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # exactly one JSON object
    return json.loads(out[0])


@pytest.mark.slow
def test_cli_json(wh_settings: Settings, capsys: pytest.CaptureFixture) -> None:
    home = ["--home", str(wh_settings.home)]
    st = run_json(capsys, [*home, "stats", "--month", M, "--as-of", "2017-06-06T06:00:00", "--json"])
    assert {"month", "as_of", "files", "totals"} <= set(st) and set(st["totals"]) == TOTAL_KEYS
    assert st["month"] == M and st["as_of"] == "2017-06-06T06:00:00+08:00"
    assert st["totals"]["courses"] == 7 and all(Path(f).exists() for f in st["files"])
    yb = run_json(capsys, [*home, "yearbook", "--year", "2017", "--json"])
    assert {"year", "as_of", "files", "totals"} <= set(yb) and set(yb["totals"]) == TOTAL_KEYS
    assert yb["year"] == 2017 and yb["totals"]["person_times"] == 13
    again = run_json(capsys, [*home, "yearbook", "--year", "2017", "--snapshot", yb["snapshot_id"], "--json"])
    assert again["totals"] == yb["totals"] and again["as_of"] == yb["as_of"]
    ex = run_json(capsys, [*home, "export", "--county", "64000", "--from", "2017-04", "--to", "2017-05",
                           "--format", "csv", "--json"])
    assert ex["units"] == ["T002"] and ex["rows"] == {"courses": 7, "attendance": 4}  # M1-M4 too
    assert main([*home, "stats", "--month", "2017-13", "--json"]) == 1
    assert "YYYY-MM" in capsys.readouterr().err


# --- Dagster --------------------------------------------------------------------------------------------
def test_dagster_assets(wh_settings: Settings) -> None:
    import dagster as dg

    from inservice.assets.publish import PUBLISH_ASSETS, monthly_statistics
    from inservice.assets.shared import InserviceResource
    from inservice.pipelines.publish import PUBLISH_JOBS, PUBLISH_SCHEDULES

    assert [s.cron_schedule for s in PUBLISH_SCHEDULES] == ["0 6 6 * *"]
    assert PUBLISH_SCHEDULES[0].execution_timezone == "Asia/Taipei"
    assert {j.name for j in PUBLISH_JOBS} == {"publish_monthly", "publish_yearbook", "publish_county_export"}
    assert PUBLISH_SCHEDULES[0].default_status == dg.DefaultScheduleStatus.RUNNING  # on, as the README says
    repo = dg.Definitions(assets=PUBLISH_ASSETS, jobs=PUBLISH_JOBS, schedules=PUBLISH_SCHEDULES,
                          resources={"inservice": InserviceResource()}).get_repository_def()
    for tick, key in ((datetime(2017, 6, 6, 6, 0, tzinfo=TAIPEI), "2017-05"),
                      (datetime(2018, 1, 6, 6, 0, tzinfo=TAIPEI), "2017-12")):
        [req] = PUBLISH_SCHEDULES[0].evaluate_tick(
            dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)).run_requests
        assert req.partition_key == key
    assert all(a.group_names_by_key[a.key] == "publish" for a in PUBLISH_ASSETS)
    result = dg.materialize([monthly_statistics], partition_key=M,
                            resources={"inservice": InserviceResource(home=str(wh_settings.home))})
    assert result.success
    [mat] = result.asset_materializations_for_node("monthly_statistics")
    assert mat.metadata["courses"].value == 7 and mat.metadata["person_times"].value == 12
