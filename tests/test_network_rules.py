"""Spec 1.1's rules as the network runs them: lights per organizer and C11 at their thresholds, the tag
register (W06, its audit trail, statistics from it) and the replay of archived uploads under the rules
in force. On both warehouse backends: the warehouse state is built directly with SQL."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import date, datetime

import pyarrow as pa
import pytest

from inservice.cli import main
from inservice.config import TAIPEI, Settings
from inservice.ingest import ingest_paths
from inservice.loaders.base import RawUpload, canonical_table
from inservice.publish.monthly import publish_month
from inservice.registers.tags import add_tag, retire_tag
from inservice.replay import replay
from inservice.rules_cli import organizer_lights
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.validations.engine import Context, validate
from inservice.validations.pseudonym import Pseudonymiser
from inservice.warehouse.store import Warehouse
from tests.builders import attendee, course, make_id, write_xlsx

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

RNG = random.Random(16)
IDS = [make_id(RNG) for _ in range(12)]
O1, O2 = "國立臺灣師範大學", "臺北市教師研習中心"


# --- helpers ------------------------------------------------------------------------------------------
def put(settings: Settings, rows: list[tuple]) -> None:
    """Warehouse courses: (unit, code, organizer, start, end, closed, class_type)."""
    with Warehouse(settings) as wh, wh.transaction():
        for unit, code, org, start, end, closed, ctype in rows:
            wh.con.execute("""INSERT INTO main.courses (unit_code, course_code, title, organizer, organizer_type,
                county_code, start_date, end_date, hours, class_type, category, delivery, time_slot, audience,
                closed_date, is_deleted, upload_id) VALUES (?, ?, '研習', ?, '3', '63000', ?, ?, 3, ?, 'A', '1',
                '1', 'E', ?, false, 'U0')""", [unit, code, org, date.fromisoformat(start), date.fromisoformat(end),
                                               ctype, date.fromisoformat(closed) if closed else None])


def unclosed(n: int, organizer: str = O1, unit: str = "T001", end: str = "2017-10-01", prefix: str = "W") -> list:
    return [(unit, f"{prefix}{i}", organizer, end, end, None, "1") for i in range(1, n + 1)]


def feed_course(code: str, **over: object) -> dict:
    """A registration as a database feed carries it: no closed_date, a modified_at."""
    return course(code, **{"organizer": O1, "start_date": "2017-12-01", "end_date": "2017-12-01",
                           "closed_date": None, "modified_at": "2017-11-01 09:00", **over})


def judge(settings: Settings, courses: list[dict], received: str, attendance: list[dict] | None = None,
          unit: str = "T001") -> list[tuple]:
    """A feed delivery through the rule engine against the warehouse: (record, row, rule) found."""
    def table(rt, rows):
        return canonical_table(rt, pa.array(range(1, len(rows) + 1), pa.int64()),
                               {f.code: pa.array([r.get(f.code) for r in rows], pa.string()) for f in rt.fields})
    with Warehouse(settings) as wh:
        ctx = Context(unit=unit, channel="db", received_on=date.fromisoformat(received),
                      pseudonymiser=Pseudonymiser(b"k" * 32), cutoff=settings.archive_cutoff,
                      state=wh.state("production"), tags=wh.tag_register(), c11_from=settings.c11_from)
        v = validate(RawUpload(table(COURSE, courses), table(ATTENDANCE, attendance or [])), ctx)
    return sorted((f["record"], f["row"], f["rule"]) for f in v.findings.to_pylist())


def c11(findings: list[tuple]) -> list[int]:
    return [row for record, row, rule in findings if rule == "C11"]


# --- lights and C11 -----------------------------------------------------------------------------------
def test_c11_four_unclosed_vs_five_and_its_attendance(settings: Settings) -> None:
    put(settings, unclosed(4))
    new = [feed_course("N1")]
    att = [attendee("N1", IDS[0], modified_at="2017-11-01 09:00")]
    assert judge(settings, new, "2017-11-15", att) == []  # 4 not closed: yellow, registration open
    put(settings, unclosed(1, prefix="X"))
    got = judge(settings, new, "2017-11-15", att)
    assert got == [("attendance", 1, "A05"), ("course", 1, "C11")]  # 5: red, and its attendance goes with it


def test_c11_day_seven_vs_eight_and_degree_programmes(settings: Settings) -> None:
    # four long overdue, one that ended 2017-11-08: 7 days before 11-15 (not yet counted), 8 before 11-16
    put(settings, [*unclosed(4), ("T001", "L1", O1, "2017-11-08", "2017-11-08", None, "1")])
    assert c11(judge(settings, [feed_course("N1")], "2017-11-15")) == []
    assert c11(judge(settings, [feed_course("N1")], "2017-11-16")) == [1]


def test_degree_programmes_and_last_years_courses_never_count(settings: Settings) -> None:
    put(settings, [*unclosed(4), ("T001", "D2", O1, "2017-09-01", "2017-09-01", None, "2"),
                   ("T001", "D3", O1, "2017-09-01", "2017-09-01", None, "3"),
                   ("T001", "P1", O1, "2016-12-01", "2016-12-01", None, "1")])
    assert c11(judge(settings, [feed_course("N1")], "2017-11-15")) == []


def test_c11_from_2017_11_01_and_the_setting(settings: Settings) -> None:
    put(settings, unclosed(5, end="2017-09-01"))
    assert c11(judge(settings, [feed_course("N1")], "2017-10-31")) == []  # red, but before the rule
    assert c11(judge(settings, [feed_course("N1")], "2017-11-01")) == [1]
    later = replace(settings, c11_from=date(2017, 12, 1))  # INSERVICE_C11_FROM
    assert c11(judge(later, [feed_course("N1")], "2017-11-01")) == []


def test_same_delivery_closing_then_registering(settings: Settings) -> None:
    """A red organizer closing one course and registering one in the same feed run: the closing counts
    first (5 → 4, yellow), so the registration is accepted; without the closing it is refused; an update
    of a course already there is always accepted, and new courses never count toward the light."""
    put(settings, unclosed(5))
    closing = feed_course("W1", start_date="2017-10-01", end_date="2017-10-01", closed_date="2017-11-10")
    assert judge(settings, [closing, feed_course("N1")], "2017-11-15") == [("course", 1, "W03")]  # closed late
    update = feed_course("W2", start_date="2017-10-01", end_date="2017-10-01", title="新名稱")
    assert c11(judge(settings, [update, feed_course("N1")], "2017-11-15")) == [2]  # the update itself passes


def test_new_courses_never_count_toward_the_light(settings: Settings) -> None:
    put(settings, unclosed(4))  # yellow; five overdue registrations in one delivery do not make it red
    news = [feed_course(f"M{i}", start_date="2017-10-02", end_date="2017-10-02") for i in range(1, 6)]
    assert c11(judge(settings, [*news, feed_course("N1")], "2017-11-15")) == []


def test_two_organizers_of_one_unit_have_their_own_lights(settings: Settings, capsys) -> None:
    put(settings, [*unclosed(5, O1), *unclosed(2, O2, prefix="Y")])
    got = judge(settings, [feed_course("N1"), feed_course("N2", organizer=O2)], "2017-11-15")
    assert c11(got) == [1]
    # the same organizer name under another unit is another organizer: T002's is green
    assert c11(judge(settings, [feed_course("N3", unit_code="T002")], "2017-11-15", unit="T002")) == []
    with Warehouse(settings) as wh:
        lights = {(r["unit_code"], r["organizer"]): (r["unclosed"], r["light"])
                  for r in organizer_lights(wh, date(2017, 11, 15))}
    assert lights == {("T001", O1): (5, "red"), ("T001", O2): (2, "yellow")}
    assert main(["lights", "--at", "2017-11-15", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["organizer"], p["light"]) for p in printed] == [(O1, "red"), (O2, "yellow")]


def test_lights_view_answers_for_any_day(settings: Settings) -> None:
    put(settings, [("T001", "A1", O1, "2017-03-01", "2017-03-01", "2017-03-20", "1"),  # closed late
                   ("T001", "A2", O1, "2017-12-20", "2017-12-21", None, "1")])  # still open at the year's end

    def count(day: str) -> int:
        with Warehouse(settings) as wh:
            return sum(r["unclosed"] for r in organizer_lights(wh, date.fromisoformat(day)))
    assert [count(d) for d in ("2017-03-08", "2017-03-09", "2017-03-19", "2017-03-20")] == [0, 1, 1, 0]
    assert [count(d) for d in ("2017-12-28", "2017-12-29", "2017-12-31", "2018-01-01")] == [0, 1, 1, 0]
    with Warehouse(settings) as wh:  # analysts query the view directly
        rows = wh.con.execute("""SELECT course_code, counts_from, counts_until FROM organizer_light_courses
            ORDER BY course_code""").fetchall()
    assert rows == [("A1", date(2017, 3, 9), date(2017, 3, 19)), ("A2", date(2017, 12, 29), date(2017, 12, 31))]


# --- the tag register ---------------------------------------------------------------------------------
def send(settings: Settings, courses: list[dict], attendance: list[dict], name: str = "T001_201705.xlsx",
         received: str = "2017-06-03T10:00:00+08:00") -> dict:
    [receipt] = ingest_paths([write_xlsx(settings.inbox / "T001" / name, courses, attendance)], settings, received)
    return receipt


def test_unknown_or_expired_tag_is_w06_and_the_row_loads(settings: Settings) -> None:
    with Warehouse(settings) as wh:
        retire_tag(wh, "T7", date(2017, 5, 9), by="tester")  # 安全教育 valid until 2017-05-09
    r = send(settings, [course("C1", tags="T2;T9;[防災教育]"), course("C2", tags="安全教育", start_date="2017-05-09",
                                                                       end_date="2017-05-09"),
                        course("C3", tags="T7；T1")],
             [attendee("C1", IDS[0]), attendee("C3", IDS[1])])
    w06 = {(f["row"], f["rule"], f["field"], f["severity"]): f["message_zh"] for f in r["findings"]}
    assert set(w06) == {(2, "W06", "tags", "warning"), (4, "W06", "tags", "warning")}
    assert "「T9」" in w06[(2, "W06", "tags", "warning")] and "「T7」" in w06[(4, "W06", "tags", "warning")]
    assert r["courses"]["accepted"] == 3 and r["attendance"]["accepted"] == 2
    with Warehouse(settings) as wh:
        tags = dict(wh.con.execute("SELECT course_code, tags FROM courses ORDER BY 1").fetchall())
    # the unknown and the expired tags are dropped; 安全教育 is still valid on 2017-05-09
    assert tags == {"C1": "T2;T4", "C2": "T7", "C3": "T1"}


def test_tag_register_changes_are_audited_and_new_tags_need_no_code(settings: Settings, capsys) -> None:
    letter = "教育部 106 年 5 月 20 日臺教資(四)字第1060000000號函"
    assert main(["tags", "add", "T9", "--short", "數位教育", "--name", "數位學習與資訊素養", "--basis", letter,
                 "--from", "2017-05-15", "--by", "staff-a"]) == 0
    assert main(["tags", "add", "T10", "--short", "教專評鑑", "--name", "x", "--basis", "y",
                 "--from", "2017-01-01"]) == 1  # a label already naming T1: refused
    assert "already names tag T1" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["tags", "list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [t[0] for t in listed] == [f"T{i}" for i in range(1, 10)]
    assert listed[-1][:5] == ["T9", "數位教育", "數位學習與資訊素養", "2017-05-15", ""]
    # a course of 2017-05-14 may not carry it yet, one of 2017-05-16 may
    r = send(settings, [course("C1", tags="數位教育", start_date="2017-05-14", end_date="2017-05-14",
                               closed_date="2017-05-20"),
                        course("C2", tags="T9;T2", start_date="2017-05-16", end_date="2017-05-16",
                               closed_date="2017-05-20")], [])
    assert [(f["row"], f["rule"]) for f in r["findings"]] == [(2, "W06")]
    assert main(["tags", "retire", "T9", "--to", "2017-12-31", "--by", "staff-b"]) == 0
    with Warehouse(settings) as wh:
        log = wh.con.execute("""SELECT code, action, valid_to, changed_by FROM tag_log WHERE action <> 'seed'
            ORDER BY changed_at""").fetchall()
        seeded = wh.con.execute("SELECT count(*) FROM tag_log WHERE action = 'seed'").fetchone()[0]
        stored = wh.con.execute("SELECT tags FROM courses WHERE course_code = 'C2'").fetchone()[0]
    assert log == [("T9", "add", None, "staff-a"), ("T9", "retire", date(2017, 12, 31), "staff-b")]
    assert seeded == 8 and stored == "T2;T9"  # register order: the seed's first, then T9

    # the monthly statistics count it, national and per county, labelled from the register
    as_of = datetime(2017, 6, 6, 6, 0, tzinfo=TAIPEI)
    publish_month(settings, "2017-05", as_of=as_of)
    with Warehouse(settings) as wh:
        t5 = wh.con.execute("""SELECT county_code, tag, courses FROM stat_monthly_tags WHERE month = '2017-05'
            ORDER BY 1, 2""").fetchall()
    assert t5 == [("*", "*", 1), ("*", "T2", 1), ("*", "T9", 1), ("63000", "*", 1), ("63000", "T2", 1),
                  ("63000", "T9", 1)]


@pytest.mark.slow  # > 1.5 s: the fast tier stays under 3 minutes
def test_past_month_statistics_reproducible_after_register_changes(settings: Settings) -> None:
    """A past month re-run after a tag was retired and another added lists the tags of its own time,
    with the same figures."""
    send(settings, [course("C1", tags="T3;T5")], [attendee("C1", IDS[0])])
    first = datetime(2017, 6, 6, 6, 0, tzinfo=TAIPEI)

    def table5(as_of: datetime) -> list[tuple]:
        from openpyxl import load_workbook
        pub = publish_month(settings, "2017-05", as_of=as_of)
        return [r for r in load_workbook(pub.files[0])["5 屬性標籤"].iter_rows(min_row=3, values_only=True) if r[0]]

    before = table5(first)
    with Warehouse(settings) as wh:
        retire_tag(wh, "T5", date(2017, 8, 31), by="staff")
        add_tag(wh, "T9", "數位教育", "數位學習", "某函", date(2017, 9, 1), by="staff")
    after = table5(datetime(2017, 10, 6, 6, 0, tzinfo=TAIPEI))
    assert after == before
    assert ("T5 教保專業", 1, 6, 1, 6) in before and not any(str(r[0]).startswith("T9") for r in after)
    pub = publish_month(settings, "2017-09", as_of=datetime(2017, 10, 6, 6, 0, tzinfo=TAIPEI))
    from openpyxl import load_workbook
    labels = [r[0] for r in load_workbook(pub.files[0])["5 屬性標籤"].iter_rows(min_row=3, values_only=True) if r[0]]
    assert "T9 數位教育" in labels and "T5 教保專業" not in labels


# --- replay under the rules in force --------------------------------------------------------------------
def loaded_under_1_0(settings: Settings) -> str:
    """An upload as spec 1.0 left it: its course C2 with an unknown tag refused (C03) with its two
    attendance rows (A05), nothing of them in the warehouse. Returns its upload id."""
    rows = [course("C1"), course("C2", tags="T2;T99"), course("C3")]
    att = [attendee("C1", IDS[0]), attendee("C2", IDS[1]), attendee("C2", IDS[2]), attendee("C3", IDS[3])]
    uid = send(settings, rows, att)["upload_id"]
    with Warehouse(settings) as wh, wh.transaction():
        wh.con.execute("DELETE FROM attendance WHERE course_code = 'C2'")
        wh.con.execute("DELETE FROM courses WHERE course_code = 'C2'")
        wh.con.execute("DELETE FROM findings WHERE upload_id = ?", [uid])
        wh.con.execute("""INSERT INTO findings (upload_id, record, "row", field, rule, severity, course_code)
            VALUES (?, 'course', 3, 'tags', 'C03', 'error', 'C2'), (?, 'attendance', 3, NULL, 'A05', 'error', 'C2'),
                   (?, 'attendance', 4, NULL, 'A05', 'error', 'C2')""", [uid, uid, uid])
        wh.con.execute("""UPDATE uploads SET courses_accepted = 2, courses_rejected = 1, attendance_accepted = 2,
            attendance_rejected = 2 WHERE upload_id = ?""", [uid])
    return uid


def test_replay_reevaluates_an_upload_refused_under_spec_1_0(settings: Settings, capsys) -> None:
    """An upload loaded under 1.0 (its unknown tag C03 refused the course and, A05, its attendance) —
    built here directly — is re-evaluated: the preview lists exactly that course and its attendance rows
    and changes nothing; --apply loads them once; a second replay changes nothing."""
    uid = loaded_under_1_0(settings)

    def state() -> tuple:
        with Warehouse(settings) as wh:
            return (wh.con.execute("SELECT course_code, tags FROM courses ORDER BY 1").fetchall(),
                    wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0],
                    wh.con.execute("SELECT count(*) FROM uploads").fetchone()[0])

    before = state()
    preview = replay(settings, ["T001"], ("2017-01", "2017-12"))
    assert state() == before  # a preview changes nothing
    [p] = preview
    assert (p.original, p.before, p.after, p.applied) == (uid, "loaded", "loaded", None)
    assert [(c.record, c.row, c.course_code, c.before, c.after, c.added, c.gone) for c in p.changes] == [
        ("course", 3, "C2", "refused", "accepted", ["W06:tags"], ["C03:tags"]),
        ("attendance", 3, "C2", "refused", "accepted", [], ["A05"]),
        ("attendance", 4, "C2", "refused", "accepted", [], ["A05"])]

    assert main(["replay", "--units", "T001", "--months", "2017-01..2017-12", "--apply"]) == 0
    out = capsys.readouterr().out
    assert "3 row(s) change" in out and "applied as" in out
    courses, n_att, n_uploads = state()
    assert courses == [("C1", "T2"), ("C2", "T2"), ("C3", "T2")] and n_att == 4 and n_uploads == before[2] + 1
    if settings.warehouse is None:  # DuckDB: the analysts' copy follows the replay's commit
        import duckdb

        from inservice.warehouse.analyst import snapshot_path
        with duckdb.connect(str(snapshot_path(settings)), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM attendance WHERE course_code = 'C2'").fetchone()[0] == 2
    with Warehouse(settings) as wh:
        [(rid, replay_of, status, ca, aa)] = wh.con.execute("""SELECT upload_id, replay_of, status,
            courses_inserted, attendance_inserted FROM uploads WHERE replay_of IS NOT NULL""").fetchall()
        hist = wh.con.execute("SELECT course_code, action, source, source_id FROM history").fetchall()
        receipt = json.loads(wh.receipt_document(rid))
    assert "-replay" in rid and replay_of == uid and status == "loaded" and (ca, aa) == (1, 2)
    assert hist == [("C2", "replay", "replay", rid)]
    assert receipt["re_evaluation"]["of"] == uid
    sent = [json.loads(p.read_text(encoding="utf-8")) for p in (settings.outbox / "T001").glob("*.receipt.json")]
    assert sorted(d.get("re_evaluation", {}).get("of", "") for d in sent) == ["", uid]  # the unit's two receipts

    again = replay(settings, ["T001"], ("2017-01", "2017-12"), apply=True)
    assert [(a.changed, a.applied, a.in_force) for a in again] == [(False, None, rid)]
    assert state() == (courses, n_att, n_uploads)


def test_replay_never_changes_a_locked_course(settings: Settings) -> None:
    """A course closed in the warehouse whose content differs from the archived original (a correction
    since) stays as it is: the replay reports the lock (C08), loads nothing for it."""
    r = send(settings, [course("C1", tags="T2;T99")], [attendee("C1", IDS[0])])
    with Warehouse(settings) as wh, wh.transaction():  # corrected since: another title
        wh.con.execute("UPDATE courses SET title = '更正後名稱' WHERE course_code = 'C1'")
        wh.con.execute("DELETE FROM findings WHERE upload_id = ?", [r["upload_id"]])
        wh.con.execute("""INSERT INTO findings (upload_id, record, "row", field, rule, severity, course_code)
            VALUES (?, 'course', 2, 'tags', 'C03', 'error', 'C1')""", [r["upload_id"]])
    [p] = replay(settings, ["T001"], ("2017-05", "2017-05"), apply=True)
    [change] = [c for c in p.changes if c.record == "course"]
    assert "C08" in change.added and change.after == "refused" and change.locked
    with Warehouse(settings) as wh:
        assert wh.con.execute("SELECT title FROM courses").fetchall() == [("更正後名稱",)]


def test_replay_usage_errors(settings: Settings, capsys) -> None:
    assert main(["replay", "--units", "t1", "--months", "2017-01..2017-12"]) == 1
    assert main(["replay", "--units", "T001", "--months", "2017-12..2017-01"]) == 1
    assert main(["replay", "--units", "T001", "--months", "2017-01..2017-12"]) == 0
    assert "0 upload(s) examined" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["T2;T9", "[教專評鑑]；性別平等教育"])
def test_w06_in_a_self_check_without_a_warehouse(tmp_path, monkeypatch, value: str) -> None:
    monkeypatch.setenv("INSERVICE_HOME", str(tmp_path / "empty"))
    path = write_xlsx(tmp_path / "T001" / "T001_201705.xlsx", [course("C1", tags=value)], [])
    [r] = ingest_paths([path], Settings.from_env(), "2017-06-03T10:00:00+08:00", load=False)
    assert [f["rule"] for f in r["findings"]] == (["W06"] if "T9" in value else [])


def test_replay_job_previews_in_its_metadata(settings: Settings) -> None:
    import dagster as dg

    from inservice.assets.replay import archive_replay
    from inservice.assets.shared import InserviceResource

    uid = loaded_under_1_0(settings)
    config = {"ops": {"archive_replay": {"config": {"units": ["T001"], "months": "2017-05..2017-05"}}}}
    result = dg.materialize([archive_replay], resources={"inservice": InserviceResource(home=str(settings.home))},
                            run_config=config)
    meta = result.asset_materializations_for_node("archive_replay")[0].metadata
    assert meta["rows_changed"].value == 3 and meta["uploads_changed"].value == 1 and meta["applied"].value is False
    assert uid in meta["preview"].value and "refused → accepted" in meta["preview"].value
    with Warehouse(settings) as wh:
        assert wh.con.execute("SELECT count(*) FROM courses WHERE course_code = 'C2'").fetchone()[0] == 0


def test_replay_reports_what_it_cannot_rerun(settings: Settings) -> None:
    """An original that is gone is reported, never guessed; a sealed unit's uploads wait for it."""
    loaded_under_1_0(settings)
    with Warehouse(settings) as wh:
        wh.con.execute("UPDATE units SET state = 'sealed' WHERE unit_code = 'T001'")
    [p] = replay(settings, ["T001"], ("2017-05", "2017-05"), apply=True)
    assert (p.after, p.skipped, p.changes) == (None, "unit T001 is sealed", [])
    with Warehouse(settings) as wh:
        wh.con.execute("UPDATE units SET state = 'production' WHERE unit_code = 'T001'")
    (settings.inbox / "T001" / "T001_201705.xlsx").unlink()
    [p] = replay(settings, ["T001"], ("2017-05", "2017-05"), apply=True)
    assert p.after is None and p.skipped.startswith("original not found") and p.applied is None
