"""Yearbook extract (中華民國師資培育統計年報 — 教師進修篇, spec §7) from a frozen snapshot.

A snapshot is the year's courses (by start_date) and their attendance, written once as Parquet under
publish/yearbook/YYYY/snapshots/<id>/ with the teacher's school county and level resolved at that
moment, and registered in `yearbook_snapshots` with row counts and file hashes. The extract reads
only the snapshot, so running it again on the same snapshot gives byte-identical CSVs.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

from inservice.channel import sha256_file
from inservice.config import Settings
from inservice.publish.common import (
    ALL,
    ROW_GROUP,
    UNKNOWN,
    Col,
    Report,
    as_of_now,
    course_join,
    ensure_tables,
    fetch,
    fmt_value,
    parse_year,
    register_refs,
    roc_year,
    rowid_ranges,
)
from inservice.publish.workbook import write_workbook
from inservice.registers.schools import VALID_ON
from inservice.warehouse import checks
from inservice.warehouse.analyst import AccessRefresh, WriteSession
from inservice.warehouse.compute import compute_session
from inservice.warehouse.ddl import sql_text

DOC_TITLE = "中華民國師資培育統計年報 — 教師進修篇"
COURSE_COLS = ("unit_code", "course_code", "title", "organizer", "organizer_type", "county_code", "start_date",
               "end_date", "hours", "class_type", "category", "delivery", "time_slot", "audience", "tags",
               "closed_date", "modified_at")
TEACHER_HASH = True  # count teachers by hash(teacher_key) when no two keys collide (see _load)
MEASURES = [Col("課程數"), Col("課程時數", "dec1"), Col("教師數"), Col("人次"), Col("核發時數", "dec1"),
            Col("每人平均時數", "dec2")]


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    year: int
    taken_at: datetime
    courses: int
    attendance: int
    path: Path


@dataclass(frozen=True)
class Extract:
    year: int
    snapshot: Snapshot
    files: list[str]
    totals: dict
    access: AccessRefresh | None = None  # the analysts' refresh after the snapshot's commit

    def as_json(self) -> dict:
        return {"year": self.year, "as_of": self.snapshot.taken_at.isoformat(),
                "snapshot_id": self.snapshot.snapshot_id, "files": self.files, "totals": self.totals}


def yearbook_dir(settings: Settings, year: int) -> Path:
    return settings.home / "publish" / "yearbook" / f"{year:04d}"


def take_snapshot(con: duckdb.DuckDBPyConnection, settings: Settings, year: int, taken_at: datetime) -> Snapshot:
    """Freeze the year's production courses and attendance (not deleted) into Parquet and register it."""
    base = f"{year}-{taken_at:%Y%m%dT%H%M%S}"
    existing = {r[0] for r in fetch(con, "SELECT snapshot_id FROM yearbook_snapshots WHERE snapshot_id LIKE ?",
                                    [base + "%"])}
    snapshot_id, n = base, 2
    while snapshot_id in existing:
        snapshot_id, n = f"{base}-{n}", n + 1
    folder = yearbook_dir(settings, year) / "snapshots" / snapshot_id
    folder.mkdir(parents=True, exist_ok=True)
    cols = ", ".join(f'"{c}"' for c in COURSE_COLS)
    # cid: the snapshot's own course number (by unit, course), so the extract joins on an integer
    con.execute(f"""CREATE OR REPLACE TEMP TABLE y_sc AS
        SELECT CAST(row_number() OVER (ORDER BY unit_code, course_code) AS INTEGER) AS cid, {cols}
        FROM main.courses WHERE start_date >= ? AND start_date < ? AND NOT coalesce(is_deleted, false)""",
                [f"{year}-01-01", f"{year + 1}-01-01"])
    # key columns first, to find the row groups holding the year's attendance (common.rowid_ranges)
    within = rowid_ranges(con, f"""SELECT DISTINCT a.rowid // {ROW_GROUP} FROM main.attendance a
        JOIN y_sc c ON {course_join('a', 'c')}""")
    # the teacher's school county and level (the register's version on the course's start date) are frozen
    # with the row: a later school list changes nothing
    con.execute(f"""CREATE OR REPLACE TEMP TABLE y_att AS
        SELECT c.cid, a.unit_code, a.course_code, a.teacher_key, a.school_code,
               coalesce(s.county_code, '{UNKNOWN}') AS school_county, coalesce(s.level, '{UNKNOWN}') AS school_level,
               a.hours_granted, coalesce(a.completed, false) AS completed
        FROM main.attendance a JOIN y_sc c ON {course_join('a', 'c')}
        LEFT JOIN main.school_register s ON s.school_code = a.school_code AND {VALID_ON.format(d='c.start_date')}
        WHERE {within} AND NOT coalesce(a.is_deleted, false)""")
    # the files are written from these temp tables, which the extract then reads (Parquet round-trips
    # them exactly; a later run on this snapshot reads the files)
    con.execute(f"COPY y_sc TO {sql_text(str(folder / 'courses.parquet'))} (FORMAT parquet)")
    con.execute(f"COPY y_att TO {sql_text(str(folder / 'attendance.parquet'))} (FORMAT parquet)")
    n_courses = fetch(con, "SELECT count(*) FROM y_sc")[0][0]
    n_att = fetch(con, "SELECT count(*) FROM y_att")[0][0]
    hashes = {p: sha256_file(folder / f"{p}.parquet") for p in ("courses", "attendance")}
    con.execute("INSERT INTO yearbook_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [snapshot_id, year, taken_at, n_courses, n_att, str(folder), hashes["courses"], hashes["attendance"]])
    (folder / "manifest.json").write_text(json.dumps({
        "snapshot_id": snapshot_id, "year": year, "taken_at": taken_at.isoformat(),
        "rows": {"courses": n_courses, "attendance": n_att},
        "sha256": {f"{p}.parquet": h for p, h in hashes.items()},
        "source": "warehouse schema main (production), is_deleted false; courses by start_date in the year",
    }, ensure_ascii=False, indent=2), encoding="utf-8")
    return Snapshot(snapshot_id, year, taken_at, n_courses, n_att, folder)


def find_snapshot(con: duckdb.DuckDBPyConnection, year: int, snapshot_id: str) -> Snapshot:
    if snapshot_id == "latest":
        rows = fetch(con, """SELECT snapshot_id, year, taken_at, courses, attendance, path FROM yearbook_snapshots
            WHERE year = ? ORDER BY taken_at DESC, snapshot_id DESC LIMIT 1""", [year])
    else:
        rows = fetch(con, """SELECT snapshot_id, year, taken_at, courses, attendance, path FROM yearbook_snapshots
            WHERE snapshot_id = ?""", [snapshot_id])
    if not rows:
        raise ValueError(f"no yearbook snapshot {snapshot_id!r} for {year}")
    sid, y, taken, nc, na, path = rows[0]
    if y != year:
        raise ValueError(f"snapshot {sid} is of {y}, not {year}")
    folder = Path(path)
    for part, column in (("courses", "courses_sha256"), ("attendance", "attendance_sha256")):
        expected = fetch(con, f"SELECT {column} FROM yearbook_snapshots WHERE snapshot_id = ?", [sid])[0][0]
        if sha256_file(folder / f"{part}.parquet") != expected:  # a frozen snapshot must not have changed
            raise ValueError(f"snapshot {sid}: {part}.parquet does not match its recorded hash")
    return Snapshot(sid, y, as_of_now(taken), nc, na, folder)


# --- the extract -------------------------------------------------------------------------------------
def _load(con: duckdb.DuckDBPyConnection, snap: Snapshot, fresh: bool) -> None:
    """y_sa: completed attendance with its course's attributes; every table aggregates it, no re-join."""
    if not fresh:  # a snapshot taken earlier: its files, nothing else
        con.execute(f"""CREATE OR REPLACE TEMP TABLE y_sc AS
            SELECT * FROM read_parquet({sql_text(str(snap.path / 'courses.parquet'))})""")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE y_att AS
            SELECT * FROM read_parquet({sql_text(str(snap.path / 'attendance.parquet'))})""")
    # teachers are counted by a 64-bit hash of teacher_key (integer distinct counts are several times
    # cheaper than on 64-character keys); exact unless two keys collide, which is checked, and then
    # dense integer ids are used instead
    exact = not TEACHER_HASH or not fetch(con, """SELECT count(DISTINCT teacher_key) = count(DISTINCT hash(teacher_key))
        FROM y_att WHERE completed""")[0][0]
    teacher, join = "hash(a.teacher_key)", ""
    if exact:
        con.execute("""CREATE OR REPLACE TEMP TABLE y_teachers AS SELECT teacher_key, row_number() OVER () AS tid
            FROM (SELECT DISTINCT teacher_key FROM y_att WHERE completed)""")
        teacher, join = "t.tid", "JOIN y_teachers t USING (teacher_key)"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE y_sa AS
        SELECT a.cid, {teacher} AS teacher, a.school_county, a.school_level, a.hours_granted,
               c.county_code, c.audience, c.category, c.class_type, c.delivery, c.organizer_type, c.tags
        FROM y_att a JOIN y_sc c USING (cid) {join}
        WHERE a.completed""")


