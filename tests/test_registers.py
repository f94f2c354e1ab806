"""The registers as they live (issue 16 items 4, 5, 7, 8, 10, 6): unit renames, handovers and channel
changes; the school list as a dated register (W04 and statistics as of the course date, kindergartens);
the county export by the register; reference tables and bridges for analysts; statistics by level; the
audit worklist. Every expected figure is worked out by hand in the comments.
"""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stdout
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from openpyxl import Workbook, load_workbook

from inservice import cli
from inservice.config import TAIPEI, Settings
from inservice.ingest import ingest_paths
from inservice.publish.audit import audit_worklist, scope
from inservice.publish.common import Month
from inservice.publish.export import export_county
from inservice.publish.monthly import publish_month
from inservice.registers import schools as school_register
from inservice.registers import units as unit_register
from inservice.schemas import codelists, rules
from inservice.schemas.reference import school_codes
from inservice.warehouse import analyst
from inservice.warehouse.store import Warehouse, WarehouseError
from tests.builders import attendee, course, make_id, write_xlsx
from tests.test_publish import add_attendance, add_courses, add_findings, add_upload, c

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends
LETTER = "臺教師(三)字第1060000123號"
SJ63, SJ63_NAME = "313301", "市立西松高中附設國中"  # 國中, 63000, in the shipped list


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(args))
    return code, out.getvalue()


def q(settings: Settings, sql: str, params: list | None = None) -> list[tuple]:
    with Warehouse(settings, read_only=True) as wh:
        return wh.con.execute(sql, params or []).fetchall()


def published(settings: Settings, table: str, month: str, cols: str, where: str = "true") -> list[tuple]:
    """The rows of the month's latest publication."""
    return q(settings, f"""SELECT {cols} FROM {table} WHERE month = ? AND {where} AND as_of =
        (SELECT max(as_of) FROM stat_publications WHERE month = ?) ORDER BY 1""", [month, month])


