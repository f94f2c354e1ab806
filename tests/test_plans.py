"""The planning survey (planning-survey.md): plan exports through the upload machinery, the P-rules,
revisions, the plan tables and the four publications, on both warehouse backends.

The small case below is computed by hand (every figure a literal):

school plans 106:  313601 (臺北市 63000, 國小 E) A 20 h, B 10 h · 313301 (臺北市, 國中 J) A 15 h ·
                   124601 (高雄市 64000, 國小 E) C 12 h
teacher plans 106: T1 @313601 A 10 h, B 8 h · T2 @313601 A 8 h · T3 @124601 C 12 h ·
                   T4 @313301 A 2 h (planned, never attended anything)
attendance 106:    course K1 (category A, 6 h, time slot 1, delivery 3): T1 6 h, T2 6 h (313601) ·
                   course K2 (category C, 3 h): T3 3 h (124601)
→ participation 63000: 2 schools, 3 teachers; 64000: 1 and 1; nationwide 3 and 4
→ demand 63000 × E: teachers T1, T2; share naming B = 1/2 = 0.5; nationwide share naming A = 3/4
→ planned 10+8+8+12+2 = 40 h; granted 6+6+3 = 15 h; coverage 15/40 = 0.375; 63000 × A: 12/20 = 0.6
→ fulfilment 63000 × A: T1, T2 of T1, T2, T4 = 2/3; 64000 × C: 1/1; 63000 × B: 0/1
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from inservice.cli import main
from inservice.config import TAIPEI, Settings
from inservice.plans.publish import publish_plans
from inservice.warehouse.checks import raw_national_ids
from inservice.warehouse.store import Warehouse
from tests.builders import (
    attendee,
    course,
    make_id,
    school_plan,
    teacher_plan,
    write_plan_csv,
    write_plan_xlsx,
    write_xlsx,
)
from tests.conftest import pg_database

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends
RECEIVED = "2017-11-03T10:00:00+08:00"
ID_SHAPE = re.compile(r"[A-Z][12ABCD89][0-9]{8}")


@pytest.fixture
def plan_settings(settings: Settings) -> Settings:
    with Warehouse(settings) as wh:
        wh.add_unit("PLAN", "規劃填報系統", "file", "production", date(2016, 1, 1))
    return settings


def _ids(seed: int = 15, n: int = 4) -> list[str]:
    rng = random.Random(seed)
    return [make_id(rng) for _ in range(n)]


def _cli(capsys: pytest.CaptureFixture, *args: str) -> list[dict]:
    code = main(list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _school_rows() -> list[dict]:
    return [school_plan("313601", "A", planned_hours="20", times="1;3", places="P1;P3", deliveries="3;1"),
            school_plan("313601", "B"),
            school_plan("313301", "A", school_level="J", students="500", teachers="40", planned_hours="15",
                        times="5", places="P3", deliveries="3"),
            school_plan("124601", "C", students="200", teachers="20", planned_hours="12")]


def _teacher_rows(ids: list[str]) -> list[dict]:
    return [teacher_plan(ids[0], "313601", "A", planned_hours="10", deliveries="3"),
            teacher_plan(ids[0], "313601", "B", planned_hours="8", times="3"),
            teacher_plan(ids[1], "313601", "A", planned_hours="8", times="1;3", deliveries="3"),
            teacher_plan(ids[2], "124601", "C", planned_hours="12"),
            teacher_plan(ids[3], "313301", "A", planned_hours="2", times="5", deliveries="3")]


def _load_case(settings: Settings, capsys: pytest.CaptureFixture, ids: list[str]) -> list[dict]:
    inbox = settings.inbox
    courses = [course("K1", start_date="2017-09-10", end_date="2017-09-10", closed_date="2017-09-12",
                      category="A", hours="6"),
               course("K2", start_date="2017-10-10", end_date="2017-10-10", closed_date="2017-10-12",
                      category="C", hours="3")]
    att = [attendee("K1", ids[0], school_code="313601"), attendee("K1", ids[1], school_code="313601"),
           attendee("K2", ids[2], school_code="124601", hours_granted="3")]
    files = [write_xlsx(inbox / "T001" / "T001_201710.xlsx", courses, att),
             write_plan_csv(inbox / "PLAN" / "PLAN_106_school.csv", _school_rows(), bom=True),
             write_plan_xlsx(inbox / "PLAN" / "PLAN_106_teacher.xlsx", _teacher_rows(ids))]
    receipts = _cli(capsys, "ingest", *map(str, files), "--received-at", RECEIVED, "--json")
    assert [r["status"] for r in receipts] == ["loaded"] * 3, receipts
    return receipts


def _one(wh: Warehouse, sql: str, params: list) -> tuple:
    rows = wh.con.execute(sql, params).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def test_hand_computed_case(plan_settings: Settings, capsys: pytest.CaptureFixture) -> None:
    ids = _ids()
    receipts = _load_case(plan_settings, capsys, ids)
    plan = receipts[2]
    assert (plan["school_year"], plan["kind"], plan["plans"]) == ("106", "teacher",
                                                                  {"received": 5, "accepted": 5, "rejected": 0})
    assert list(plan)[:10] == ["file", "unit", "month", "status", "refusal", "received_at", "on_time", "courses",
                               "attendance", "findings"]  # the receipt's keys, as for uploads
    [out] = _cli(capsys, "plans", "stats", "--school-year", "106", "--json")
    assert set(out) == {"school_year", "as_of", "files", "totals"}
    assert out["school_year"] == "106"
    assert out["totals"] == {"schools": 3, "teachers": 4, "planned_hours": 40.0, "coverage_ratio": 0.375}
    assert len(out["files"]) == 8 and all(Path(f).is_file() for f in out["files"])
    key = [106, datetime.fromisoformat(out["as_of"])]
    with Warehouse(plan_settings, read_only=True) as wh:
        q = "FROM stat_plan_participation WHERE school_year = ? AND as_of = ? AND plan_year = 106 AND county_code = ?"
        assert _one(wh, f"SELECT schools, teachers {q}", [*key, "63000"]) == (2, 3)
        assert _one(wh, f"SELECT schools, teachers {q}", [*key, "64000"]) == (1, 1)
        assert _one(wh, f"SELECT schools, teachers {q}", [*key, "*"]) == (3, 4)
        q = "FROM stat_plan_demand_domains WHERE school_year = ? AND as_of = ? AND county_code = ? AND school_level = ?"
        assert _one(wh, f"SELECT teachers, share {q} AND domain = 'B'", [*key, "63000", "E"]) == (1, 0.5)
        assert _one(wh, f"SELECT teachers, share {q} AND domain = 'A'", [*key, "*", "*"]) == (3, 0.75)
        q = "FROM stat_plan_supply WHERE school_year = ? AND as_of = ? AND county_code = ? AND domain = ?"
        row = _one(wh, f"SELECT planned_hours, granted_hours, person_times, courses, coverage_ratio, gap_hours {q}",
                   [*key, "63000", "A"])
        assert [float(v) for v in row] == [20.0, 12.0, 2, 1, 0.6, 8.0]
        assert _one(wh, f"SELECT coverage_ratio {q}", [*key, "64000", "C"]) == (0.25,)
        q = "FROM stat_plan_fulfilment WHERE school_year = ? AND as_of = ? AND county_code = ? AND domain = ?"
        planned, attended, share = _one(wh, f"SELECT planned_teachers, attended_teachers, share {q}",
                                        [*key, "63000", "A"])
        assert (planned, attended) == (3, 2) and share == pytest.approx(0.6667, abs=1e-4)
        assert _one(wh, f"SELECT planned_teachers, attended_teachers, share {q}", [*key, "64000", "C"]) == (1, 1, 1.0)
        assert _one(wh, f"SELECT planned_teachers, attended_teachers, share {q}", [*key, "63000", "B"]) == (1, 0, 0.0)
        # the teacher who planned and never attended: in the demand, in no supply, not fulfilled
        t4 = wh.con.execute("SELECT teacher_key FROM teacher_plans WHERE school_code = '313301'").fetchall()
        assert len(t4) == 1
        assert wh.con.execute("SELECT count(*) FROM attendance WHERE teacher_key = ?", [t4[0][0]]).fetchone() == (0,)
        assert _one(wh, f"SELECT planned_teachers, attended_teachers {q}", [*key, "*", "*"]) == (4, 3)
        q = ("FROM stat_plan_supply_mix WHERE school_year = ? AND as_of = ? AND county_code = '*' AND domain = '*' "
             "AND dimension = 'time_slot' AND code = '1'")
        assert _one(wh, f"SELECT demand_share, supply_share {q}", key) == (0.5, 1.0)  # 3 of 6 mentions; all K1, K2
        # a teacher's plan joins their attendance on teacher_key: the same key as attendance
        joined = wh.con.execute("""SELECT count(DISTINCT p.teacher_key) FROM teacher_plans p
            JOIN attendance a USING (teacher_key)""").fetchone()[0]
        assert joined == 3
    # PLAN is a unit of the register, but its yearly exports are never due monthly
    from inservice.overview import month_overview
    from inservice.publish.monthly import publish_month

    publish_month(plan_settings, "2017-11")
    with Warehouse(plan_settings, read_only=True) as wh:
        units = {u for (u,) in wh.con.execute("SELECT unit_code FROM stat_monthly_transmission").fetchall()}
        assert units == {"T001", "T002", "T003"}
        assert "PLAN" not in {r.unit_code for r in month_overview(wh.con, "2017-11", datetime.now(TAIPEI))}
    # Chinese titles with the ROC school year, and the gap chart in the HTML
    html = Path(next(f for f in out["files"] if f.endswith("supply.html"))).read_text(encoding="utf-8")
    assert "106學年度" in html and "<svg" in html
    wb = load_workbook(next(f for f in out["files"] if f.endswith("participation.xlsx")), read_only=True)
    cells = [c for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for c in row if c is not None]
    assert "參與學校數(所)" in cells and "參與教師數(人)" in cells and "●" in cells


def _findings(receipt: dict) -> set[tuple]:
    return {(f["row"], f["rule"], f["field"]) for f in receipt["findings"]}


def test_each_rule_and_warning(plan_settings: Settings, capsys: pytest.CaptureFixture) -> None:
    inbox = plan_settings.inbox / "PLAN"
    schools = [
        school_plan("313601", "A"),                                        # 2 ok
        school_plan("313601", "B", planned_hours=None),                    # 3 P01
        school_plan("313602", "A", students="many"),                       # 4 P02
        school_plan("313604", "Z"),                                        # 5 P03
        school_plan("313301", "A", school_level="J", school_year="105"),   # 6 P04
        school_plan("124601", "A", planned_hours="250"),                   # 7 P05
        school_plan("124601", "A"),                                        # 8 P07 (first kept)
        school_plan("121320", "A", students="100"),                        # 9 P08
        school_plan("121320", "B", students="101"),                        # 10 P08
        school_plan("999999", "A"),                                        # 11 PW1
        school_plan("011301", "A", submitted_at="2017-09-01 08:00:00"),    # 12 PW2
        school_plan("313302", "C", students="30.5"),                       # 13 P02 (not whole)
    ]
    [r] = _cli(capsys, "ingest", str(write_plan_csv(inbox / "PLAN_106_school.csv", schools)), "--received-at",
               RECEIVED, "--json")
    assert r["status"] == "loaded"
    assert _findings(r) == {(3, "P01", "planned_hours"), (4, "P02", "students"), (5, "P03", "domain"),
                            (6, "P04", "school_year"), (7, "P05", "planned_hours"), (8, "P07", "school_code"),
                            (9, "P08", "school_code"), (10, "P08", "school_code"), (11, "PW1", "school_code"),
                            (12, "PW2", "submitted_at"), (13, "P02", "students")}
    assert r["plans"] == {"received": 12, "accepted": 3, "rejected": 9}  # rows 2, 11 and 12
    ids = _ids(7, 3)
    bad_id = ids[2][:-1] + str((int(ids[2][-1]) + 1) % 10)
    teachers = [
        teacher_plan(ids[0], "313601", "A"),                               # 2 ok
        teacher_plan(ids[0], "313601", "A"),                               # 3 P07
        teacher_plan(bad_id, "313601", "A"),                               # 4 P06
        teacher_plan(ids[1], "124601", "A"),                               # 5 PW3 (124601 filed no plan)
        teacher_plan(ids[1], "313601", "B", submitted_at="2017-09-30 00:00:01"),  # 6 PW2
    ]
    [t] = _cli(capsys, "ingest", str(write_plan_csv(inbox / "PLAN_106_teacher.csv", teachers, by="label")),
               "--received-at", RECEIVED, "--json")
    assert _findings(t) == {(3, "P07", "national_id"), (4, "P06", "national_id"), (5, "PW3", "school_code"),
                            (6, "PW2", "submitted_at")}
    p06 = next(f for f in t["findings"] if f["rule"] == "P06")
    assert bad_id not in json.dumps(t) and bad_id[:3] + "*****" + bad_id[-2:] in p06["message_zh"]
    assert t["plans"] == {"received": 5, "accepted": 3, "rejected": 2}
    with Warehouse(plan_settings, read_only=True) as wh:
        assert sorted(wh.con.execute("SELECT school_code, domain FROM school_plans").fetchall()) == [
            ("011301", "A"), ("313601", "A"), ("999999", "A")]
        assert wh.con.execute("SELECT count(*) FROM teacher_plans").fetchone() == (3,)
        rules = {r for (r,) in wh.con.execute("SELECT DISTINCT rule FROM findings WHERE record LIKE '%plan'")
                 .fetchall()}
    assert rules == {"P01", "P02", "P03", "P04", "P05", "P06", "P07", "P08", "PW1", "PW2", "PW3"}


def test_csv_rows_are_numbered_as_in_a_sheet(plan_settings: Settings, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """Header = row 1; an empty line is a row; a quoted value over two lines is one row; BOM or not."""
    path = plan_settings.inbox / "PLAN" / "PLAN_106_school.csv"
    head = "school_year,school_code,school_level,students,teachers,domain,planned_hours,modes,times,places,tiers," \
           "deliveries,submitted_at\n"
    ok = "106,313601,E,300,30,{d},10,1,1,P1,1,1,2017-08-20 10:00\n"
    text = head + ok.format(d="A") + "\n" + ok.format(d='"B\nC"') + ok.format(d="Q")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    [r] = _cli(capsys, "check", str(path), "--json", "--out", str(tmp_path / "receipts"))  # not the cwd
    assert r["status"] == "checked"
    assert _findings(r) == {(4, "P03", "domain"), (5, "P03", "domain")}


def test_file_rules(plan_settings: Settings, capsys: pytest.CaptureFixture) -> None:
    inbox = plan_settings.inbox
    rows = [school_plan("313601", "A")]
    cases = {
        write_plan_csv(inbox / "PLAN" / "PLAN_106_schools.csv", rows): "F03",
        write_plan_csv(inbox / "PLAN" / "PLAN_106_school.txt", rows): "F02",
        write_plan_csv(inbox / "T001" / "PLAN_106_school.csv", rows): "F04",
        write_plan_csv(inbox / "PLAN" / "PLAN_107_teacher.csv", rows): "F07",  # school columns, teacher file
    }
    (inbox / "PLAN" / "PLAN_105_school.csv").write_bytes(b"school_year\n\xff\xfe\n")
    cases[inbox / "PLAN" / "PLAN_105_school.csv"] = "F01"
    receipts = _cli(capsys, "ingest", *map(str, cases), "--received-at", RECEIVED, "--json")
    assert [(r["status"], r["refusal"]) for r in receipts] == [("refused", rule) for rule in cases.values()]
    with Warehouse(plan_settings) as wh:
        wh.con.execute("DELETE FROM units WHERE unit_code = 'PLAN'")
    [r] = _cli(capsys, "ingest", str(write_plan_csv(inbox / "PLAN" / "PLAN_106_school.csv", rows)), "--json")
    assert (r["status"], r["refusal"]) == ("refused", "F05")


def test_receipt_workbook_tells_the_planning_service_what_to_resend(plan_settings: Settings,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Seen in the staff journey: a plan receipt with a rejected row said 沒有退件 (nothing rejected),
    counted 課程 0 筆, offered no file name to resend and showed bare field codes."""
    rows = [school_plan("313601", "A"), school_plan("313301", "B", planned_hours="999")]
    [r] = _cli(capsys, "ingest", str(write_plan_csv(plan_settings.inbox / "PLAN" / "PLAN_106_school.csv", rows)),
               "--received-at", RECEIVED, "--json")
    assert r["plans"] == {"received": 2, "accepted": 1, "rejected": 1}
    [xlsx] = (plan_settings.outbox / "PLAN").glob("PLAN_106_school.csv.*.receipt.xlsx")
    wb = load_workbook(xlsx)
    summary = {row[0]: row[1] for row in wb.worksheets[0].iter_rows(values_only=True) if row[0]}
    steps = " ".join(s["zh"] for s in r["next_steps"])
    assert "規劃 1 筆通過" in steps and "退件：規劃 1 筆" in steps and "沒有退件" not in steps
    assert "課程" not in steps and "PLAN_106_school.csv" in steps
    assert summary["重傳檔名 File name to resend"] == "PLAN_106_school.csv"
    findings = list(wb.worksheets[1].iter_rows(min_row=2, values_only=True))
    assert [(f[0], f[2], f[3]) for f in findings] == [(3, "規劃時數 planned_hours", "P05")]


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_revision_replaces_and_older_as_of_is_reproduced(plan_settings: Settings,
                                                         capsys: pytest.CaptureFixture) -> None:
    ids = _ids()
    _load_case(plan_settings, capsys, ids)
    first = publish_plans(plan_settings, "106")  # a revision loaded right after it is not in it (µs as-of)
    # a later export of the same year and kind: T4 withdrew, T2 now plans 28 h
    rows = _teacher_rows(ids)
    rows = [*rows[:2], teacher_plan(ids[1], "313601", "A", planned_hours="28"), rows[3]]
    [r] = _cli(capsys, "ingest", str(write_plan_csv(plan_settings.inbox / "PLAN" / "PLAN_106_teacher.csv", rows)),
               "--received-at", "2017-12-01T10:00:00+08:00", "--json")
    assert r["status"] == "loaded" and r["merge"]["revision"] == 2 and r["merge"]["replaced_rows"] == 5
    assert (r["merge"]["inserted_rows"], r["merge"]["unchanged_rows"]) == (4, 3)  # T1 A, T1 B, T3 C stay
    now = publish_plans(plan_settings, "106")
    assert now.totals == {"schools": 3, "teachers": 3, "planned_hours": 58.0, "coverage_ratio": 0.2586}
    again = publish_plans(plan_settings, "106", as_of=first.as_of)  # the older as-of, published again
    assert again.totals == first.totals == {"schools": 3, "teachers": 4, "planned_hours": 40.0,
                                            "coverage_ratio": 0.375}
    with Warehouse(plan_settings, read_only=True) as wh:
        revs = wh.con.execute("""SELECT revision, rows_accepted, replaced_at IS NULL FROM plan_revisions
            WHERE kind = 'teacher' ORDER BY revision""").fetchall()
        assert revs == [(1, 5, False), (2, 4, True)]
        # only what the revision changed moved to the history: T2's A (8 h) and T4's withdrawn A
        assert wh.con.execute("SELECT count(*) FROM teacher_plans_history").fetchone() == (2,)
        assert wh.con.execute("SELECT count(*) FROM teacher_plans").fetchone() == (4,)