def _per_teacher(gh: str, teachers: str) -> str:
    return f"CASE WHEN {teachers} > 0 THEN CAST(round({gh} / {teachers}, 2) AS DECIMAL(18, 2)) END"


def _one_dim(con: duckdb.DuckDBPyConnection, list_name: str, column: str, multi: bool) -> list[tuple]:
    """Measures by one course attribute; a multi-valued attribute (tags) counts a course under each code
    and its total row counts courses with any code once."""
    k = f"unnest(string_split({column}, ';'))" if multi else column
    having = f"WHERE coalesce({column}, '') <> ''" if multi else ""
    return fetch(con, f"""
        WITH cm AS (SELECT k, count(*) AS courses, sum(hours) AS hours FROM (SELECT {k} AS k, hours FROM y_sc {having})
                    GROUP BY k
                    UNION ALL SELECT '{ALL}', count(*), coalesce(sum(hours), 0) FROM y_sc {having}),
        am AS (SELECT k, count(DISTINCT teacher) AS teachers, count(*) AS pt, sum(hours_granted) AS gh
               FROM (SELECT {k} AS k, teacher, hours_granted FROM y_sa {having}) GROUP BY k
               UNION ALL SELECT '{ALL}', count(DISTINCT teacher), count(*), coalesce(sum(hours_granted), 0)
               FROM y_sa {having}),
        keys AS (SELECT code, label, ord FROM pub_ref_codes WHERE list = '{list_name}'
                 UNION ALL SELECT DISTINCT k, k, 800 FROM cm WHERE k NOT IN
                     (SELECT code FROM pub_ref_codes WHERE list = '{list_name}'))
        SELECT keys.code, keys.label, coalesce(cm.courses, 0), coalesce(cm.hours, 0), coalesce(am.teachers, 0),
               coalesce(am.pt, 0), coalesce(am.gh, 0), {_per_teacher('am.gh', 'am.teachers')}
        FROM keys LEFT JOIN cm ON cm.k = keys.code LEFT JOIN am ON am.k = keys.code
        ORDER BY keys.ord, keys.code""")


