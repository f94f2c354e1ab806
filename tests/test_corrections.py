"""Corrections to closed courses, the history of a course, unit lifecycle and sealing, archive
exceptions — on real workbooks and a real DuckDB warehouse."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from openpyxl import Workbook, load_workbook

from inservice.cli import main as cli_main
from inservice.config import TAIPEI, Settings
from inservice.corrections.apply import process_paths
from inservice.corrections.history import course_history
from inservice.corrections.lifecycle import dormant_units, seal_dormant, set_state, state_log
from inservice.ingest import Ingestor, ingest_paths
from inservice.loaders.base import RawUpload, canonical_table
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.validations.engine import Context, validate
from inservice.validations.national_id import mask
from inservice.validations.pseudonym import Pseudonymiser, load_key
from inservice.warehouse.store import Source, Warehouse, WarehouseError
from tests.builders import attendee, course, make_id, write_xlsx
from tests.conftest import RECEIVED

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")

_RNG = random.Random(77)
IDS = [make_id(_RNG) for _ in range(5)]
T0 = datetime(2017, 6, 1, 10, 0, tzinfo=TAIPEI)
LETTER = "臺教師(三)字第1060080001號"
HEADERS = ["單位代碼", "研習代碼", "修改欄位", "原內容", "修改後內容", "核定機關", "核定文號", "核定日期"]
CORR_RECEIVED = "2017-06-20T09:00:00+08:00"
ID_SHAPE = re.compile(r"[A-Z][12890A-D][0-9]{8}")
TABLES = ("courses", "attendance", "history", "corrections", "correction_workbooks", "uploads")


# --- helpers -------------------------------------------------------------------------------------------
def mask1(nid: str) -> str:
    return mask(pa.array([nid]))[0].as_py()


def raw(courses: list[dict], attendance: list[dict]) -> RawUpload:
    def table(rt, rows):
        cols = {f.code: pa.array([None if r.get(f.code) is None else str(r[f.code]) for r in rows], pa.string())
                for f in rt.fields}
        return canonical_table(rt, pa.array(range(1, len(rows) + 1), pa.int64()), cols)
    return RawUpload(table(COURSE, courses), table(ATTENDANCE, attendance))


def merge(settings: Settings, courses: list[dict], attendance: list[dict], now: datetime, unit: str = "T001") -> None:
    """Load rows as a database feed would (channel "db"), at a chosen time, with the warehouse key."""
    with Warehouse(settings) as wh:
        ctx = Context(unit=unit, channel="db", received_on=now.date(),
                      pseudonymiser=Pseudonymiser(load_key(settings.home)), state=wh.state("production"))
        v = validate(raw(courses, attendance), ctx)
        assert not [f for f in v.findings.to_pylist() if f["severity"] == "error"], v.findings.to_pylist()
        with wh.transaction():
            wh.merge(v, "production", Source("feed", f"{unit}-{now:%Y%m%d%H%M}"), now)


M = "2017-05-12 09:00"


@pytest.fixture
def loaded(settings: Settings) -> Settings:
    """T001: C1 (one day, 6 h) and C2 (two days, 12 h) closed; C9 open; C1's list: IDS[0], IDS[1]."""
    merge(settings, [course("C1", modified_at=M),
                     course("C2", start_date="2017-05-01", end_date="2017-05-02", hours="12", modified_at=M),
                     course("C9", closed_date=None, modified_at=M)],
          [attendee("C1", IDS[0], modified_at=M), attendee("C1", IDS[1], modified_at=M)], T0)
    return settings


def book(path: Path, rows: list[list], title_row: bool = False, headers: list[str] = HEADERS) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = "修改已結案課程內容申請表"
    if title_row:
        ws.append(["修改已結案課程內容申請表"])
    ws.append(headers)
    for r in rows:
        ws.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def row(course_code: str, field: str, old: object, new: object, unit: str = "T001", letter: str = LETTER) -> list:
    return [unit, course_code, field, old, new, "教育部", letter, "106/06/15"]


def apply(settings: Settings, path: Path, received: str = CORR_RECEIVED) -> dict:
    [receipt] = process_paths([path], settings, received)
    return receipt


def q(settings: Settings, sql: str, params: list | None = None) -> list[tuple]:
    with Warehouse(settings, read_only=True) as wh:
        return wh.con.execute(sql, params or []).fetchall()


def c1(settings: Settings, *cols: str) -> tuple:
    return q(settings, f"SELECT {', '.join(cols)} FROM courses WHERE course_code = 'C1'")[0]