def test_same_bytes_again_is_a_duplicate(plan_settings: Settings, capsys: pytest.CaptureFixture) -> None:
    path = write_plan_csv(plan_settings.inbox / "PLAN" / "PLAN_106_school.csv", _school_rows())
    [first] = _cli(capsys, "ingest", str(path), "--received-at", RECEIVED, "--json")
    [second] = _cli(capsys, "ingest", str(path), "--json")
    assert (first["status"], second["status"], second["refusal"]) == ("loaded", "duplicate", "F08")
    assert first["upload_id"] in second["findings"][0]["message_en"]
    with Warehouse(plan_settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM plan_revisions").fetchone() == (1,)
        assert wh.con.execute("SELECT count(*) FROM school_plans_history").fetchone() == (0,)


def test_no_raw_id_or_name_in_plan_tables_publications_or_log(plan_settings: Settings,
                                                              capsys: pytest.CaptureFixture) -> None:
    ids = _ids(3, 4)
    _load_case(plan_settings, capsys, ids)
    bad = ids[0][:-1] + str((int(ids[0][-1]) + 1) % 10)
    path = write_plan_csv(plan_settings.inbox / "PLAN" / "PLAN_105_teacher.csv",
                          [teacher_plan(bad, "313601", "A", school_year="105")])
    _cli(capsys, "ingest", str(path), "--received-at", RECEIVED, "--json")
    [out] = _cli(capsys, "plans", "stats", "--school-year", "106", "--json")
    with Warehouse(plan_settings, read_only=True) as wh:
        passed, details = raw_national_ids(wh.con)
        assert passed, details
        assert {"main.teacher_plans", "main.stat_plan_fulfilment"} <= set(details["tables_scanned"])
        values = " ".join(str(v) for t in ("teacher_plans", "teacher_plans_history", "school_plans", "findings",
                                           "uploads", "stat_plan_supply", "stat_plan_publications")
                          for row in wh.con.execute(f"SELECT * FROM {t}").fetchall() for v in row)
    texts = [values, *(Path(f).read_text(encoding="utf-8") for f in out["files"] if f.endswith(".html"))]
    for f in out["files"]:
        if f.endswith(".xlsx"):
            wb = load_workbook(f, read_only=True)
            texts += [str(c) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for c in row]
    log = plan_settings.home / "logs" / "inservice.log"
    texts.append(log.read_text(encoding="utf-8") if log.exists() else "")
    blob = "\n".join(texts)
    assert not any(i in blob for i in [*ids, bad]) and not ID_SHAPE.search(blob)


@pytest.mark.slow
def test_both_backends_give_identical_stat_plan_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random school year (40 schools, 300 teachers, 60 courses) into DuckDB and PostgreSQL."""
    from inservice.ingest import ingest_paths
    from inservice.plans.intake import ingest_plan_paths
    from tests.test_backends import _analyst_view

    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", "same-key-for-both-backends-" + "0" * 16)
    monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
    rng = random.Random(106)
    schools = [s for s in ("313601", "313602", "313604", "313301", "313302", "124601", "121320", "011301")]
    school_rows = [school_plan(s, d, planned_hours=str(rng.randint(1, 40)), times=rng.choice(["1", "1;3", "5"]))
                   for s in schools for d in rng.sample("ABCDEF", 3)]
    ids = [make_id(rng) for _ in range(300)]
    teacher_rows = [teacher_plan(i, rng.choice(schools), d, planned_hours=str(rng.randint(1, 30)),
                                 deliveries=rng.choice(["1", "3", "1;6"]))
                    for i in ids for d in rng.sample("ABCDEF", rng.randint(1, 3))]
    courses = [course(f"K{n}", start_date=f"2017-{rng.randint(9, 11):02d}-10", end_date="2017-11-20",
                      closed_date="2017-11-25", category=rng.choice("ABCDEF"), hours="6",
                      time_slot=rng.choice("1356"), delivery=rng.choice("136")) for n in range(60)]
    att = [attendee(c["course_code"], i, school_code=rng.choice(schools)) for c in courses for i in rng.sample(ids, 8)]
    views = {}
    with pg_database() as url:
        for backend, warehouse in (("duckdb", None), ("postgresql", url)):
            s = replace(Settings.from_env(tmp_path / backend), warehouse=warehouse)
            with Warehouse(s) as wh:
                wh.add_unit("T001", "unit", "file", "production", date(2016, 1, 1))
                wh.add_unit("PLAN", "plans", "file", "production", date(2016, 1, 1))
            up = write_xlsx(s.inbox / "T001" / "T001_201711.xlsx", courses, att)
            assert ingest_paths([up], s, "2017-12-03T10:00:00+08:00")[0]["status"] == "loaded"
            plans = [write_plan_csv(s.inbox / "PLAN" / "PLAN_106_school.csv", school_rows),
                     write_plan_csv(s.inbox / "PLAN" / "PLAN_106_teacher.csv", teacher_rows)]
            assert [r["status"] for r in ingest_plan_paths(plans, s, RECEIVED)] == ["loaded", "loaded"]
            publish_plans(s, "106")  # as of now: the plans were loaded just now
            views[backend] = _analyst_view(s)
    duck, pg = views["duckdb"], views["postgresql"]
    stat = [t for t in duck if t.startswith("stat_plan_")]
    assert len(stat) == 8 and all(duck[t] for t in stat)
    for table in [*stat, "school_plans", "teacher_plans", "plan_revisions"]:
        assert duck[table] == pg[table], table


@pytest.mark.slow
def test_dagster_sensor_export_run_and_gated_publication(plan_settings: Settings, tmp_path: Path) -> None:
    """plans_sensor hands a stable export on once, in its school year's partition; the run loads it and
    archives the original; inbox_sensor leaves inbox/PLAN/ alone; the publication job publishes."""
    import dagster as dg

    from inservice.assets.shared import InserviceResource
    from inservice.pipelines.definitions import defs

    path = write_plan_csv(plan_settings.inbox / "PLAN" / "PLAN_106_school.csv", _school_rows())
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        def tick(name: str, cursor: str | None) -> dg.SensorResult:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          resources={"inservice": InserviceResource()})
            return defs.resolve_sensor_def(name).evaluate_tick(ctx)

        first = tick("plans_sensor", None)
        assert first.run_requests == []  # new files wait a tick
        [rr] = tick("plans_sensor", first.cursor).run_requests
        assert (rr.job_name, rr.partition_key) == ("ingest_plan_export", "106")
        uploads = tick("inbox_sensor", tick("inbox_sensor", None).cursor)
        assert uploads.run_requests == []
        result = defs.resolve_job_def(rr.job_name).execute_in_process(
            run_config=rr.run_config, partition_key=rr.partition_key, instance=instance, tags=rr.tags)
        assert result.success
        assert not path.exists() and (plan_settings.home / "archive" / "PLAN" / "106" / path.name).is_file()
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"plan_export_accepted": True, "school_plans_unique_key": True,
                          "teacher_plans_unique_key": True}
        published = defs.resolve_job_def("publish_plans").execute_in_process(partition_key="106", instance=instance)
        assert published.success
        mats = {m.asset_key.to_user_string(): m.materialization.metadata
                for m in published.get_asset_materialization_events()}
        assert mats["plan_supply"]["schools"].value == 3
        assert Path(mats["plan_fulfilment"]["html"].value).is_file()
