"""Whole-upload refusals F01–F09, in the spec's order; nothing refused reaches the warehouse."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import pytest

from inservice.config import Limits
from inservice.ingest import ingest_paths
from inservice.warehouse.store import Warehouse
from tests.builders import attendee, course, make_id, write_xls, write_xlsx, write_xml
from tests.conftest import FIXTURES, drop, table_snapshot

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

RNG = random.Random(11)
IDS = [make_id(RNG) for _ in range(5)]
GOOD_C, GOOD_A = [course("C1")], [attendee("C1", IDS[0])]
# after every data month the files here are named for (a file named for a later month is F03)
RECEIVED = "2017-12-06T10:00:00+08:00"


def ingest(settings, path: Path) -> dict:
    [r] = ingest_paths([path], settings, RECEIVED)
    return r


def assert_refused(settings, r: dict, rule: str) -> None:
    assert r["status"] == "refused" and r["refusal"] == rule, r
    assert any(f["rule"] == rule and f["severity"] == "error" for f in r["findings"])
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM courses").fetchone()[0] == 0
        assert wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] == 0


def test_f02_unknown_format(settings) -> None:
    p = settings.inbox / "T001" / "T001_201705.csv"
    p.parent.mkdir(parents=True)
    p.write_text("a,b\n")
    assert_refused(settings, ingest(settings, p), "F02")


@pytest.mark.parametrize("name", ["T001_2017.xlsx", "t001_201705.xlsx", "T001_201713.xlsx", "T001-201705.xlsx",
                                  "T001_201705_0.xlsx", "T001_201705_x.xlsx", "T001_2017\x0105.xlsx",
                                  "T001_999912.xlsx", "T001_000001.xlsx", "T001_１９９９０１.xlsx",
                                  "T001_２０１７０５.xlsx", "T001_" + "x" * 240 + ".xlsx"])
def test_f03_bad_file_name(settings, name: str) -> None:
    p = write_xlsx(settings.inbox / "T001" / name, GOOD_C, GOOD_A)
    r = ingest(settings, p)
    assert_refused(settings, r, "F03")
    assert all(Path(f).stat().st_size for f in r["receipt_files"])  # a control character in the name too


@pytest.mark.parametrize("kind", ["folder", "missing", "pipe", "link loop"])
def test_f01_not_a_regular_file(settings, kind: str) -> None:
    """What sits in an inbox under an upload's name but is no file: refused, never a crash or a hang
    (a named pipe would block the read forever)."""
    p = settings.inbox / "T001" / "T001_201705.xlsx"
    p.parent.mkdir(parents=True)
    if kind == "folder":
        p.mkdir()
    elif kind == "pipe":
        os.mkfifo(p)
    elif kind == "link loop":
        p.symlink_to(p)
    r = ingest(settings, p)
    assert_refused(settings, r, "F01")
    assert "not a regular file" in r["findings"][0]["message_en"]
    assert all(Path(f).stat().st_size for f in r["receipt_files"])


def test_a_long_legal_name_loads_and_gets_its_receipts(settings) -> None:
    """A name at the file system's limit is legal; its receipts' names are shortened with a hash,
    else they could not be written once the rows were committed."""
    name = "T001_201705_" + "9" * 230 + ".xlsx"
    r = ingest(settings, write_xlsx(settings.inbox / "T001" / name, GOOD_C, GOOD_A))
    assert r["status"] == "loaded" and r["file"] == name
    assert all(Path(f).stat().st_size and len(Path(f).name.encode()) < 255 for f in r["receipt_files"])


def test_file_name_variants_accepted(settings) -> None:
    for name in ("T001_201705_2.xlsx", "T001_201705.XLSX"):
        p = write_xlsx(settings.inbox / "T001" / name, [course(f"C{name[-6]}")], [])
        assert ingest(settings, p)["status"] == "loaded"


def test_f05_unknown_and_f06_sealed_unit(settings) -> None:
    p = write_xlsx(settings.inbox / "T009" / "T009_201705.xlsx", GOOD_C, GOOD_A)
    assert_refused(settings, ingest(settings, p), "F05")
    with Warehouse(settings) as wh:
        wh.add_unit("T004", "sealed one", "file", "sealed", date(2013, 1, 1))
    p = write_xlsx(settings.inbox / "T004" / "T004_201705.xlsx", GOOD_C, GOOD_A)
    assert_refused(settings, ingest(settings, p), "F06")


def test_f04_inbox_name_and_rows(settings) -> None:
    p = write_xlsx(settings.inbox / "T002" / "T001_201705.xlsx", GOOD_C, GOOD_A)
    assert_refused(settings, ingest(settings, p), "F04")
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1"), course("C2", unit_code="T002")],
                   [attendee("C1", IDS[0], unit_code="T003")])
    r = ingest(settings, p)
    assert_refused(settings, r, "F04")
    rows = {(f["record"], f["row"], f["field"]) for f in r["findings"]}
    assert rows == {("course", 3, "unit_code"), ("attendance", 2, "unit_code")}
    p = write_xml(settings.inbox / "T001" / "T001_201706.xml", GOOD_C, GOOD_A, unit="T002")
    assert_refused(settings, ingest(settings, p), "F04")


def test_attendance_sheet_read_beside_the_course_rules_keeps_the_order(settings) -> None:
    """The attendance sheet is read in a thread while the course rows are checked: its structure
    still refuses before any row's unit (F07 before F04), and its notes still reach the receipt."""
    no_school = [{k: v for k, v in a.items() if k != "school_code"} for a in GOOD_A]
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1", unit_code="T002")], no_school)
    r = ingest(settings, p)
    assert_refused(settings, r, "F07")
    assert "服務學校代碼" in r["findings"][0]["message_zh"]
    p = write_xlsx(settings.inbox / "T001" / "T001_201706.xlsx", GOOD_C, [dict(a, remark="x") for a in GOOD_A])
    r = ingest(settings, p)
    assert r["status"] == "loaded"
    assert [(f["rule"], f["severity"]) for f in r["findings"]] == [("F07", "warning")]
    assert "remark" in r["findings"][0]["message_en"] and "研習名單" in r["findings"][0]["message_zh"]