def snapshot(settings: Settings) -> dict[str, list]:
    with Warehouse(settings, read_only=True) as wh:
        return {t: sorted(map(repr, wh.con.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES}


def run_cli(settings: Settings, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "INSERVICE_HOME": str(settings.home)}
    if failpoint:
        env["INSERVICE_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def by_row(receipt: dict) -> dict[int, dict]:
    return {c["row"]: c for c in receipt["changes"]}


# --- corrections --------------------------------------------------------------------------------------------
def test_a_correction_is_applied_through_the_history(loaded: Settings) -> None:
    path = book(loaded.inbox / "_corrections" / "fix.xlsx", [
        row("C1", "研習名稱", "素養導向教學設計工作坊C1", "差異化教學工作坊"),
        row("C1", "start_date", "106/05/10", "1060509"),  # ROC forms, as uploads accept them
        row("Ｃ２", "縣市代碼", "臺北市", "新北市"),  # codes by label, full-width course code
        row("C2", "研習對象", "J；E", "K;E;J"),  # the same list as stored "E;J"
    ], title_row=True)
    r = apply(loaded, path)
    assert r["status"] == "processed" and r["rows"] == {"received": 4, "applied": 4, "refused": 0,
                                                        "already_applied": 0}
    assert [c["row"] for c in r["changes"]] == [3, 4, 5, 6]  # sheet rows (a title row above the headers)
    assert c1(loaded, "title", "start_date") == ("差異化教學工作坊", date(2017, 5, 9))
    assert q(loaded, "SELECT county_code, audience FROM courses WHERE course_code = 'C2'") == [("65000", "K;E;J")]
    hist = q(loaded, """SELECT course_code, action, source, source_id, letter_no, before_json, after_json
                        FROM history ORDER BY changed_at""")
    assert [(h[0], h[1], h[2], h[4]) for h in hist] == [("C1", "correction", "correction", LETTER)] * 2 + [
        ("C2", "correction", "correction", LETTER)] * 2
    assert [h[3] for h in hist] == [f"{r['content_hash']}:{n}" for n in (3, 4, 5, 6)]
    assert json.loads(hist[0][5])["title"] == "素養導向教學設計工作坊C1"
    assert json.loads(hist[0][6])["title"] == "差異化教學工作坊"
    assert q(loaded, "SELECT count(*), min(status) FROM corrections") == [(4, "applied")]
    # the receipt: JSON and Excel in outbox/_corrections/
    js, xl = map(Path, r["receipt_files"])
    assert js.parent == loaded.outbox / "_corrections" and js.name == "fix.xlsx.20170620T090000.receipt.json"
    assert json.loads(js.read_text(encoding="utf-8"))["rows"]["applied"] == 4
    ws = load_workbook(xl, read_only=True)["更正結果 Changes"]
    cells = [r for r in ws.iter_rows(values_only=True)]
    assert cells[0][0] == "列 Row" and cells[1][8] == "已更正 applied"


def test_a_very_long_workbook_name_gets_receipts_that_fit_the_file_system(loaded: Settings) -> None:
    """A name near the file system's 255 bytes: the receipts' names are shortened as uploads' are
    (its start and a hash), so they can be written; the receipt still names the file in full."""
    name = "更正申請" * 19 + "x.xlsx"  # 234 bytes: a receipt named after it in full would be 263
    assert len(name.encode()) == 234
    path = book(loaded.inbox / "_corrections" / name, [row("C1", "研習名稱", "素養導向教學設計工作坊C1", "長名工作坊")])
    first, again = apply(loaded, path), apply(loaded, path)
    assert (first["status"], first["rows"]["applied"], again["status"]) == ("processed", 1, "duplicate")
    for r in (first, again):
        files = [Path(f) for f in r["receipt_files"]]
        assert all(f.is_file() and len(f.name.encode()) <= 255 for f in files), [len(f.name.encode()) for f in files]
        assert json.loads(files[0].read_text(encoding="utf-8"))["file"] == name
    assert len({f for r in (first, again) for f in r["receipt_files"]}) == 4  # the duplicate's own pair


def test_each_refusal_reason_and_only_the_good_rows_are_applied(loaded: Settings) -> None:
    rows = [
        row("C404", "研習名稱", "x", "y"),  # 2 unknown course
        row("C9", "研習名稱", "素養導向教學設計工作坊C9", "新名稱"),  # 3 open course
        row("C1", "研習代碼", "C1", "C7"),  # 4 forbidden field
        row("C1", "研習名稱", "舊名稱", "新名稱"),  # 5 原內容 mismatch
        row("C1", "研習迄日", "2017-05-10", "2017-05-09"),  # 6 C04 end before start
        row("C1", "研習時數", "6", "13"),  # 7 C05: more than 12 h on a one-day course
        row("C1", "研習名稱", "素養導向教學設計工作坊C1", "正確名稱"),  # 8 good
        row("C1", "結案日期", "2017-05-12", "2017-05-01"),  # 9 C09 closed before end
        row("C1", "縣市代碼", "63000", "99999"),  # 10 C03 not in the list
        row("C1", "研習起日", "2017-05-10", "2017-02-30"),  # 11 C02 no such date
        row("C1", "備註", "", "x"),  # 12 unknown field
        row("C2", "研習時數", "12", "24"),  # 13 good: two days allow 24 h
        row("C1", "研習名稱", "正確名稱", "第三個名稱", unit="T999"),  # 14 unknown unit
        row("C1", "研習名稱", "正確名稱", "第三個名稱", letter=None),  # 15 no letter
        row("C1", "結案日期", "2017-05-12", ""),  # 16 C10: a correction cannot reopen a course
        row("C2", "研習時數", "24", "24"),  # 17 no change
    ]
    before = q(loaded, "SELECT * FROM courses WHERE course_code <> 'C1' AND course_code <> 'C2' ORDER BY 1, 2")
    r = apply(loaded, book(loaded.inbox / "_corrections" / "mixed.xlsx", rows))
    got = {n: (c["status"], c["reason"]) for n, c in by_row(r).items()}
    assert got == {
        2: ("refused", "unknown_course"), 3: ("refused", "open_course"), 4: ("refused", "forbidden_field"),
        5: ("refused", "original_mismatch"), 6: ("refused", "invalid_value"), 7: ("refused", "invalid_value"),
        8: ("applied", None), 9: ("refused", "invalid_value"), 10: ("refused", "invalid_value"),
        11: ("refused", "invalid_value"), 12: ("refused", "unknown_field"), 13: ("applied", None),
        14: ("refused", "unknown_unit"), 15: ("refused", "missing"), 16: ("refused", "invalid_value"),
        17: ("refused", "no_change"),
    }
    rules = {n: re.findall(r"\b[CA]\d\d\b", c["message_en"]) for n, c in by_row(r).items() if c["reason"] ==
             "invalid_value"}
    assert rules == {6: ["C04"], 7: ["C05"], 9: ["C09"], 10: ["C03"], 11: ["C02"], 16: ["C10"]}
    for c in r["changes"]:  # bilingual reasons
        assert c["message_zh"] and c["message_en"] and c["message_zh"] != c["message_en"]
    assert "素養導向教學設計工作坊C1" in by_row(r)[5]["message_zh"]  # the current value is quoted
    assert c1(loaded, "title", "end_date", "hours", "closed_date", "county_code", "start_date") == (
        "正確名稱", date(2017, 5, 10), 6, date(2017, 5, 12), "63000", date(2017, 5, 10))
    assert q(loaded, "SELECT hours FROM courses WHERE course_code = 'C2'") == [(24,)]
    assert q(loaded, "SELECT * FROM courses WHERE course_code <> 'C1' AND course_code <> 'C2' ORDER BY 1, 2") == before
    assert q(loaded, "SELECT count(*) FROM history") == [(2,)]
    # every decision is in the audit trail, refused ones too
    assert q(loaded, "SELECT status, count(*) FROM corrections GROUP BY 1 ORDER BY 1") == [("applied", 2),
                                                                                          ("refused", 14)]


def test_a_control_character_refuses_its_row_and_is_shown_printable(loaded: Settings) -> None:
    """A cell holding a control character (Excel's `_x0000_`): that row is refused; the receipt's
    workbook is written and the audit trail holds U+FFFD (PostgreSQL text cannot hold NUL)."""
    rows = [row("C1", "研習名稱", "素養導向教學設計工作坊C1", "新_x0000_名稱"),  # 2
            row("C1", "研習名稱", "素養導向教學設計工作坊C1", "正確名稱")]  # 3
    rows[0][5] = "教育_x0001_部"
    r = apply(loaded, book(loaded.inbox / "_corrections" / "control.xlsx", rows))
    got = {n: (c["status"], c["reason"]) for n, c in by_row(r).items()}
    assert got == {2: ("refused", "control_character"), 3: ("applied", None)}
    refused = by_row(r)[2]
    assert refused["new"] == "新\ufffd名稱" and refused["authority"] == "教育\ufffd部"
    assert "修改後內容" in refused["message_zh"] and "核定機關" in refused["message_zh"]
    assert Path(r["receipt_files"][1]).stat().st_size > 0
    assert c1(loaded, "title") == ("正確名稱",)
    assert q(loaded, "SELECT new_value, authority FROM corrections WHERE status = 'refused'") == [
        ("新\ufffd名稱", "教育\ufffd部")]


def test_a_workbook_the_reader_cannot_hold_is_refused_whole(loaded: Settings) -> None:
    """A cell at XFD1048576 would make calamine abort the whole process: read in a child, the
    workbook is refused as unreadable and nothing is applied."""
    path = book(loaded.inbox / "_corrections" / "far.xlsx", [row("C1", "研習名稱", "素養導向教學設計工作坊C1", "新")])
    with zipfile.ZipFile(path) as z:
        parts = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in parts:
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"</sheetData>", b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x'
                                                     b"</t></is></c></row></sheetData>")
            z.writestr(info, data)
    before = snapshot(loaded)
    r = apply(loaded, path)
    assert (r["status"], r["refusal"]) == ("refused", "unreadable")
    assert any("memory" in n for n in r["notes"])
    after = snapshot(loaded)
    assert len(after.pop("correction_workbooks")) == len(before.pop("correction_workbooks")) + 1  # its record
    assert after == before


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_the_same_workbook_twice_applies_nothing_twice(loaded: Settings) -> None:
    rows = [row("C1", "研習名稱", "素養導向教學設計工作坊C1", "新名稱")]
    path = book(loaded.inbox / "_corrections" / "once.xlsx", rows)
    assert apply(loaded, path)["rows"]["applied"] == 1
    before = snapshot(loaded)
    again = apply(loaded, path, "2017-06-21T09:00:00+08:00")
    assert again["status"] == "duplicate" and again["changes"] == [] and "once.xlsx" in again["notes"][0]
    assert snapshot(loaded) == before
    assert Path(again["receipt_files"][0]).is_file()
    # the same row inside another workbook (other bytes): not applied again, the new row is
    other = book(loaded.inbox / "_corrections" / "twice.xlsx",
                 [rows[0], row("C2", "研習名稱", "素養導向教學設計工作坊C2", "另一名稱")])
    r = apply(loaded, other, "2017-06-22T09:00:00+08:00")
    assert [(c["status"], c["reason"]) for c in r["changes"]] == [("already_applied", None), ("applied", None)]
    assert q(loaded, "SELECT count(*) FROM history WHERE course_code = 'C1'") == [(1,)]
    # the CLI says the same
    out = run_cli(loaded, "corrections", "apply", str(path), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "duplicate"
    listing = run_cli(loaded, "corrections", "list")
    assert "once.xlsx" in listing.stdout and "twice.xlsx" in listing.stdout


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["corrections.after_first_row", "corrections.before_commit"])
def test_a_crash_mid_workbook_leaves_it_unprocessed_and_a_rerun_applies_it(loaded: Settings, failpoint: str) -> None:
    path = book(loaded.inbox / "_corrections" / "crash.xlsx", [
        row("C1", "研習名稱", "素養導向教學設計工作坊C1", "新名稱"),
        row("C1", "attendance:remove", IDS[1], None),
        row("C2", "研習時數", "12", "10"),
    ])
    before = snapshot(loaded)
    killed = run_cli(loaded, "corrections", "apply", str(path), "--received-at", CORR_RECEIVED, failpoint=failpoint)
    assert killed.returncode == -9  # SIGKILL inside the open transaction
    assert snapshot(loaded) == before
    assert not list((loaded.outbox / "_corrections").glob("*.receipt.json"))  # no receipt published
    ok = run_cli(loaded, "corrections", "apply", str(path), "--received-at", CORR_RECEIVED, "--json")
    assert ok.returncode == 0, ok.stderr
    r = json.loads(ok.stdout)
    assert r["status"] == "processed" and r["rows"]["applied"] == 3
    assert c1(loaded, "title") == ("新名稱",)
    assert q(loaded, "SELECT count(*) FROM attendance") == [(1,)]


def test_an_unreadable_workbook_is_refused_whole_and_may_be_sent_again(loaded: Settings) -> None:
    bad = loaded.inbox / "_corrections" / "bad.xlsx"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not a workbook")
    r = apply(loaded, bad)
    assert (r["status"], r["refusal"]) == ("refused", "unreadable")
    wrong = book(loaded.inbox / "_corrections" / "wrong.xlsx", [["T001", "C1"]], headers=["單位代碼", "研習代碼"])
    assert apply(loaded, wrong)["refusal"] == "structure"
    assert apply(loaded, wrong)["status"] == "refused"  # not a duplicate: nothing of it was processed
    assert q(loaded, "SELECT status, count(*) FROM correction_workbooks GROUP BY 1") == [("refused", 3)]


# --- attendance corrections ---------------------------------------------------------------------------
def test_attendance_add_remove_hours_with_masked_ids_and_no_raw_id_anywhere(loaded: Settings, capsys) -> None:
    bad_id = IDS[4][:-1] + str((int(IDS[4][-1]) + 1) % 10)
    path = book(loaded.inbox / "_corrections" / "att.xlsx", [
        row("C1", "attendance:add", None, f"{IDS[2]};423605;6"),  # 2
        row("C1", "attendance:hours_granted", f"{IDS[0]}:6", f"{IDS[0]}：4"),  # 3
        row("C1", "attendance:remove", IDS[1], None),  # 4
        row("C1", "研習名單:新增", None, f"{bad_id};423605;6"),  # 5 invalid ID (A03)
        row("C1", "attendance:hours_granted", f"{IDS[3]}:6", f"{IDS[3]}:4"),  # 6 not on the list
        row("C1", "attendance:hours_granted", f"{IDS[2]}:6", f"{IDS[2]}:7"),  # 7 A06: over the course's 6 h
        row("C1", "attendance:add", None, f"{IDS[0]};423605;6"),  # 8 already listed
        row("C1", "attendance:hours_granted", f"{IDS[0]}:6", f"{IDS[0]}:5"),  # 9 原內容 no longer 6
        row("C1", "attendance:add", None, f"{IDS[3]};423605"),  # 10 format
        row("C1", "attendance:核發時數", f"{IDS[2]}:6", f"{IDS[3]}:5"),  # 11 two IDs
        row("C9", "attendance:add", None, f"{IDS[3]};423605;3"),  # 12 open course
    ])
    assert cli_main(["corrections", "apply", str(path), "--received-at", CORR_RECEIVED]) == 0
    printed = capsys.readouterr().out
    r = json.loads(Path(sorted((loaded.outbox / "_corrections").glob("att.xlsx.*.json"))[0]).read_text("utf-8"))
    got = {n: (c["status"], c["reason"]) for n, c in by_row(r).items()}
    assert got == {2: ("applied", None), 3: ("applied", None), 4: ("applied", None),
                   5: ("refused", "invalid_value"), 6: ("refused", "unknown_teacher"), 7: ("refused", "invalid_value"),
                   8: ("refused", "already_listed"), 9: ("refused", "original_mismatch"), 10: ("refused", "bad_format"),
                   11: ("refused", "id_mismatch"), 12: ("refused", "open_course")}
    assert "A03" in by_row(r)[5]["message_en"] and "A06" in by_row(r)[7]["message_en"]
    assert by_row(r)[2]["new"] == f"{mask1(IDS[2])};423605;6" and by_row(r)[4]["original"] == mask1(IDS[1])
    assert by_row(r)[3]["original"] == f"{mask1(IDS[0])}:6"
    key = Pseudonymiser(load_key(loaded.home)).one
    rows = q(loaded, "SELECT teacher_key, hours_granted, completed FROM attendance ORDER BY hours_granted")
    assert rows == [(key(IDS[0]), 4, True), (key(IDS[2]), 6, True)]
    actions = q(loaded, "SELECT action, teacher_key FROM history WHERE record = 'attendance' ORDER BY changed_at")
    assert actions == [("add", key(IDS[2])), ("correction", key(IDS[0])), ("remove", key(IDS[1]))]
    # no raw ID anywhere: warehouse text, receipts (JSON and Excel), the command's output
    with Warehouse(loaded, read_only=True) as wh:
        cols = wh.con.execute("""SELECT table_schema, table_name, column_name FROM information_schema.columns
                                 WHERE data_type = 'VARCHAR'""").fetchall()
        stored = " ".join(str(v) for s, t, c in cols
                          for (v,) in wh.con.execute(f'SELECT DISTINCT "{c}" FROM {s}.{t}').fetchall())
    texts = [stored, printed] + [p.read_text("utf-8") for p in (loaded.outbox / "_corrections").glob("*.json")]
    for p in (loaded.outbox / "_corrections").glob("*.xlsx"):
        wb = load_workbook(p, read_only=True)
        texts += [" ".join(str(c) for r_ in ws.iter_rows(values_only=True) for c in r_ if c is not None)
                  for ws in wb.worksheets]
    blob = "\n".join(texts)
    assert not any(i in blob for i in [*IDS, bad_id]) and not ID_SHAPE.search(blob)
    assert mask1(IDS[2]) in blob


# --- history ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_history_reconstructs_a_course_before_and_after_corrections_and_withdrawals(loaded: Settings) -> None:
    key = Pseudonymiser(load_key(loaded.home)).one
    apply(loaded, book(loaded.inbox / "_corrections" / "h.xlsx", [
        row("C1", "研習名稱", "素養導向教學設計工作坊C1", "新名稱"),
        row("C1", "attendance:add", None, f"{IDS[2]};423605;6"),
        row("C1", "attendance:remove", IDS[1], None),
    ]))
    with Warehouse(loaded, read_only=True) as wh:
        before = course_history(wh.con, "T001", "C1", date(2017, 6, 1))
        unloaded = course_history(wh.con, "T001", "C1", date(2017, 5, 31))
        now = course_history(wh.con, "T001", "C1", datetime.now(TAIPEI).date())
        current = course_history(wh.con, "T001", "C1")
    assert before["course"]["title"] == "素養導向教學設計工作坊C1"
    assert {r["teacher_key"] for r in before["attendance"]["rows"]} == {key(IDS[0]), key(IDS[1])}
    assert before["changes"] == []
    assert unloaded["course"] is None and unloaded["attendance"]["count"] == 0
    for state in (now, current):
        assert state["course"]["title"] == "新名稱"
        assert {r["teacher_key"] for r in state["attendance"]["rows"]} == {key(IDS[0]), key(IDS[2])}
    assert [(c["record"], c["action"], c["fields"]) for c in now["changes"]] == [
        ("course", "correction", ["title"]), ("attendance", "add", []), ("attendance", "remove", [])]
    assert now["changes"][0]["letter_no"] == LETTER
    # a feed withdraws C3 on day 3 and sends it again on day 5: absent in between, back afterwards
    c3 = course("C3", closed_date=None, modified_at=M)
    merge(loaded, [c3], [attendee("C3", IDS[0], modified_at=M)], T0)
    merge(loaded, [{**c3, "is_deleted": "Y"}], [], T0 + timedelta(days=2))
    merge(loaded, [{**c3, "title": "重新開課"}], [], T0 + timedelta(days=4))
    with Warehouse(loaded, read_only=True) as wh:
        states = {d: course_history(wh.con, "T001", "C3", date(2017, 6, d)) for d in (1, 2, 3, 4, 5)}
    assert [states[d]["course"] and states[d]["course"]["title"] for d in (1, 2, 3, 4, 5)] == [
        "素養導向教學設計工作坊C3", "素養導向教學設計工作坊C3", None, None, "重新開課"]
    assert [states[d]["attendance"]["count"] for d in (1, 2, 3, 5)] == [1, 1, 0, 0]
    # the command
    out = run_cli(loaded, "history", "C1", "--unit", "T001", "--at", "2017-06-01", "--json")
    assert out.returncode == 0, out.stderr
    h = json.loads(out.stdout)
    assert h["course"]["title"] == "素養導向教學設計工作坊C1" and h["attendance"]["count"] == 2
    assert run_cli(loaded, "history", "C1").returncode == 0  # one unit has C1: --unit not needed
    text = run_cli(loaded, "history", "C1").stdout
    assert "title: 新名稱" in text and "letter " + LETTER in text
    assert not any(i in text + out.stdout for i in IDS)


# --- unit lifecycle ------------------------------------------------------------------------------------------
def upload(settings: Settings, unit: str, code: str = "P1", received: str = RECEIVED, **over: object) -> dict:
    """A unit's upload, written once: a second call sends the very same bytes again."""
    path = settings.inbox / unit / f"{unit}_201705.xlsx"
    if not path.exists():
        write_xlsx(path, [course(code, unit_code=unit, **over)], [attendee(code, IDS[0], unit_code=unit)])
    [r] = ingest_paths([path], settings, received)
    return r


def test_promotion_copies_nothing_and_the_resend_is_not_a_duplicate(settings: Settings) -> None:
    with Warehouse(settings) as wh:
        wh.add_unit("T004", "new unit", "file", "testing", date(2017, 5, 1))
    first = upload(settings, "T004")
    assert (first["status"], first["area"]) == ("loaded", "testing")
    out = run_cli(settings, "units", "set-state", "T004", "production", "--letter", "臺教師(三)字第1060090001號")
    assert out.returncode == 0, out.stderr
    assert q(settings, "SELECT count(*) FROM courses WHERE unit_code = 'T004'") == [(0,)]  # nothing copied
    assert q(settings, "SELECT count(*) FROM testing.courses WHERE unit_code = 'T004'") == [(1,)]
    again = upload(settings, "T004")  # the same bytes, now for production: F08 is per area
    assert (again["status"], again["refusal"], again["area"]) == ("loaded", None, "production")
    assert q(settings, "SELECT count(*) FROM courses WHERE unit_code = 'T004'") == [(1,)]
    assert upload(settings, "T004")["status"] == "duplicate"  # and once loaded there, it is one
    with Warehouse(settings) as wh:
        log = state_log(wh, "T004")
        with pytest.raises(WarehouseError, match="not allowed"):
            set_state(wh, "T004", "testing", "L")  # no demotion
        with pytest.raises(WarehouseError, match="letter"):
            set_state(wh, "T004", "sealed", " ")
    assert [(e["from_state"], e["to_state"], e["reason"], e["letter_no"]) for e in log] == [
        (None, "testing", "register", None),  # `units add` is the log's first line
        ("testing", "production", "promote", "臺教師(三)字第1060090001號")]


@pytest.mark.slow
def test_sealing_lists_then_seals_only_when_confirmed_and_a_sealed_unit_reapplies(settings: Settings) -> None:
    assert upload(settings, "T001")["status"] == "loaded"  # received 2017-06-03: in the default window
    listed = run_cli(settings, "units", "seal-dormant", "--json")
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    assert [u["unit_code"] for u in out["dormant"]] == ["T002", "T003"] and out["sealed"] == []
    assert q(settings, "SELECT DISTINCT state FROM units") == [("production",)]
    assert run_cli(settings, "units", "seal-dormant", "--yes").returncode == 1  # no letter
    done = run_cli(settings, "units", "seal-dormant", "--yes", "--letter", "臺教師(三)字第1060100001號")
    assert done.returncode == 0 and "sealed: T002, T003" in done.stdout
    with Warehouse(settings) as wh:
        assert {u.unit_code: u.state for u in wh.units()} == {"T001": "production", "T002": "sealed",
                                                              "T003": "sealed"}
        assert [(e["unit_code"], e["reason"]) for e in state_log(wh) if e["reason"] != "register"] == [
            ("T002", "seal_dormant 2013-01-01..2017-06-08"), ("T003", "seal_dormant 2013-01-01..2017-06-08")]
        # another window: T001 had nothing loaded after 2017-06-03; sealed units are not listed again
        assert [u.unit_code for u in dormant_units(wh, date(2017, 6, 4), date(2017, 12, 31))] == ["T001"]
        assert seal_dormant(wh, date(2017, 6, 4), date(2017, 12, 31))["sealed"] == []
    refused = upload(settings, "T002")
    assert (refused["status"], refused["refusal"]) == ("refused", "F06")
    # re-application: back to testing (not straight to production), then uploads load into the test area
    assert run_cli(settings, "units", "set-state", "T002", "production", "--letter", "L").returncode == 1
    assert run_cli(settings, "units", "set-state", "T002", "testing", "--letter", "臺教師(三)字第1060110001號"
                   ).returncode == 0
    back = upload(settings, "T002")
    assert (back["status"], back["area"]) == ("loaded", "testing")
    log = run_cli(settings, "units", "log", "T002").stdout
    assert "sealed → testing\treapply\t臺教師(三)字第1060110001號" in log


# --- archive exceptions ----------------------------------------------------------------------------------------
def test_archive_exceptions_expire(settings: Settings) -> None:
    with Warehouse(settings) as wh:
        wh.add_exception("T001", None, "L-all", date(2017, 3, 1), date(2017, 12, 31))
        wh.add_exception("T002", "A0", "L-one", date(2017, 3, 1), date(2017, 6, 30))
        on = {d: wh.exceptions_for("T001", d).all_courses
              for d in (date(2017, 2, 28), date(2017, 3, 1), date(2017, 12, 31), date(2018, 1, 1))}
        assert on == {date(2017, 2, 28): False, date(2017, 3, 1): True, date(2017, 12, 31): True,
                      date(2018, 1, 1): False}
        assert wh.exceptions_for("T002", date(2017, 6, 30)).course_codes == {"A0"}
        assert wh.exceptions_for("T002", date(2017, 7, 1)).course_codes == frozenset()
        assert not wh.exceptions_for("T003", date(2017, 6, 1)).all_courses
    archived = {"start_date": "2012-12-01", "end_date": "2012-12-01", "closed_date": "2012-12-03"}
    inside = upload(settings, "T001", "A0", "2017-06-03T10:00:00+08:00", **archived)
    assert inside["status"] == "loaded" and inside["courses"]["accepted"] == 1
    expired = upload(settings, "T002", "A0", "2017-07-03T10:00:00+08:00", **archived)
    assert [f["rule"] for f in expired["findings"] if f["record"] == "course"] == ["C07"]


def test_a_rerun_after_an_exception_loads_the_rows_refused_as_archived(settings: Settings) -> None:
    path = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [
        course("C1"), course("A0", start_date="2012-12-01", end_date="2012-12-01", closed_date="2017-05-12",
                                 tags=None)],
        [attendee("C1", IDS[0]), attendee("A0", IDS[1])])
    first = ingest_paths([path], settings, RECEIVED)[0]
    assert first["status"] == "loaded" and first["courses"]["rejected"] == 1
    assert {f["rule"] for f in first["findings"]} == {"C07", "A05"}
    with Warehouse(settings) as wh:
        ingestor = Ingestor(settings, wh)
        # an expired exception admits nothing on a re-run either
        wh.add_exception("T001", "A0", "L-old", date(2017, 6, 10), date(2020, 12, 31))
        stale = ingestor.ingest(path, RECEIVED, rerun=True)
        assert stale["status"] == "loaded" and stale["courses"]["rejected"] == 1
        wh.add_exception("T001", "A0", "臺教師(三)字第1060070001號", date(2017, 6, 10), date(2099, 12, 31))
        # the plain re-send is still the duplicate of the loaded upload ...
        assert ingestor.ingest(path, RECEIVED)["status"] == "duplicate"
        # ... the explicit re-run loads the rows refused before, and changes nothing else
        r = ingestor.ingest(path, RECEIVED, rerun=True)
        assert (r["status"], r["rerun"]) == ("loaded", True)
        assert [f["rule"] for f in r["findings"]] == ["W03"]  # A0 closed years after it ended: a warning only
        assert r["merge"]["courses_inserted"] == 1 and r["merge"]["attendance_inserted"] == 1
        assert r["merge"]["courses_updated"] == 0 and r["merge"]["attendance_updated"] == 0
        rows = wh.con.execute("SELECT upload_id, status FROM uploads ORDER BY processed_at").fetchall()
        assert [st for _, st in rows] == ["loaded", "loaded", "duplicate", "loaded"]  # the duplicate is recorded
        assert len({u for u, _ in rows}) == 4 and rows[-1][0].startswith(first["upload_id"] + "-rerun")
        assert wh.con.execute("SELECT count(*) FROM courses").fetchone()[0] == 2
        assert wh.con.execute("SELECT count(*) FROM history").fetchone()[0] == 0


# --- Dagster ------------------------------------------------------------------------------------------------------
@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def _defs() -> dg.Definitions:
    from inservice.assets.corrections import CORRECTION_ASSETS
    from inservice.assets.shared import InserviceResource
    from inservice.pipelines.corrections import CORRECTION_JOBS, CORRECTION_SENSORS

    return dg.Definitions(assets=CORRECTION_ASSETS, jobs=CORRECTION_JOBS, sensors=CORRECTION_SENSORS,
                          resources={"inservice": InserviceResource()})


def test_dagster_sensor_job_and_register_view(loaded: Settings, instance: dg.DagsterInstance) -> None:
    defs = _defs()
    path = book(loaded.inbox / "_corrections" / "d.xlsx", [row("C1", "研習名稱", "素養導向教學設計工作坊C1", "新名稱")])
    (loaded.inbox / "_corrections" / "~$d.xlsx").write_bytes(b"an editor's lock file")
    (loaded.inbox / "T001").mkdir(parents=True)
    (loaded.inbox / "T001" / "T001_201705.xlsx").write_bytes(b"a unit upload: not this sensor's")
    sensor = defs.resolve_sensor_def("corrections_sensor")

    def tick(cursor: str | None) -> dg.SensorResult:
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources={"inservice": defs.resources["inservice"]})
        return sensor.evaluate_tick(ctx)

    first = tick(None)
    assert first.run_requests == []  # new files wait one tick
    second = tick(first.cursor)
    [rr] = second.run_requests
    assert rr.run_key.startswith("_corrections/d.xlsx/") and rr.job_name == "apply_corrections"
    result = defs.resolve_job_def(rr.job_name).execute_in_process(run_config=rr.run_config, instance=instance,
                                                                  tags=rr.tags)
    assert result.success
    [mat] = [m for m in result.get_asset_materialization_events()
             if m.asset_key == dg.AssetKey("correction_workbook")]
    meta = {k: v.value for k, v in mat.materialization.metadata.items()}
    assert meta["status"] == "processed" and meta["rows_applied"] == 1
    if loaded.warehouse is None:  # DuckDB: the analysts' copy was refreshed after the correction's commit
        assert meta["analyst_access"] == "copy" and meta["analyst_rows"] > 0
    assert not path.exists() and Path(meta["original"]).is_file()
    assert "archive/_corrections/" in meta["original"]
    assert c1(loaded, "title") == ("新名稱",)
    assert tick(second.cursor).run_requests == []
    # the sealing job lists without confirm, seals with it
    sealing = defs.resolve_job_def("sealing")
    listed = sealing.execute_in_process(instance=instance, run_config={"ops": {"seal_dormant_units": {"config": {}}}})
    out = listed.output_for_node("seal_dormant_units")
    assert [u["unit_code"] for u in out["dormant"]] == ["T001", "T002", "T003"] and out["sealed"] == []
    assert not sealing.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"seal_dormant_units": {"config": {"confirm": True}}}}).success  # needs a letter
    sealed = sealing.execute_in_process(instance=instance, run_config={"ops": {"seal_dormant_units": {"config": {
        "confirm": True, "letter": "L-seal", "from_date": "2013-01-01", "to_date": "2017-06-08"}}}})
    assert sealed.output_for_node("seal_dormant_units")["sealed"] == ["T001", "T002", "T003"]
    # the exceptions register as a table asset
    with Warehouse(loaded) as wh:
        wh.add_exception("T001", None, "L-1", date(2017, 3, 1), date(2017, 12, 31))
        wh.add_exception("T002", "A0", "L-2", date(2017, 3, 1), date(2099, 12, 31))
    view = defs.resolve_job_def("archive_exceptions_register").execute_in_process(instance=instance)
    [mat] = view.get_asset_materialization_events()
    meta = {k: v.value for k, v in mat.materialization.metadata.items()}
    assert (meta["dagster/row_count"], meta["in_force"], meta["expired"]) == (2, 1, 1)
    assert "L-2" in meta["register"] and "expired" in meta["register"]
