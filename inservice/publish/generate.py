"""Synthetic warehouse for the publication bench: courses, attendance, units, uploads and findings made
in DuckDB SQL from range() and hash() (no Python per row), shaped like the spec's data.

Courses start uniformly over 2013-01-01 .. 2018-12-31; each course has attendance_per_course rows
with distinct teachers drawn from a pool whose schools come from the MOE list (1% unknown).
Rows are stored in the order a real warehouse receives them (uploads append): courses by start
date, attendance by load day — within 20 days of the course's start, or for 2% (late supplements,
補傳) 2 to 24 months later. Only database-feed units have courses without closed_date (a file
upload's course must be closed, C10). Deterministic: the same arguments give the same rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb

from inservice.publish.common import COUNTY_ORDER, register_refs

FIRST_DAY, DAYS = "2013-01-01", 2191  # 2013-01-01 .. 2018-12-31


@dataclass(frozen=True)
class Sizes:
    courses: int = 2_000_000
    attendance: int = 20_000_000
    units: int = 300  # partner units (counties' systems, universities, agencies), not schools
    teachers: int = 200_000

    @classmethod
    def scaled(cls, scale: float) -> Sizes:
        base = cls()
        return cls(max(int(base.courses * scale), 100), max(int(base.attendance * scale), 1_000),
                   max(int(base.units * min(1.0, scale * 10)), 20), max(int(base.teachers * scale), 500))


def _start_day(h: str) -> str:
    """The course's start, as days after FIRST_DAY, from its hash (shared by courses and attendance)."""
    return f"CAST(({h} >> 12) % {DAYS} AS INTEGER)"