_TWO_DIM_ORDER = f"""
    LEFT JOIN pub_ref_codes kc ON kc.list = 'county' AND kc.code = r.county
    LEFT JOIN pub_ref_codes kl ON kl.list = 'level' AND kl.code = r.level
    ORDER BY r.county = '{ALL}', coalesce(kc.ord, 800), r.county, coalesce(kl.ord, 800), r.level"""


def _county_label(col: str) -> str:
    return f"CASE WHEN {col} = '{ALL}' THEN '全國' ELSE coalesce(kc.label, {col}) END"


def _level_label(col: str) -> str:
    return f"CASE WHEN {col} = '{ALL}' THEN '合計' ELSE coalesce(kl.label, {col}) END"


def _county_audience(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Course county × audience level; (county) and () rows come from whole courses, counted once."""
    lv = "unnest(string_split(audience, ';'))"
    return fetch(con, f"""
        WITH cm AS (
            SELECT coalesce(county_code, '{ALL}') AS county, level, count(*) AS courses, sum(hours) AS hours
            FROM (SELECT county_code, {lv} AS level, hours FROM y_sc)
            GROUP BY GROUPING SETS ((county_code, level), (level))
            UNION ALL
            SELECT coalesce(county_code, '{ALL}'), '{ALL}', count(*), coalesce(sum(hours), 0)
            FROM y_sc GROUP BY GROUPING SETS ((county_code), ())),
        am AS (
            SELECT coalesce(county_code, '{ALL}') AS county, level, count(DISTINCT teacher) AS teachers,
                   count(*) AS pt, sum(hours_granted) AS gh
            FROM (SELECT county_code, {lv} AS level, teacher, hours_granted FROM y_sa)
            GROUP BY GROUPING SETS ((county_code, level), (level))
            UNION ALL
            SELECT coalesce(county_code, '{ALL}'), '{ALL}', count(DISTINCT teacher), count(*),
                   coalesce(sum(hours_granted), 0)
            FROM y_sa GROUP BY GROUPING SETS ((county_code), ())),
        r AS (SELECT cm.county, cm.level, cm.courses, cm.hours, coalesce(am.teachers, 0) AS teachers,
                     coalesce(am.pt, 0) AS pt, coalesce(am.gh, 0) AS gh
              FROM cm LEFT JOIN am USING (county, level))
        SELECT r.county, {_county_label('r.county')}, r.level, {_level_label('r.level')}, r.courses, r.hours,
               r.teachers, r.pt, r.gh, {_per_teacher('r.gh', 'r.teachers')}
        FROM r {_TWO_DIM_ORDER}""")


def _county_tags(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Course county × tag (a course counts under each of its tags), and the national row of each tag."""
    tag = "unnest(string_split(tags, ';'))"
    return fetch(con, f"""
        WITH cm AS (SELECT coalesce(county_code, '{ALL}') AS county, tag, count(*) AS courses, sum(hours) AS hours
                    FROM (SELECT county_code, {tag} AS tag, hours FROM y_sc WHERE coalesce(tags, '') <> '')
                    GROUP BY GROUPING SETS ((county_code, tag), (tag))),
        am AS (SELECT coalesce(county_code, '{ALL}') AS county, tag, count(DISTINCT teacher) AS teachers,
                      count(*) AS pt, sum(hours_granted) AS gh
               FROM (SELECT county_code, {tag} AS tag, teacher, hours_granted FROM y_sa WHERE coalesce(tags, '') <> '')
               GROUP BY GROUPING SETS ((county_code, tag), (tag)))
        SELECT cm.county, {_county_label('cm.county')}, cm.tag, coalesce(kt.label, cm.tag), cm.courses, cm.hours,
               coalesce(am.teachers, 0), coalesce(am.pt, 0), coalesce(am.gh, 0),
               {_per_teacher('coalesce(am.gh, 0)', 'coalesce(am.teachers, 0)')}
        FROM cm LEFT JOIN am USING (county, tag)
        LEFT JOIN pub_ref_codes kc ON kc.list = 'county' AND kc.code = cm.county
        LEFT JOIN pub_ref_codes kt ON kt.list = 'tag' AND kt.code = cm.tag
        ORDER BY cm.county = '{ALL}', coalesce(kc.ord, 800), cm.county, coalesce(kt.ord, 800), cm.tag""")


def _school_county_level(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """The teacher's school county × school level (every subtotal, distinct teachers at each). Grouped
    by (county, level, teacher) first, then counted: cheaper than count(DISTINCT) over every row."""
    return fetch(con, f"""
        WITH p AS (SELECT school_county, school_level, teacher, count(*) AS pt, sum(hours_granted) AS gh
                   FROM y_sa GROUP BY ALL),
        r AS (
            SELECT CASE WHEN grouping(school_county) = 1 THEN '{ALL}' ELSE school_county END AS county,
                   CASE WHEN grouping(school_level) = 1 THEN '{ALL}' ELSE school_level END AS level,
                   count(DISTINCT teacher) AS teachers, sum(pt) AS pt, sum(gh) AS gh
            FROM p GROUP BY CUBE (school_county, school_level))
        SELECT r.county, {_county_label('r.county')}, r.level, {_level_label('r.level')}, r.teachers,
               r.pt, r.gh, {_per_teacher('r.gh', 'r.teachers')}
        FROM r {_TWO_DIM_ORDER}""")


def _totals(con: duckdb.DuckDBPyConnection) -> dict:
    c = fetch(con, "SELECT count(*), coalesce(sum(hours), 0) FROM y_sc")[0]
    a = fetch(con, "SELECT count(*), count(DISTINCT teacher), coalesce(sum(hours_granted), 0) FROM y_sa")[0]
    return {"courses": int(c[0]), "course_hours": float(c[1]), "person_times": int(a[0]), "teachers": int(a[1]),
            "granted_hours": float(a[2])}


def build_reports(con: duckdb.DuckDBPyConnection, year: int) -> list[Report]:
    roc = roc_year(year)
    code_name = [Col("代碼", "text"), Col("名稱", "text")]
    two = [Col("縣市代碼", "text"), Col("縣市", "text"), Col("教育階段代碼", "text"), Col("教育階段", "text")]
    reports = [
        Report("y1_school_county_level", "1 教師縣市×教育階段",
               f"表1 {roc}教師進修人數、人次及時數（依服務學校縣市及教育階段）",
               [*two, Col("教師數"), Col("人次"), Col("核發時數", "dec1"), Col("每人平均時數", "dec2")],
               _school_county_level(con),
               notes=["依教師服務學校（快照時之教育部學校名冊）；查無者為「未知」。教師數為不重複人數，小計、合計亦同。",
                      "課程數及課程時數依課程之縣市及研習對象，見表2。"]),
        Report("y2_county_audience", "2 課程縣市×研習對象", f"表2 {roc}研習課程數及時數（依課程縣市及研習對象）",
               [*two, *MEASURES], _county_audience(con),
               notes=["開放多個研習對象之課程於各對象各計一次；縣市合計（教育階段「合計」）僅計一次。"]),
        Report("y3_category", "3 課程類別", f"表3 {roc}研習課程（依課程類別）", [*code_name, *MEASURES],
               _one_dim(con, "category", "category", False)),
        Report("y4_class_type", "4 班別性質", f"表4 {roc}研習課程（依班別性質）", [*code_name, *MEASURES],
               _one_dim(con, "class_type", "class_type", False)),
        Report("y5_delivery", "5 實施方式", f"表5 {roc}研習課程（依實施方式）", [*code_name, *MEASURES],
               _one_dim(con, "delivery", "delivery", False)),
        Report("y6_organizer_type", "6 開課單位類別", f"表6 {roc}研習課程（依開課單位類別）", [*code_name, *MEASURES],
               _one_dim(con, "organizer_type", "organizer_type", False)),
        Report("y7_tag", "7 屬性標籤", f"表7 {roc}研習課程（依屬性標籤）", [*code_name, *MEASURES],
               _one_dim(con, "tag", "tags", True),
               notes=["一門課程有多個標籤時於各標籤各計一次；合計列為有任一標籤之課程（不重複）。",
                      "標籤依屬性標籤登錄（本年度有效之標籤）。"]),
        Report("y7b_tag_county", "7b 屬性標籤縣市別", f"表7 縣市別 {roc}研習課程（依課程縣市及屬性標籤）",
               [Col("縣市代碼", "text"), Col("縣市", "text"), Col("標籤代碼", "text"), Col("標籤", "text"),
                *MEASURES], _county_tags(con),
               notes=["一門課程有多個標籤時於各標籤各計一次；「全國」列為各標籤之全國合計。"]),
    ]
    for rep in reports:
        rep.total_rows = 1
    return reports


def write_csv(path: Path, rep: Report) -> Path:
    """UTF-8 with BOM (Excel opens it as Unicode), fixed number formats, rows in the report's order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.label for c in rep.columns])
    w.writerows([fmt_value(v, c.kind) for c, v in zip(rep.columns, row, strict=True)] for row in rep.rows)
    path.write_bytes(buf.getvalue().encode("utf-8-sig"))
    return path


def _notes(snap: Snapshot) -> list[tuple[str, str]]:
    return [
        ("年報", f"{DOC_TITLE}（{roc_year(snap.year)}，{snap.year} 年）"),
        ("快照編號", snap.snapshot_id),
        ("快照時間", snap.taken_at.isoformat()),
        ("快照筆數", f"課程 {snap.courses:,} 筆；名單 {snap.attendance:,} 筆"),
        ("快照", "本年報之資料於快照時間凍結保存，並留存其檔案雜湊以供查驗。"),
        ("資料來源", "全國教師在職進修資訊網正式資料中，各單位傳報之研習課程及研習名單；已撤回者不列入。"),
        ("年度歸屬", "課程依研習起日之年度；名單依其課程。"),
        ("課程數、課程時數", "課程筆數與研習時數之和；多值屬性（研習對象、屬性標籤）於各值各計一次，合計列僅計一次。"),
        ("教師數", "完成研習之不重複教師人數；各列與合計均為不重複人數，故不等於各列相加。"),
        ("人次", "完成研習（核發時數）之名單筆數。"),
        ("核發時數、每人平均時數", "核發時數之和；每人平均時數＝核發時數÷教師數，四捨五入至小數 2 位。"),
        ("教師縣市及教育階段", "依教師服務學校代碼於快照時對照教育部學校名冊；查無者列為「未知」。"),
        ("重現", "以同一快照重新產製，各表內容完全相同。"),
        ("個資", "不含身分證字號與姓名；教師以無法回推身分之代碼識別，僅供統計。"),
    ]


def publish_year(settings: Settings, year: int | str, snapshot: str | None = None,
                 taken_at: datetime | str | None = None) -> Extract:
    """Take a new snapshot (or reuse `snapshot`: an id or 'latest') and write the extract from it."""
    y = parse_year(year)
    out = yearbook_dir(settings, y)
    session = WriteSession(settings)
    with session as wh, compute_session(wh) as cx:
        checks.require_passing(wh.con, settings.archive_cutoff, f"yearbook {y}")
        con = cx.con
        cx.run(ensure_tables)
        register_refs(con, wh.tag_register(), (date(y, 1, 1), date(y + 1, 1, 1)))
        cx.pull("main.yearbook_snapshots", "year = ?", [y])
        if snapshot:
            snap = find_snapshot(con, y, snapshot)
        else:
            # on PostgreSQL, the year's courses and their attendance come into the compute DuckDB
            year = "start_date >= ? AND start_date < ?"
            bounds = [date(y, 1, 1), date(y + 1, 1, 1)]
            cx.pull("main.courses", year, bounds)
            cx.pull("main.school_register")
            cx.pull("main.attendance", f"(unit_code, course_code) IN (SELECT unit_code, course_code "
                                       f"FROM main.courses WHERE {year})", bounds)
            with cx.transaction():
                snap = take_snapshot(con, settings, y, as_of_now(taken_at))
                cx.push("yearbook_snapshots", "snapshot_id = ?", [snap.snapshot_id])
        _load(con, snap, fresh=not snapshot)
        reports = build_reports(con, y)
        totals = _totals(con)
    out.mkdir(parents=True, exist_ok=True)
    files = [str(write_csv(out / f"{rep.key}.csv", rep)) for rep in reports]
    xlsx = out / f"yearbook-{y}.xlsx"
    write_workbook(xlsx, reports, f"{DOC_TITLE} {roc_year(y)}",
                   f"快照 {snap.snapshot_id}（{snap.taken_at:%Y-%m-%d %H:%M:%S} 臺北時間）", _notes(snap))
    (out / "extract.json").write_text(json.dumps({
        "year": y, "snapshot_id": snap.snapshot_id, "as_of": snap.taken_at.isoformat(), "totals": totals,
        "files": [str(xlsx), *files]}, ensure_ascii=False, indent=2), encoding="utf-8")
    return Extract(y, snap, [str(xlsx), *files], totals, session.refresh)