# --- units ------------------------------------------------------------------------------------------------
def test_rename_is_logged_and_a_past_month_keeps_the_name_of_its_time(settings: Settings, warehouse_backend: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSERVICE_ACTOR", "staff-a")
    with Warehouse(settings) as wh:
        add_upload(wh.con, "U-1", "T001", "file", "2017-05", "2017-06-03T10:00:00+08:00", True, ca=1)
        add_upload(wh.con, "U-2", "T001", "file", "2017-07", "2017-08-03T10:00:00+08:00", True, ca=1)
    may = datetime(2017, 6, 6, 6, tzinfo=TAIPEI)
    publish_month(settings, "2017-05", as_of=may)
    name = "SELECT unit_name FROM stat_monthly_transmission WHERE unit_code = 'T001' AND month = ? AND as_of = ?"
    assert q(settings, name, ["2017-05", may]) == [("unit T001",)]

    code, out = run("units", "rename", "T001", "--name", "新名稱大學", "--letter", LETTER, "--date", "2017-07-01")
    assert code == 0 and "新名稱大學" in out
    # re-published after the rename, May keeps the name it had; July has the new one
    again = datetime(2017, 8, 6, 6, tzinfo=TAIPEI)
    publish_month(settings, "2017-05", as_of=again)
    publish_month(settings, "2017-07", as_of=again)
    assert q(settings, name, ["2017-05", again]) == [("unit T001",)]
    assert q(settings, name, ["2017-07", again]) == [("新名稱大學",)]
    # audited: who, when, which letter, from when
    log = q(settings, """SELECT field, old_value, new_value, letter_no, effective_date, changed_by, reason
        FROM unit_state_log WHERE unit_code = 'T001' AND field = 'name'""")
    assert log == [("name", "unit T001", "新名稱大學", LETTER, date(2017, 7, 1), "staff-a", "rename")]
    with Warehouse(settings, read_only=True) as wh:
        assert unit_register.on(wh.con, date(2017, 6, 30))["T001"]["name"] == "unit T001"
        assert unit_register.on(wh.con, date(2017, 7, 1))["T001"]["name"] == "新名稱大學"
        assert wh.unit("T001").name == "新名稱大學"
    with Warehouse(settings) as wh:
        with pytest.raises(WarehouseError, match="after it"):  # the register is appended in date order
            unit_register.rename(wh, "T001", "再改名", LETTER, date(2017, 7, 1))
        with pytest.raises(WarehouseError, match="letter"):
            unit_register.rename(wh, "T001", "再改名", " ", date(2017, 9, 1))
        with pytest.raises(WarehouseError, match="already"):
            unit_register.rename(wh, "T001", "新名稱大學", LETTER, date(2017, 9, 1))
    assert len(q(settings, "SELECT * FROM unit_versions WHERE unit_code = 'T001'")) == 2  # refusals wrote nothing


def test_handover_and_channel_change_then_feeds_add(settings: Settings, warehouse_backend: str) -> None:
    home = ["--home", str(settings.home)]
    assert run(*home, "units", "handover", "T002", "--operator", "某某縣政府", "--letter", LETTER,
               "--date", "2017-03-01")[0] == 0
    code, _ = run(*home, "feeds", "add", "T002", "--url-env", "FEED_T002_URL")
    assert code == 1  # a file unit gets no feed: its channel changes first, with a letter
    assert run(*home, "units", "set-channel", "T002", "db", "--letter", LETTER + "之1", "--date", "2017-04-01")[0] == 0
    assert run(*home, "feeds", "add", "T002", "--url-env", "FEED_T002_URL")[0] == 0
    code, out = run(*home, "units", "versions", "T002", "--json")
    versions = [json.loads(line) for line in out.splitlines()]
    assert [(v["operator"], v["channel"], v["valid_from"], v["valid_to"]) for v in versions] == [
        (None, "file", None, "2017-03-01"), ("某某縣政府", "file", "2017-03-01", "2017-04-01"),
        ("某某縣政府", "db", "2017-04-01", None)]
    log = q(settings, """SELECT reason, field, new_value, letter_no FROM unit_state_log
        WHERE unit_code = 'T002' AND reason <> 'register' ORDER BY effective_date""")
    assert log == [("handover", "operator", "某某縣政府", LETTER), ("channel", "channel", "db", LETTER + "之1")]
    # the statistics of March show it as the file unit it was then, May's as a feed
    publish_month(settings, "2017-03", as_of=datetime(2017, 6, 6, 6, tzinfo=TAIPEI))
    publish_month(settings, "2017-05", as_of=datetime(2017, 6, 6, 6, tzinfo=TAIPEI))
    channel = "channel, expected_days"
    assert published(settings, "stat_monthly_transmission", "2017-03", channel, "unit_code = 'T002'") == [("file", 0)]
    assert published(settings, "stat_monthly_transmission", "2017-05", channel, "unit_code = 'T002'") == [("db", 31)]


def test_county_export_takes_the_units_the_register_places_there(settings: Settings, warehouse_backend: str) -> None:
    home = ["--home", str(settings.home)]
    # Penghu's unit runs most of its courses under national (00000) and Taipei codes
    assert run(*home, "units", "add", "P001", "--name", "澎湖縣教師研習中心", "--channel", "file",
               "--state", "production", "--joined", "2016-01-01", "--county", "10016")[0] == 0
    assert run(*home, "units", "add", "P002", "--name", "x", "--channel", "file", "--state", "production",
               "--joined", "2016-01-01", "--county", "99999")[0] == 1  # not a county of §3.1
    with Warehouse(settings) as wh:
        unit_register.set_county(wh, "T001", "63000", LETTER, date(2016, 1, 1))
        add_courses(wh.con, [c("P001", "P1", "2017-03-01", county_code="00000"),
                             c("P001", "P2", "2017-04-01", county_code="63000"),
                             c("P001", "P3", "2017-05-01", county_code="63000"),
                             c("P001", "P4", "2017-06-01", county_code="10016"),
                             c("T001", "T1", "2017-05-01")])
        add_attendance(wh.con, [("P001", "P2", "t1", SJ63, 1, True), ("T001", "T1", "t2", SJ63, 1, True)])
    code, out = run(*home, "export", "--county", "10016", "--from", "2017-01", "--to", "2017-12", "--format", "csv",
                    "--json")
    ex = json.loads(out)
    assert code == 0 and ex["units"] == ["P001"] and ex["rows"] == {"courses": 4, "attendance": 1}
    taipei = export_county(settings, "63000", "2017-01", "2017-12", "csv")
    assert taipei.units == ["T001"] and taipei.rows == {"courses": 1, "attendance": 1}  # not P001's P2, P3


# --- schools ---------------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8-sig")
    return path


@pytest.mark.slow  # > 1.5 s: the fast tier stays under 3 minutes
def test_school_level_change_keeps_the_figures_of_a_past_month(settings: Settings, warehouse_backend: str,
                                                                tmp_path: Path) -> None:
    with Warehouse(settings) as wh:
        add_courses(wh.con, [c("T001", "C5", "2017-05-10", closed_date="2017-05-11"),
                             c("T001", "C9", "2017-09-10", closed_date="2017-09-11")])
        add_attendance(wh.con, [("T001", "C5", "t1", SJ63, 3, True), ("T001", "C9", "t2", SJ63, 2, True)])
    may = datetime(2017, 6, 6, 6, tzinfo=TAIPEI)
    publish_month(settings, "2017-05", as_of=may)
    cell = "level, person_times, granted_hours"
    where = "county_code = '63000' AND level IN ('J', 'S')"
    assert published(settings, "stat_monthly_teacher_county_level", "2017-05", cell, where) == [("J", 1, 3)]
    # MOE's list of 2017-08-01: the school became a senior high school (改制), published in its S list
    moe = write_csv(tmp_path / "s-list.csv", [["學校代碼", "學校名稱", "縣市名稱", "學制"],
                                              [SJ63, "臺北市立某某高級中學", "[63]臺北市", "高級中學"]])
    code, out = run("--home", str(settings.home), "schools", "import", str(moe), "--date", "2017-08-01",
                    "--letter", "臺教統(一)字第1060100001號", "--no-closures", "--json")
    assert code == 0 and json.loads(out)["changes"] == {"level": 1, "rename": 1}
    later = datetime(2017, 10, 6, 6, tzinfo=TAIPEI)
    publish_month(settings, "2017-05", as_of=later)
    publish_month(settings, "2017-09", as_of=later)
    assert published(settings, "stat_monthly_teacher_county_level", "2017-05", cell, where) == [("J", 1, 3)]
    assert published(settings, "stat_monthly_teacher_county_level", "2017-09", cell, where) == [("S", 1, 2)]
    changes = q(settings, """SELECT change, old_value, new_value, effective_date, letter_no, source_file
        FROM school_changes WHERE school_code = ? ORDER BY change""", [SJ63])
    assert [r[:4] for r in changes] == [("level", "J", "S", date(2017, 8, 1)),
                                        ("rename", SJ63_NAME, "臺北市立某某高級中學", date(2017, 8, 1))]
    assert {r[4] for r in changes} == {"臺教統(一)字第1060100001號"} and {r[5] for r in changes} == {"s-list.csv"}
    assert q(settings, "SELECT count(*) FROM school_changes WHERE changed_by IS NULL") == [(0,)]
    with Warehouse(settings, read_only=True) as wh:
        assert school_register.school_on(wh.con, SJ63, date(2017, 7, 31))["level"] == "J"
        assert school_register.school_on(wh.con, SJ63, date(2017, 8, 1))["level"] == "S"


def test_school_list_refused_whole_with_row_and_field(settings: Settings, warehouse_backend: str,
                                                      tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [["代碼", "學校名稱", "縣市", "等級"], ["999001", "甲國小", "臺北市", "E"],
                                           ["99900", "乙國小", "火星市", "E"], ["999001", "丙國小", "臺北市", "Q"]])
    before = q(settings, "SELECT count(*) FROM school_register")
    with Warehouse(settings) as wh:
        with pytest.raises(WarehouseError) as err:
            school_register.import_lists(wh, [bad], date(2017, 8, 1), LETTER)
    text = str(err.value)
    assert "bad.csv" in text and "row 3, code" in text and "row 3, county" in text and "row 4, code" in text \
        and "row 4, level" in text
    assert q(settings, "SELECT count(*) FROM school_register") == before
    assert q(settings, "SELECT count(*) FROM school_changes") == [(0,)]


def _upload(settings: Settings, name: str, courses: list[dict], att: list[dict], received: str) -> dict:
    path = write_xlsx(settings.inbox / "T001" / name, courses, att)
    [receipt] = ingest_paths([path], settings, received)
    assert receipt["status"] == "loaded", receipt
    return receipt


def _w04(receipt: dict) -> set[str]:
    return {f["course_code"] for f in receipt["findings"] if f["rule"] == "W04"}


def test_kindergarten_list_fills_the_k_columns_and_stops_w04_as_of_the_course_date(
        settings: Settings, warehouse_backend: str, tmp_path: Path) -> None:
    ids = [make_id(random.Random(i)) for i in range(6)]
    kinder = dict(audience="K", closed_date="2017-06-01")
    # before any kindergarten list: a kindergarten teacher is W04 and counts under 未知
    r1 = _upload(settings, "T001_201705.xlsx", [course("K1", start_date="2017-05-10", end_date="2017-05-10", **kinder)],
                 [attendee("K1", ids[0], school_code="KG6301")], "2017-06-03T10:00:00+08:00")
    assert _w04(r1) == {"K1"}
    # MOE's kindergarten list (no level column: one list per level), in force from 2017-01-01
    k_list = write_csv(tmp_path / "k.csv", [["學校代碼", "學校名稱", "縣市"], ["KG6301", "臺北市立甲幼兒園", "臺北市"],
                                            ["KG6302", "臺北市立乙幼兒園", "臺北市"],
                                            ["KG1601", "澎湖縣立丙幼兒園", "澎湖縣"]])
    with Warehouse(settings) as wh:
        first = school_register.import_lists(wh, [k_list], date(2017, 1, 1), LETTER, level="K")
        assert first.changes == {"open": 3} and first.levels == ["K"]  # no other level closed by a K list
        # the next list (a workbook this time) lacks 乙幼兒園: closed from 2017-08-01
        wb = Workbook()
        for row in (["學校代碼", "學校名稱", "縣市"], ["KG6301", "臺北市立甲幼兒園", "臺北市"],
                    ["KG1601", "澎湖縣立丙幼兒園", "澎湖縣"]):
            wb.active.append(row)
        k2 = tmp_path / "k2.xlsx"
        wb.save(k2)
        assert school_register.import_lists(wh, [k2], date(2017, 8, 1), LETTER + "之1", level="K").changes == \
            {"close": 1}
    # June: both kindergartens known; September: 乙 closed → W04 for that row only
    r2 = _upload(settings, "T001_201706.xlsx", [course("K2", start_date="2017-06-10", end_date="2017-06-10", **{
        **kinder, "closed_date": "2017-06-12"})],
                 [attendee("K2", ids[1], school_code="KG6301"), attendee("K2", ids[2], school_code="KG6302"),
                  attendee("K2", ids[3], school_code="KG1601")], "2017-07-03T10:00:00+08:00")
    assert _w04(r2) == set()
    r3 = _upload(settings, "T001_201709.xlsx", [course("K3", start_date="2017-09-10", end_date="2017-09-10", **{
        **kinder, "closed_date": "2017-09-12"})],
                 [attendee("K3", ids[4], school_code="KG6302"), attendee("K3", ids[5], school_code="KG6301")],
                 "2017-10-03T10:00:00+08:00")
    assert _w04(r3) == {"K3"} and sum(f["rule"] == "W04" for f in r3["findings"]) == 1
    # statistics of June: the kindergarten columns are filled (63000 K: 2 teachers, 10016 K: 1)
    publish_month(settings, "2017-06", as_of=datetime(2017, 7, 6, 6, tzinfo=TAIPEI))
    cells = published(settings, "stat_monthly_teacher_county_level", "2017-06", "county_code, person_times",
                      "level = 'K' AND county_code <> '*'")
    assert cells == [("10016", 1), ("63000", 2)]


def test_a_warehouse_from_before_the_registers_is_migrated(settings: Settings, warehouse_backend: str) -> None:
    """Units keep their values as their first version; the school register starts as the shipped list;
    read-only (a self-check) before the migration still works."""
    with Warehouse(settings) as wh:  # make it look like a warehouse of the previous release
        for stmt in ("DROP VIEW course_audience", "DROP VIEW course_tags", "DROP TABLE unit_versions",
                     "DROP TABLE school_register", "ALTER TABLE units DROP COLUMN county_code",
                     "ALTER TABLE units DROP COLUMN operator", "DELETE FROM warehouse_meta"):
            wh.con.execute(stmt)
    with Warehouse(settings, read_only=True) as wh:
        assert wh.unit("T001").county_code is None and wh.unit("T001").name == "unit T001"
        assert wh.state("production").schools().num_rows == len(school_codes())  # the shipped list
    with Warehouse(settings) as wh:
        unit_register.rename(wh, "T001", "改名", LETTER, date(2017, 7, 1))
    assert q(settings, "SELECT name, valid_from, valid_to FROM unit_versions WHERE unit_code = 'T001' ORDER BY 2 "
                       "NULLS FIRST") == [("unit T001", None, date(2017, 7, 1)), ("改名", date(2017, 7, 1), None)]
    assert q(settings, "SELECT count(*) FROM school_register WHERE level = 'J'")[0][0] > 0
    assert q(settings, "SELECT count(*) FROM course_audience") == [(0,)]


# --- statistics by level ------------------------------------------------------------------------------------
def test_granted_hours_by_level_and_not_closed_by_level_and_institution(settings: Settings,
                                                                       warehouse_backend: str) -> None:
    with Warehouse(settings) as wh:
        add_courses(wh.con, [
            c("T001", "A1", "2017-05-02", audience="E;J", organizer="國立臺灣師範大學", organizer_type="3"),
            c("T001", "A2", "2017-05-03", audience="J", county_code="64000", organizer="國立高雄師範大學",
              organizer_type="3"),
            c("T001", "A3", "2017-05-04", audience="E", closed_date="2017-05-05"),
            c("T001", "A4", "2017-05-04", audience="S", class_type="2"),  # degree programme: never not-closed
        ])
        add_attendance(wh.con, [("T001", "A3", "t1", "313601", 2, True), ("T001", "A3", "t2", SJ63, 1.5, True)])
    as_of = datetime(2017, 6, 6, 6, tzinfo=TAIPEI)
    pub = publish_month(settings, "2017-05", as_of=as_of)
    granted = published(settings, "stat_monthly_teacher_county_level", "2017-05", "level, granted_hours",
                        "county_code = '63000' AND level IN ('E', 'J')")
    assert [(lv, float(h)) for lv, h in granted] == [("E", 2.0), ("J", 1.5)]
    # not closed (report date 2017-06-06): A1 (63000, E;J), A2 (64000, J)
    nc = published(settings, "stat_monthly_not_closed_county_level", "2017-05", "county_code, level, not_closed")
    assert sorted(nc) == sorted([("63000", "E", 1), ("63000", "J", 1), ("63000", "*", 1), ("64000", "J", 1),
                                 ("64000", "*", 1), ("*", "E", 1), ("*", "J", 2), ("*", "*", 2)])
    inst = dict(published(settings, "stat_monthly_not_closed_institution", "2017-05", "institution_id, not_closed"))
    assert inst["U01"] == 1 and inst["U03"] == 1 and inst["U02"] == 0  # 彰化師大: listed with 0
    assert len(inst) == q(settings, "SELECT count(*) FROM ref_training_institutions")[0][0] >= 20
    wb = load_workbook(pub.files[0], read_only=True)
    header = [c for row in wb["2 教師縣市別"].iter_rows(min_row=1, max_row=6, values_only=True) for c in row]
    assert header.count("核發時數") == (len(codelists.LEVELS) - 1) + 2  # six levels (A is none), 未知, 合計
    assert "4d 未結案縣市對象" in wb.sheetnames and "4e 未結案師培大學" in wb.sheetnames


# --- reference tables and bridges -----------------------------------------------------------------------------
def test_reference_tables_and_bridges(settings: Settings, warehouse_backend: str) -> None:
    assert ("63000", "臺北市") in q(settings, "SELECT code, label FROM ref_counties")
    assert ("10003", "桃園縣", "68000") in q(settings, "SELECT legacy_code, legacy_label, code FROM ref_county_legacy")
    assert q(settings, "SELECT code, degree FROM ref_class_types ORDER BY ord") == [("1", False), ("2", True),
                                                                                     ("3", True)]
    ref_rules = dict((r, (zh, en)) for r, zh, en in q(settings, "SELECT rule, message_zh, message_en FROM ref_rules"))
    assert ref_rules == {r.id: (r.zh, r.en) for r in rules.RULES.values()}
    assert [r[0] for r in q(settings, "SELECT code FROM ref_levels ORDER BY ord")] == [x.code for x in codelists.LEVELS]
    with Warehouse(settings) as wh:
        add_courses(wh.con, [c("T001", "B1", "2017-05-02", audience="K;E", tags="T1;T2"),
                             c("T001", "B2", "2017-05-02", audience="A"),
                             c("T001", "B3", "2017-05-02", audience="J", tags="T3", is_deleted=True)])
    assert sorted(q(settings, "SELECT course_code, level FROM course_audience")) == [("B1", "E"), ("B1", "K"),
                                                                                    ("B2", "A")]
    assert sorted(q(settings, "SELECT course_code, tag FROM course_tags")) == [("B1", "T1"), ("B1", "T2")]
    # analysts count by code without splitting strings, labels from the reference table
    assert q(settings, """SELECT l.label, count(*) FROM course_audience a JOIN ref_levels l ON l.code = a.level
        GROUP BY l.label, l.ord ORDER BY l.ord""") == [("幼兒園", 1), ("國小", 1), ("不限", 1)]
    lake = settings.home / "lake"
    with Warehouse(settings, read_only=True) as wh:
        written = analyst.export_lake(wh, lake)
    assert written["course_audience"] == 3 and written["ref_counties"] == len(codelists.counties())
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake}/school_register/*.parquet')").fetchall()[0][0] \
        == q(settings, "SELECT count(*) FROM school_register")[0][0]
    if warehouse_backend == "duckdb":
        with Warehouse(settings) as wh:  # rows inserted directly here: no load refreshed the copy
            copy = analyst.publish_snapshot(wh, settings)
        with duckdb.connect(str(copy), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM course_tags").fetchone()[0] == 2
            comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'ref_counties'").fetchone()
            assert comment[0].startswith("代碼表 3.1")
            assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'school_changes'"
                                   ).fetchone()[0]
    else:
        import psycopg2

        with Warehouse(settings) as wh:
            granted = analyst.grant_analyst_role(wh, settings.analyst_role)
        assert {"ref_counties", "course_audience", "school_register", "unit_versions"} <= set(granted)
        con = psycopg2.connect(settings.warehouse_url.replace("postgres@", f"{settings.analyst_role}@"))
        try:
            cur = con.cursor()
            cur.execute("SELECT count(*) FROM course_audience a JOIN ref_levels l ON l.code = a.level")
            assert cur.fetchone()[0] == 3
            cur.execute("SELECT obj_description('main.ref_counties'::regclass)")
            assert cur.fetchone()[0].startswith("代碼表 3.1")
            con.rollback()
            with pytest.raises(psycopg2.Error):
                cur.execute("SELECT * FROM school_changes")
        finally:
            con.close()


# --- audit worklist ---------------------------------------------------------------------------------------
def test_audit_scope_first_year_then_quarterly_and_january() -> None:
    joined_new, joined_old = date(2017, 3, 15), date(2016, 1, 1)
    assert scope(Month(2017, 5), joined_new) == ("每月（加入未滿 12 個月）", ("2017-05",))
    assert scope(Month(2017, 5), joined_old) is None  # not a quarter month
    assert scope(Month(2017, 7), joined_old) == ("每季", ("2017-05", "2017-06", "2017-07"))
    assert scope(Month(2018, 2), joined_new) == ("每月（加入未滿 12 個月）", ("2018-02",))  # 11 months after
    assert scope(Month(2018, 3), joined_new) is None  # 12 months after: quarterly now
    cadence, months = scope(Month(2018, 1), joined_new)
    assert cadence == "每月（加入未滿 12 個月）＋前一年度全年"
    assert months == tuple(f"2017-{i:02d}" for i in range(3, 13)) + ("2018-01",)  # never before it joined
    cadence, months = scope(Month(2018, 1), joined_old)
    assert cadence == "每季＋前一年度全年" and months == tuple(f"2017-{i:02d}" for i in range(1, 13)) + ("2018-01",)
    assert scope(Month(2017, 2), joined_new) is None  # not joined yet


def test_audit_worklist_rows_for_a_first_year_unit_and_a_later_one(settings: Settings, warehouse_backend: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    with Warehouse(settings) as wh:
        wh.add_unit("N001", "新加入單位", "file", "production", date(2017, 3, 15))
        wh.add_unit("PLAN", "規劃填報系統", "file", "production", date(2016, 1, 1))  # yearly: never due monthly
        # N001: May on time, one course row refused C03 and a W01 title
        add_upload(wh.con, "U-N1", "N001", "file", "2017-05", "2017-06-03T10:00:00+08:00", True, ca=1, cr=1)
        add_findings(wh.con, "U-N1", [("course", "C03", "error", "X1"), ("course", "W01", "warning", "M1")])
        add_courses(wh.con, [c("N001", "M1", "2017-05-02", title="期末校務會議暨研習", upload_id="U-N1",
                               closed_date="2017-05-03")])
        # T001: nothing for May, June late, July on time
        add_upload(wh.con, "U-T6", "T001", "file", "2017-06", "2017-07-09T10:00:00+08:00", False, ca=2)
        add_upload(wh.con, "U-T7", "T001", "file", "2017-07", "2017-08-02T10:00:00+08:00", True, ca=2)
    publish_month(settings, "2017-05", as_of=datetime(2017, 6, 6, 6, tzinfo=TAIPEI))  # its lights
    may = audit_worklist(settings, "2017-05")
    assert [(d.unit_code, d.months) for d in may.due] == [("N001", ("2017-05",))]  # T001..T003: not in May
    [row] = may.rows
    assert (row["status"], row["files"], row["on_time_files"], row["refused_rows"], row["missing"]) == \
        ("準時", 1, 1, "C03×1", False)
    assert row["light"] == "綠燈" and row["meeting_titles"] == "W01 M1 期末校務會議暨研習"
    july = audit_worklist(settings, "2017-07")
    assert {d.unit_code: d.months for d in july.due} == {
        "N001": ("2017-07",), **{u: ("2017-05", "2017-06", "2017-07") for u in ("T001", "T002", "T003")}}
    t001 = {r["month"]: r for r in july.rows if r["unit_code"] == "T001"}
    assert [(m, t001[m]["status"], t001[m]["missing"]) for m in sorted(t001)] == [
        ("2017-05", "未傳", True), ("2017-06", "逾期", False), ("2017-07", "準時", False)]
    assert t001["2017-05"]["light"] == "綠燈" and t001["2017-06"]["light"] == "未發布"  # June not published
    wb = load_workbook(july.files[0], read_only=True)
    assert {"查核名單", "逐月明細", "會議名稱"} <= set(wb.sheetnames)
    # the CLI prints the same, in one JSON object
    code, out = run("--home", str(settings.home), "audit", "--month", "2018-01", "--json")
    jan = json.loads(out)
    assert code == 0 and len(jan["due"]) == 4
    n001 = next(d for d in jan["due"] if d["unit_code"] == "N001")
    assert n001["months"][0] == "2017-03" and n001["months"][-1] == "2018-01" and len(n001["months"]) == 11


def test_audit_worklist_asset(settings: Settings) -> None:
    import dagster as dg

    from inservice.assets.audit import audit_worklist as asset
    from inservice.assets.shared import InserviceResource

    result = dg.materialize([asset], partition_key="2017-07",
                            resources={"inservice": InserviceResource(home=str(settings.home))})
    assert result.success
    [mat] = result.asset_materializations_for_node("audit_worklist")
    assert mat.metadata["units_due"].value == 3 and mat.metadata["missing_months"].value == 9
    assert Path(mat.metadata["workbook"].value).exists()