def test_f08_duplicate_only_of_loaded_content(settings) -> None:
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C, GOOD_A)
    assert ingest(settings, p)["status"] == "loaded"
    r = ingest(settings, p)
    assert r["status"] == "duplicate" and r["refusal"] == "F08"
    # refused content may be sent again (and is refused again, not called a duplicate)
    bad = write_xlsx(settings.inbox / "T001" / "T001_201706.xlsx", [course("C2", unit_code="T002")], [])
    assert ingest(settings, bad)["refusal"] == "F04"
    assert ingest(settings, bad)["refusal"] == "F04"


def test_f09_limits_before_parsing(settings, tmp_path: Path) -> None:
    # an .xlsx whose parts inflate past 100x its size (a zip bomb) is refused unread
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C, GOOD_A)
    with zipfile.ZipFile(p, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/media/padding.bin", b"\0" * (30 * 1024 * 1024))
    assert_refused(settings, ingest(settings, p), "F09")
    # XML with a DTD (billion laughs): refused before any parser expands it
    laughs = ('<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
              '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n')
    p = write_xml(settings.inbox / "T001" / "T001_201706.xml", GOOD_C, GOOD_A, prolog=laughs)
    assert_refused(settings, ingest(settings, p), "F09")
    # over the size limit
    small = dataclasses.replace(settings, limits=Limits(max_upload_bytes=1000))
    p = write_xlsx(settings.inbox / "T001" / "T001_201707.xlsx", GOOD_C, GOOD_A)
    [r] = ingest_paths([p], small, RECEIVED)
    assert_refused(settings, r, "F09")


ENTITY = '<!DOCTYPE Transmission [<!ENTITY t "X">]>\n'


@pytest.mark.slow
@pytest.mark.parametrize("hide", ["a 1 MiB comment first", "a comment holding markup", "a processing instruction"])
def test_f09_a_dtd_never_reaches_the_parser(settings, hide: str) -> None:
    """However the DOCTYPE is preceded, it is found: an internal entity under XSD validation crashes
    lxml 6.2 outright (SIGSEGV), so none may reach it. Run in a child: a crash must fail the test."""
    before = {"a 1 MiB comment first": "<!--" + "x" * (1 << 20) + "-->\n",
              "a comment holding markup": "<!-- <Transmission> -->", "a processing instruction": "<?x <a ?>"}[hide]
    p = write_xml(settings.inbox / "T001" / "T001_201705.xml", [course("C1", title="&t;")], [],
                  prolog=before + ENTITY)
    p.write_bytes(p.read_bytes().replace(b"&amp;t;", b"&t;"))
    assert ingest_in_child(settings, p) == ["refused", "F09"]


def ingest_in_child(settings, path: Path) -> list:
    """[status, refusal] of an ingest run in its own process: a crash of the process (a signal) or a
    hang (the timeout) fails the test instead of killing or stalling the suite."""
    code = ("import sys, json; from inservice.ingest import ingest_paths; from inservice.config import Settings; "
            f"r = ingest_paths([sys.argv[1]], Settings.from_env(sys.argv[2]), {RECEIVED!r})[0]; "
            "print(json.dumps([r['status'], r['refusal']]))")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(settings.home)], capture_output=True,
                          text=True, timeout=120)  # environment inherited: this test's warehouse
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_xml_other_encodings_pis_and_root_attributes(settings) -> None:
    """§2.4: UTF-8 or Big5. UTF-16 is F01 before the parser decodes it (a DOCTYPE in it would pass a
    byte scan); a processing instruction inside a field does not cut its text; a root with thousands
    of attributes is refused by the XSD quickly (copying them all was quadratic)."""
    inbox = settings.inbox / "T001"
    p = write_xml(inbox / "T001_201705.xml", GOOD_C, GOOD_A)
    p.write_bytes(p.read_text(encoding="utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    r = ingest(settings, p)
    assert_refused(settings, r, "F01")
    assert "UTF-8 or Big5" in r["findings"][0]["message_en"]
    p = write_xml(inbox / "T001_201706.xml", [course("C1")], [attendee("C1", IDS[0])])
    p.write_bytes(p.read_bytes().replace(b"<course_code>C1</course_code>", b"<course_code>C<?x y?>1</course_code>"))
    r = ingest(settings, p)
    assert r["status"] == "loaded" and r["findings"] == [], r["findings"]
    p = write_xml(inbox / "T001_201707.xml", GOOD_C, GOOD_A)
    attrs = " ".join(f'a{i}="x"' for i in range(200_000))
    p.write_bytes(p.read_bytes().replace(b'specVersion="1.0"', f'specVersion="1.0" {attrs}'.encode()))
    assert ingest_in_child(settings, p) == ["refused", "F07"]  # it took minutes


def _with_cell(path: Path, ref: str) -> Path:
    """The workbook with one more cell, at `ref`, in the attendance sheet (the second sheet)."""
    with zipfile.ZipFile(path) as z:
        parts = [(i, z.read(i)) for i in z.infolist()]
    row = "".join(ch for ch in ref if ch.isdigit())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in parts:
            if info.filename == "xl/worksheets/sheet2.xml":
                data = data.replace(b"</sheetData>", f'<row r="{row}"><c r="{ref}" t="inlineStr"><is><t>x</t>'
                                                     f"</is></c></row></sheetData>".encode())
            z.writestr(info, data)
    return path


@pytest.mark.slow
def test_f09_a_workbook_the_reader_cannot_hold_or_finish(settings) -> None:
    """One cell at XFD1048576 makes calamine ask for 512 GB and abort the process; one far to the
    right makes it spin for minutes. The read runs in a child under limits: F09, with its receipt,
    and this process (the run) goes on."""
    inbox = settings.inbox / "T001"
    r = ingest(settings, _with_cell(write_xlsx(inbox / "T001_201705.xlsx", GOOD_C, GOOD_A), "XFD1048576"))
    assert_refused(settings, r, "F09")
    assert "memory" in r["findings"][0]["message_en"] and all(Path(f).exists() for f in r["receipt_files"])
    quick = dataclasses.replace(settings, limits=Limits(reader_seconds=2))
    [r] = ingest_paths([_with_cell(write_xlsx(inbox / "T001_201706.xlsx", GOOD_C, GOOD_A), "ZZZZ5")], quick,
                       RECEIVED)
    assert_refused(settings, r, "F09")
    assert "longer than the limit of 2 s" in r["findings"][0]["message_en"]
    r = ingest(settings, write_xlsx(inbox / "T001_201707.xlsx", GOOD_C, GOOD_A))
    assert r["status"] == "loaded"  # the same process, after both


def test_f01_unreadable(settings) -> None:
    inbox = settings.inbox / "T001"
    inbox.mkdir(parents=True)
    (inbox / "T001_201705.xlsx").write_bytes(bytes(RNG.randrange(256) for _ in range(5000)))
    assert_refused(settings, ingest(settings, inbox / "T001_201705.xlsx"), "F01")
    (inbox / "T001_201706.xls").write_bytes(b"not an excel file at all")
    assert_refused(settings, ingest(settings, inbox / "T001_201706.xls"), "F01")
    full = write_xml(inbox / "full.xml", GOOD_C * 50, GOOD_A * 50).read_bytes()
    (inbox / "T001_201707.xml").write_bytes(full[: len(full) // 2])  # cut mid-way
    assert_refused(settings, ingest(settings, inbox / "T001_201707.xml"), "F01")
    big5 = write_xml(inbox / "x.xml", [course("C1", title="臺灣研習")], [], encoding="Big5").read_bytes()
    (inbox / "T001_201708.xml").write_bytes(big5.replace(b'encoding="Big5"', b'encoding="UTF-8"'))
    assert_refused(settings, ingest(settings, inbox / "T001_201708.xml"), "F01")
    (inbox / "T001_201709.xlsx").write_bytes(b"")
    assert_refused(settings, ingest(settings, inbox / "T001_201709.xlsx"), "F01")
    lines = full.decode().splitlines(keepends=True)
    lines[3] = lines[3].replace("</title>", "</titel>", 1)  # a mismatched tag on line 4
    (inbox / "T001_201710.xml").write_text("".join(lines), encoding="utf-8")
    r = ingest(settings, inbox / "T001_201710.xml")
    assert_refused(settings, r, "F01")
    assert "(line 4)" in r["findings"][0]["message_en"] and "第 4 行" in r["findings"][0]["message_zh"]


def test_f07_structure(settings) -> None:
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C, GOOD_A, sheet_names=("課程", "名單"))
    r = ingest(settings, p)
    assert_refused(settings, r, "F07")
    assert "研習名單" in r["findings"][0]["message_zh"]
    no_hours = [{k: v for k, v in c.items() if k != "hours"} for c in GOOD_C]
    p = write_xlsx(settings.inbox / "T001" / "T001_201706.xlsx", no_hours, GOOD_A)
    r = ingest(settings, p)
    assert_refused(settings, r, "F07")
    assert "研習時數" in r["findings"][0]["message_zh"] and "hours" in r["findings"][0]["message_en"]
    p = write_xml(settings.inbox / "T001" / "T001_201707.xml", [course("C1", remark="x")], GOOD_A)
    assert_refused(settings, ingest(settings, p), "F07")
    p = settings.inbox / "T001" / "T001_201708.xml"
    p.write_text('<?xml version="1.0" encoding="UTF-8"?><Upload unit="T001"></Upload>', encoding="utf-8")
    assert_refused(settings, ingest(settings, p), "F07")


@pytest.mark.parametrize(("extra", "record"),
                         [("attendance", "研習名單"), ("courses", "課程"), (" 研習名單", "研習名單")])
def test_f07_two_sheets_of_one_kind(settings, extra: str, record: str) -> None:
    """研習名單 and attendance (or 課程 and courses) in one workbook: reading one would drop the other's
    rows without a word, so neither is read."""
    from openpyxl import load_workbook

    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C, [attendee("C1", IDS[0])])
    wb = load_workbook(p)
    copy = wb.copy_worksheet(wb[record])
    copy.title = extra
    wb.save(p)
    r = ingest(settings, p)
    assert_refused(settings, r, "F07")
    [f] = r["findings"]
    assert f"「{record}」與「{extra}」" in f["message_zh"] and f"'{record}' and '{extra}'" in f["message_en"]


def _with_row_twice(path: Path, member: str, row: int, text: str | None = None) -> Path:
    """The workbook with a second <row r="N"> element in one sheet's XML (openpyxl never writes one),
    holding one inline-string cell (`text`, else a copy of the original row)."""
    import re

    with zipfile.ZipFile(path) as z:
        parts = {i.filename: z.read(i.filename) for i in z.infolist()}
    xml = parts[member].decode("utf-8")
    original = re.search(rf'<row r="{row}"[ >].*?</row>', xml, re.S).group(0)
    second = original if text is None else \
        f'<row r="{row}"><c r="A{row}" t="inlineStr"><is><t>{text}</t></is></c></row>'
    parts[member] = xml.replace(original, original + second).encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def test_f01_a_row_number_twice(settings) -> None:
    """Two <row r="3"> in the attendance sheet: the reader would merge them into one row, losing one."""
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C,
                   [attendee("C1", IDS[0]), attendee("C1", IDS[1]), attendee("C1", IDS[2])])
    _with_row_twice(p, "xl/worksheets/sheet2.xml", 3, "T001")
    r = ingest(settings, p)
    assert_refused(settings, r, "F01")
    [f] = r["findings"]
    assert "「研習名單」有兩個第 3 列" in f["message_zh"] and "row 3 twice" in f["message_en"]
    p = write_xlsx(settings.inbox / "T001" / "T001_201706.xlsx", [course("C1"), course("C2")], GOOD_A)
    assert_refused(settings, ingest(settings, _with_row_twice(p, "xl/worksheets/sheet1.xml", 2)), "F01")


def test_text_that_looks_like_a_row_tag_is_not_a_repeat(settings) -> None:
    """A cell whose text reads `row r="2"` is text, not a second row 2 (the quick scan's suspicion is
    checked): the upload loads."""
    p = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C,
                   [attendee("C1", IDS[0]), attendee("C1", IDS[1])])
    with zipfile.ZipFile(p) as z:
        parts = {i.filename: z.read(i.filename) for i in z.infolist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode("utf-8")
    xml = xml.replace("</sheetData>", '<row r="9"><c r="R9" t="inlineStr"><is><t>arrow r="2" x</t></is></c>'
                                      "</row></sheetData>")
    parts["xl/worksheets/sheet1.xml"] = xml.encode("utf-8")
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    r = ingest(settings, p)
    assert r["status"] == "loaded" and r["attendance"]["accepted"] == 2, r


def test_check_order_reports_the_first_failure(settings) -> None:
    # bad name and unknown unit and wrong inbox: F03 comes first
    p = write_xlsx(settings.inbox / "T002" / "t009_2017.xlsx", GOOD_C, GOOD_A)
    assert ingest(settings, p)["refusal"] == "F03"
    # unknown unit in another unit's inbox: F05 before F04
    p = write_xlsx(settings.inbox / "T002" / "T009_201705.xlsx", GOOD_C, GOOD_A)
    assert ingest(settings, p)["refusal"] == "F05"
    # a DOCTYPE in a broken file: F09 before F01
    p = settings.inbox / "T001" / "T001_201705.xml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text('<?xml version="1.0"?><!DOCTYPE x []><Transmission', encoding="utf-8")
    assert ingest(settings, p)["refusal"] == "F09"


def test_xls_and_big5_xml_unseen(settings) -> None:
    rows = [course("C1", title="臺灣閱讀教學"), course("C2", county_code="99999")]
    att = [attendee("C1", IDS[0]), attendee("C2", IDS[1])]
    att_t2 = [attendee("C1", IDS[2], unit_code="T002"), attendee("C2", IDS[3], unit_code="T002")]
    for path in (write_xls(settings.inbox / "T001" / "T001_201705.xls", rows, att),
                 write_xml(settings.inbox / "T002" / "T002_201705.xml",
                           [dict(r, unit_code="T002") for r in rows], att_t2,
                           unit="T002", encoding="Big5")):
        r = ingest(settings, path)
        assert r["status"] == "loaded", r["findings"]
        got = {(f["record"], f["row"], f["rule"]) for f in r["findings"]}
        first = 2 if path.suffix == ".xls" else 1
        assert got == {("course", first + 1, "C03"), ("attendance", first + 1, "A05")}
    with Warehouse(settings, read_only=True) as wh:
        titles = wh.con.execute("SELECT DISTINCT title FROM courses").fetchall()
    assert titles == [("臺灣閱讀教學",)]


def test_testing_unit_loads_into_test_area_only(settings) -> None:
    with Warehouse(settings) as wh:
        wh.add_unit("U100", "new unit", "file", "testing", date(2017, 5, 1))
    p = write_xlsx(settings.inbox / "U100" / "U100_201705.xlsx", [course("C1", unit_code="U100")],
                   [attendee("C1", IDS[0], unit_code="U100")])
    r = ingest(settings, p)
    assert r["status"] == "loaded" and r["area"] == "testing"
    snap = table_snapshot(settings)
    assert snap["courses"] == [] and snap["attendance"] == []
    assert len(snap["testing.courses"]) == 1 and len(snap["testing.attendance"]) == 1


def test_refused_upload_is_recorded_with_findings(settings) -> None:
    p = drop(settings, FIXTURES / "clean-xlsx" / "T002" / "T002_201705.xlsx", unit="T001")
    r = ingest(settings, p)
    assert r["refusal"] == "F04"
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT status, refusal FROM uploads").fetchall() == [("refused", "F04")]
        assert wh.con.execute("SELECT rule FROM findings").fetchall() == [("F04",)]


@pytest.mark.slow
def test_xml_cut_anywhere_is_refused_never_half_loaded(settings) -> None:
    full = write_xml(settings.home / "full.xml", [course(f"C{i}") for i in range(30)],
                     [attendee(f"C{i}", IDS[i % 5]) for i in range(30)]).read_bytes()
    end = full.rindex(b"</Transmission>")
    for i, cut in enumerate(sorted({60, 200, len(full) // 3, len(full) // 2, end - 40, end, end + 5})):
        p = settings.inbox / "T001" / f"T001_2017{i + 1:02d}.xml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(full[:cut])
        r = ingest(settings, p)
        assert r["refusal"] in ("F01", "F07"), (cut, r["refusal"])
        assert_refused(settings, r, r["refusal"])


def test_f03_a_file_named_for_a_month_after_the_month_received(settings) -> None:
    """Spec 1.1: `U001_201712.xlsx` received 2017-06-03 names a month that has not begun: F03. The
    month received itself is fine (a file may come before its deadline)."""
    with Warehouse(settings) as wh:
        wh.add_unit("U001", "unit U001", "file", "production", date(2016, 1, 1))
    p = write_xlsx(settings.inbox / "U001" / "U001_201712.xlsx", [course("C1", unit_code="U001")], [])
    [r] = ingest_paths([p], settings, "2017-06-03T10:00:00+08:00")
    assert_refused(settings, r, "F03")
    assert "2017-12" in r["findings"][0]["message_en"] and "2017-06" in r["findings"][0]["message_en"]
    p = write_xlsx(settings.inbox / "U001" / "U001_201707.xlsx", [course("C1", unit_code="U001")], [])
    [r] = ingest_paths([p], settings, "2017-06-30T23:59:59+08:00")  # the last second of June, Taipei
    assert r["refusal"] == "F03"
    [r] = ingest_paths([p], settings, "2017-06-30T16:00:00+00:00")  # 2017-07-01 00:00 in Taipei
    assert r["status"] == "loaded" and r["month"] == "2017-07"


@pytest.mark.slow
def test_every_refusal_is_recorded_under_the_sender(settings) -> None:
    """F01, F02, F03, F05 and a duplicate reach `uploads` (and `findings`), under the inbox's unit and
    the file's name; data_month is NULL when the name gives none, area NULL for an unregistered unit."""
    good = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", GOOD_C, GOOD_A)
    sent = {
        "F02": (settings.inbox / "T001" / "T001_201705.csv", "T001"),
        "F03": (write_xlsx(settings.inbox / "T002" / "t002_2017.xlsx", GOOD_C, GOOD_A), "T002"),
        "F05": (write_xlsx(settings.inbox / "T009" / "T009_201705.xlsx", GOOD_C, GOOD_A), "T009"),
        "F01": (settings.inbox / "T003" / "T003_201705.xlsx", "T003"),
    }
    sent["F02"][0].write_text("a,b\n")
    sent["F01"][0].mkdir(parents=True)
    assert ingest(settings, good)["status"] == "loaded"
    for rule, (path, unit) in sent.items():
        r = ingest(settings, path)
        assert (r["refusal"], r["unit"]) == (rule, unit)
        assert Path(r["receipt_files"][0]).parent == settings.outbox / unit
    dup = ingest(settings, good)
    assert dup["status"] == "duplicate"
    with Warehouse(settings, read_only=True) as wh:
        rows = wh.con.execute("""SELECT refusal, unit_code, file_name, status, data_month, area, upload_id
                                 FROM uploads WHERE refusal IS NOT NULL ORDER BY refusal""").fetchall()
        assert [r[:6] for r in rows] == [
            ("F01", "T003", "T003_201705.xlsx", "refused", None, "production"),  # no file: checked first
            ("F02", "T001", "T001_201705.csv", "refused", None, "production"),
            ("F03", "T002", "t002_2017.xlsx", "refused", None, "production"),
            ("F05", "T009", "T009_201705.xlsx", "refused", "2017-05", None),
            ("F08", "T001", "T001_201705.xlsx", "duplicate", "2017-05", "production"),
        ]
        for refusal, *_, upload_id in rows:
            assert wh.con.execute("SELECT rule FROM findings WHERE upload_id = ?", [upload_id]).fetchall() == [
                (refusal,)]
        assert len({r[0] for r in wh.con.execute("SELECT upload_id FROM uploads").fetchall()}) == 6
        assert wh.con.execute("SELECT count(*) FROM courses").fetchone()[0] == 1  # the duplicate wrote nothing


def test_a_file_in_another_unit_s_inbox_belongs_to_the_sender(settings) -> None:
    """F04 `inbox/T002/T003_201707.xml`: the receipt goes to outbox/T002/ and the `uploads` row is
    T002's (the sender's); T003 is charged with nothing."""
    p = write_xml(settings.inbox / "T002" / "T003_201707.xml", [course("C1", unit_code="T003")], [], unit="T003")
    r = ingest(settings, p)
    assert_refused(settings, r, "F04")
    assert r["unit"] == "T002" and r["upload_id"].startswith("T002-")
    assert all(Path(f).parent == settings.outbox / "T002" for f in r["receipt_files"])
    assert not (settings.outbox / "T003").exists()
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT unit_code, refusal FROM uploads").fetchall() == [("T002", "F04")]