def generate(con: duckdb.DuckDBPyConnection, sizes: Sizes, log: bool = True) -> dict[str, float]:
    """Fill the (empty) production tables; returns seconds per step."""
    register_refs(con)
    timings: dict[str, float] = {}
    counties = "[" + ", ".join(f"'{c}'" for c in COUNTY_ORDER[:-1]) + "]"
    per_course = max(sizes.attendance // sizes.courses, 1)
    n_schools = con.execute("SELECT count(*) FROM pub_ref_schools").fetchall()[0][0]

    def step(name: str, sql: str, params: list | None = None) -> None:
        t = time.perf_counter()
        con.execute(sql, params or [])
        timings[name] = time.perf_counter() - t
        if log:
            print(f"  generate {name}: {timings[name]:.1f} s", flush=True)

    unit = "'U' || lpad(CAST(({i}) % {u} AS VARCHAR), 5, '0')".format
    step("units", f"""INSERT INTO units BY NAME
        SELECT {unit(i='i', u=sizes.units)} AS unit_code, '單位' || i AS name,
               CASE WHEN i % 10 = 0 THEN 'db' ELSE 'file' END AS channel, 'production' AS state,
               DATE '2012-01-01' + CAST(hash(i, 'joined') % 2400 AS INTEGER) AS joined, now() AS updated_at
        FROM range({sizes.units}) t(i)""")
    # a course: its unit's county mostly (1 in 20 elsewhere), a start day, attributes from bits of its hash
    # BY NAME: columns added to the warehouse later stay NULL here
    step("courses", f"""INSERT INTO main.courses BY NAME
        SELECT {unit(i='i', u=sizes.units)} AS unit_code, 'C' || i AS course_code,
            CASE WHEN h % 200 = 0 THEN '106學年度第1次校務會議' WHEN h % 200 = 1 THEN '期末校務會議暨研習'
                 ELSE '研習課程' || (h % 5000) END AS title,
            CASE WHEN (h >> 3) % 7 = 2 THEN '師資培育大學' || ((h >> 8) % 12)
                 ELSE '開課單位' || (i % {sizes.units}) END AS organizer,
            CAST((h >> 3) % 7 + 1 AS VARCHAR) AS organizer_type,
            {counties}[CAST(CASE WHEN (h >> 56) % 20 = 0 THEN (h >> 50) % 22 ELSE (i % {sizes.units}) % 22 END
                            AS BIGINT) + 1] AS county_code,
            DATE '{FIRST_DAY}' + {_start_day('h')} AS start_date,
            start_date + CAST((h >> 24) % 3 AS INTEGER) AS end_date,
            CAST(((h >> 27) % 12 + 1) * 0.5 AS DECIMAL(5, 1)) AS hours,
            CASE (h >> 31) % 50 WHEN 0 THEN '2' WHEN 1 THEN '3' ELSE '1' END AS class_type,
            chr(CAST(65 + (h >> 37) % 6 AS INTEGER)) AS category, CAST((h >> 40) % 6 + 1 AS VARCHAR) AS delivery,
            CAST((h >> 43) % 6 + 1 AS VARCHAR) AS time_slot,
            ['E', 'J', 'K;E', 'E;J', 'S;V', 'A', 'X', 'J;S', 'E', 'K'][CAST((h >> 46) % 10 AS BIGINT) + 1] AS audience,
            CASE (h >> 33) % 10 WHEN 0 THEN 'T1' WHEN 1 THEN 'T2;T3' WHEN 2 THEN 'T5' WHEN 3 THEN 'T4;T7;T8'
                 ELSE NULL END AS tags,
            CASE WHEN (i % {sizes.units}) % 10 = 0 AND (h >> 20) % 100 < 15 THEN NULL
                 ELSE end_date + CAST((h >> 16) % 12 AS INTEGER) END AS closed_date,
            CAST(end_date AS TIMESTAMP) AS modified_at, (h >> 52) % 500 = 0 AS is_deleted,
            'G-' || {unit(i='i', u=sizes.units)} || '-' || strftime(start_date, '%Y%m') AS upload_id, now() AS loaded_at
        FROM (SELECT i, hash(i) AS h FROM range({sizes.courses}) t(i))
        ORDER BY start_date, i""")
    step("teachers", f"""CREATE OR REPLACE TEMP TABLE gen_teachers AS
        WITH s AS (SELECT row_number() OVER (ORDER BY school_code) - 1 AS n, school_code FROM pub_ref_schools)
        SELECT t.i, sha256('teacher-' || t.i) AS teacher_key,
               CASE WHEN t.i % 100 = 0 THEN 'ZZ' || lpad(CAST(t.i % 9999 AS VARCHAR), 4, '0')
                    ELSE s.school_code END AS school_code
        FROM range({sizes.teachers}) t(i) JOIN s ON s.n = hash(t.i, 'school') % {n_schools}""")
    # attendance row j belongs to course j // per_course; course fields are recomputed from its hash
    step("attendance", f"""INSERT INTO main.attendance BY NAME
        SELECT {unit(i='a.ci', u=sizes.units)} AS unit_code, 'C' || a.ci AS course_code, t.teacher_key,
               t.school_code, CASE WHEN a.h % 20 = 0 THEN 0
                                   ELSE CAST(((hash(a.ci) >> 27) % 12 + 1) * 0.5 AS DECIMAL(5, 1)) END AS hours_granted,
               a.h % 20 <> 0 AS completed, a.h % 1000 = 0 AS is_deleted, 'G' AS upload_id, now() AS loaded_at
        FROM (SELECT j, j // {per_course} AS ci, hash(j, 'a') AS h FROM range({sizes.attendance}) r(j)
              WHERE j // {per_course} < {sizes.courses}) a
        JOIN gen_teachers t ON t.i = (hash(a.ci) + (a.j % {per_course}) * 7919) % {sizes.teachers}
        ORDER BY {_start_day('hash(a.ci)')} + CASE WHEN hash(a.j, 'late') % 50 = 0
                                                  THEN 60 + CAST(hash(a.j, 'lag') % 660 AS INTEGER)
                                                  ELSE CAST(hash(a.j, 'lag') % 20 AS INTEGER) END, a.j""")
    # monthly files for file units (one in 8 late, one in 50 refused) and daily feeds for db units
    step("uploads", f"""INSERT INTO uploads (upload_id, unit_code, channel, file_name, data_month, received_at,
            on_time, area, status, refusal, courses_accepted, courses_rejected, attendance_accepted,
            attendance_rejected, processed_at)
        SELECT 'G-' || u.unit_code || '-' || strftime(m, '%Y%m'), u.unit_code, 'file',
               u.unit_code || '_' || strftime(m, '%Y%m') || '.xlsx', strftime(m, '%Y-%m'),
               m + INTERVAL 1 MONTH + to_days(CAST(hash(u.unit_code, m) % 9 AS INTEGER)), hash(u.unit_code, m) % 9 < 5,
               'production', CASE WHEN hash(u.unit_code, m, 'r') % 50 = 0 THEN 'refused' ELSE 'loaded' END,
               CASE WHEN hash(u.unit_code, m, 'r') % 50 = 0 THEN 'F07' END,
               hash(u.unit_code, m) % 40, hash(u.unit_code, m) % 3, hash(u.unit_code, m) % 400,
               hash(u.unit_code, m) % 7, now()
        FROM units u, generate_series(DATE '{FIRST_DAY}', DATE '2018-12-01', INTERVAL 1 MONTH) g(m)
        WHERE u.channel = 'file'
        UNION ALL
        SELECT 'D-' || u.unit_code || '-' || strftime(d, '%Y%m%d'), u.unit_code, 'db', NULL, strftime(d, '%Y-%m'),
               d + INTERVAL 2 HOUR, true, 'production', 'loaded', NULL, 5, 0, 50, 0, now()
        FROM units u, generate_series(DATE '{FIRST_DAY}', DATE '2018-12-31', INTERVAL 1 DAY) g(d)
        WHERE u.channel = 'db' AND hash(u.unit_code, d) % 30 <> 0""")
    step("findings", """INSERT INTO findings BY NAME
        SELECT upload_id, 'course' AS record, 2 AS "row", 'title' AS field, r.rule, 'warning' AS severity,
               course_code, '會議名稱' AS message_zh, 'meeting title' AS message_en
        FROM main.courses, (VALUES ('W01'), ('W02')) r(rule)
        WHERE title LIKE '%校務會議%' AND (r.rule = 'W01' OR title = '106學年度第1次校務會議')
        UNION ALL
        SELECT upload_id, 'attendance', CAST(hash(upload_id) % 400 AS BIGINT) + 2, 'national_id', 'A03', 'error',
               NULL, '身分證字號錯誤', 'invalid national ID'
        FROM uploads WHERE channel = 'file' AND hash(upload_id) % 3 = 0""")
    con.execute("DROP TABLE gen_teachers")
    return timings
