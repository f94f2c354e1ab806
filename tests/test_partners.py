# ruff: noqa: E501  (an assertion with its Chinese text reads best on one line)
"""Receipts that teach (every rule says what it expected), the receipt workbook read back, the
partner's 24-month history, `check` writing the receipt files, and the template and contract
generated from schemas/ (template round trip, Frictionless validation)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import openpyxl
import pytest

from inservice.config import Limits
from inservice.ingest import ingest_paths
from inservice.schemas import codelists, messages
from inservice.schemas.contract import (
    CODES_SHEET,
    INSTRUCTIONS_SHEET,
    PACKAGE_NAME,
    TEMPLATE_NAME,
    XSD_NAME,
    file_fields,
    write_contract,
)
from inservice.schemas.fields import ATTENDANCE, COURSE, Kind
from inservice.schemas.filenames import FILE_EXTENSIONS
from tests.builders import attendee, course, make_id, write_xlsx
from tests.conftest import RECEIVED, drop, fixture_cases, load_expected, table_snapshot

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends
CASES = [c for c in fixture_cases() if "access" not in str(c)]
FIELDS = {(rt.name, f.code): f for rt in (COURSE, ATTENDANCE) for f in rt.fields}
PHONE, EMAIL = "02-7736-7890", "inservice-help@example.org"


def _with_contact(settings):
    return replace(settings, contact_phone=PHONE, contact_email=EMAIL)


def _ingest(settings, courses: list[dict], attendance: list[dict], name: str = "T001_201705.xlsx") -> dict:
    path = write_xlsx(settings.inbox / name[:4] / name, courses, attendance)
    [r] = ingest_paths([path], settings, RECEIVED)
    return r


# --- 1. every rule's message says what was expected ----------------------------------------------
def _expected_words(f: dict) -> list[str]:
    """What a finding's Chinese message must contain, by rule and field."""
    field = FIELDS.get((f["record"], f["field"]))
    words = [f"{field.label} {field.code}"] if field else []
    rule = f["rule"]
    if rule in ("C02", "A02"):
        words.append({Kind.DATE: "1060531", Kind.DATETIME: "HH:MM", Kind.NUMBER: "小數最多一位",
                      Kind.YESNO: "Y／N"}.get(field.kind) or messages.value_forms(field)[0])
    elif rule == "C03":
        words.append("代碼" if field.kind is Kind.CODE else "不在代碼表的項目：")
        codes = codelists.codelist(field.codelist)
        words += ([f"{c.code} {c.label}" for c in codes] if len(codes) <= messages.SHORT_LIST else ["傳報範本的代碼表"])
    elif rule in ("C06", "A07"):
        words.append("保留第 ")
    else:
        words += {"C01": ["此欄必填"], "A01": ["此欄必填"], "C04": ["研習迄日須同於或晚於研習起日", "研習起日 "],
                  "C05": ["大於 0 且不超過 999"], "C07": ["封存基準日 2012-12-31", "封存年度例外"],
                  "C08": ["修改已結案課程內容申請表"], "C09": ["收件日 2017-06-03"], "C10": ["請填結案日期"],
                  "A03": ["檢查碼"], "A04": ["本單位先前已傳報"], "A05": ["連同名單"],
                  "A06": ["完成＝是", "完成＝否：須為 0"], "A08": ["更正申請表"],
                  "W01": ["資料已載入"], "W02": ["資料已載入"], "W03": ["7 日內結案"], "W04": ["資料已載入"],
                  "W05": ["資料已載入"]}.get(rule, [])
    return words


@pytest.mark.slow
def test_every_fixture_finding_says_what_was_expected(settings) -> None:
    """Each fixture uploaded for real: every finding names its field by label and code and says
    what was expected for its rule; a kept row (C06/A07) is an earlier row of the same key."""
    seen: set[str] = set()
    for case in CASES:
        _, src = load_expected(case)
        [r] = ingest_paths([drop(settings, src)], settings, RECEIVED)
        by_row = {(f["record"], f["row"]): f for f in r["findings"]}
        for f in r["findings"]:
            seen.add(f["rule"])
            for word in _expected_words(f):
                assert word in f["message_zh"], (case.name, f)
            assert f["message_en"] and f["message_en"] != f["message_zh"]
            if f["rule"] in ("C06", "A07"):
                kept = int(re.search(r"保留第 (\d+) 列", f["message_zh"])[1])
                assert kept < f["row"] and f"row {kept} was kept" in f["message_en"]
                assert by_row.get((f["record"], kept), {}).get("rule") != f["rule"]  # the kept row is not itself repeated
            if f["rule"] == "C05" and "班別性質 1" in f["message_zh"]:
                days, cap = re.search(r"本課程 (\d+) 天，上限 (\d+) 小時", f["message_zh"]).groups()
                assert int(cap) == 12 * int(days)
    assert {"C01", "C02", "C03", "C04", "C05", "C07", "C10", "A01", "A02", "A03", "A04", "A05", "A06",
            "A07"} <= seen  # the fixtures exercise these (the precise cases below cover the rest)


def test_messages_state_forms_ranges_items_and_kept_rows(settings) -> None:
    ids = [make_id(__import__("random").Random(i)) for i in range(4)]
    courses = [
        course("C1", start_date="2017-05-10", end_date="2017-05-11", hours="25"),  # C05: 2 days → 24 h
        course("C2", start_date="2017/5/3"),  # C02 date
        course("C3", hours="3.25"),  # C02 number: one decimal at most
        course("C4", audience="E;Q"),  # C03 list: the bad item
        course("C5", organizer_type="9"),  # C03 short list: every code with its label
        course("C6", county_code="99999"),  # C03 long list: by reference
        course("C7"), course("C7"),  # C06: row 9 repeats row 8
        course("C8", closed_date="2017-06-10"),  # C09 after the day received
    ]
    attendance = [attendee("C7", ids[0]), attendee("C7", ids[0]), attendee("C7", ids[1], hours_granted="7"),
                  attendee("C7", ids[2], completed="N", hours_granted="2")]
    r = _ingest(settings, courses, attendance)
    got = {(f["rule"], f["course_code"], f["row"]): f for f in r["findings"]}
    c05 = got[("C05", "C1", 2)]
    assert "本課程 2 天，上限 24 小時" in c05["message_zh"] and "12 hours a day: 2 day(s), at most 24 hours" in c05["message_en"]
    c02 = got[("C02", "C2", 3)]
    assert "「2017/5/3」" in c02["message_zh"] and "106/05/31" in c02["message_zh"] and "ROC 106/05/31" in c02["message_en"]
    assert "one decimal at most" in got[("C02", "C3", 4)]["message_en"]
    assert "不在代碼表的項目：Q" in got[("C03", "C4", 5)]["message_zh"]
    assert "item(s) not in the list: Q" in got[("C03", "C4", 5)]["message_en"]
    short = got[("C03", "C5", 6)]["message_zh"]
    assert all(f"{c.code} {c.label}" in short for c in codelists.ORGANIZER_TYPES)
    assert "傳報範本的代碼表" in got[("C03", "C6", 7)]["message_zh"] and "63000 臺北市" not in got[("C03", "C6", 7)]["message_zh"]
    assert "保留第 8 列" in got[("C06", "C7", 9)]["message_zh"]
    assert "研習迄日 2017-05-10 與收件日 2017-06-03" in got[("C09", "C8", 10)]["message_zh"]
    a07 = got[("A07", "C7", 3)]
    assert "保留第 2 列" in a07["message_zh"] and ids[0] not in a07["message_zh"] and ids[0][:3] + "*****" in a07["message_zh"]
    a06 = [f for f in r["findings"] if f["rule"] == "A06"]
    assert {f["row"] for f in a06} == {4, 5} and all("不超過課程研習時數 6；完成＝否：須為 0" in f["message_zh"] for f in a06)


def test_whole_upload_refusals_say_what_to_do(settings) -> None:
    c, a = [course("C1")], [attendee("C1", make_id(__import__("random").Random(1)))]
    f02 = write_xlsx(settings.inbox / "T001" / "T001_201705.csv", c, a)
    f03 = write_xlsx(settings.inbox / "T001" / "T001-2017-05.xlsx", c, a)
    f04 = write_xlsx(settings.inbox / "T002" / "T001_201705.xlsx", c, a)
    f09 = write_xlsx(settings.inbox / "T001" / "T001_201704.xlsx", c, a)
    r02, r03, r04 = ingest_paths([f02, f03, f04], settings, RECEIVED)
    [r09] = ingest_paths([f09], replace(settings, limits=Limits(max_upload_bytes=100)), RECEIVED)
    assert r02["refusal"] == "F02" and " ".join(FILE_EXTENSIONS) in r02["findings"][0]["message_zh"]
    assert r03["refusal"] == "F03" and "T001_201705.xlsx" in r03["findings"][0]["message_zh"]
    m04 = r04["findings"][0]
    assert r04["refusal"] == "F04" and "T002" in m04["message_zh"] and "T001" in m04["message_zh"]
    assert "must be the sending unit's own" in m04["message_en"]
    assert r09["refusal"] == "F09" and "100" in r09["findings"][0]["message_en"] and "_2" in r09["findings"][0]["message_zh"]
    # the first sheet says what to do: resend under the same name
    assert any("T001_201704.xlsx" in s["zh"] and "同一檔名" in s["zh"] for s in r09["next_steps"])


# --- the receipt workbook, per fixture, read back -----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_receipt_workbook_read_back(case: Path, settings) -> None:
    exp, src = load_expected(case)
    s = _with_contact(settings)
    [r] = ingest_paths([drop(s, src)], s, RECEIVED)
    wb = openpyxl.load_workbook(r["receipt_files"][1])
    assert wb.sheetnames == ["摘要 Summary", "檢核結果 Findings", "歷程 History"]
    summary = {row[0]: row[1] for row in wb["摘要 Summary"].iter_rows(values_only=True) if row[0]}
    steps = [row[1] for row in wb["摘要 Summary"].iter_rows(values_only=True) if row[1] and "\n" in str(row[1])]
    stem, ext = exp["file"].rsplit(".", 1)
    errors = [f for f in r["findings"] if f["severity"] == "error"]
    rejected = r["courses"]["rejected"] + r["attendance"]["rejected"]
    assert summary["重傳檔名 File name to resend"] == (f"{stem}_2.{ext}" if rejected else "—")
    assert any("已載入" in s and "Loaded" in s for s in steps)
    if errors:
        assert any(f"{stem}_2.{ext}" in s and "accepted rows need not be sent again" in s for s in steps)
    assert PHONE in summary["聯絡窗口 Contact"] and EMAIL in summary["聯絡窗口 Contact"]
    rows = list(wb["檢核結果 Findings"].iter_rows(values_only=True))
    assert len(rows) == len(r["findings"]) + 1
    for row, f in zip(rows[1:], r["findings"], strict=True):
        field = FIELDS.get((f["record"], f["field"]))
        assert row[0] == f["row"] and row[3] == f["rule"] and row[6] == f["message_zh"] and row[7] == f["message_en"]
        assert row[2] == (f"{field.label} {field.code}" if field else f["field"])
    history = list(wb["歷程 History"].iter_rows(values_only=True))
    assert len(history) == 25 and history[1][0] == "2017-05" and history[-1][0] == "2015-06"
    assert history[1][1:3] == (1, 1) and history[1][5] == rejected
    by_rule: dict[str, int] = {}
    for f in errors:
        by_rule[f["rule"]] = by_rule.get(f["rule"], 0) + 1
    assert history[1][7] == ("、".join(f"{k}×{v}" for k, v in sorted(by_rule.items())) or "—")
    assert history[1][6] == "準時 on time" and all(h[6] == "未傳 missing" for h in history[2:])


def test_history_counts_months_uploads_refusals_and_lateness(settings) -> None:
    """Two months: April late with a refused file first; May on time. The history (receipt and
    asset metadata alike) shows both months, the refusal by rule and the lateness."""
    from inservice.partners import partner_history
    from inservice.warehouse.store import Warehouse

    ids = [make_id(__import__("random").Random(i)) for i in range(3)]
    bad = write_xlsx(settings.inbox / "T001" / "T001_201704.xlsx", [course("C1", unit_code="T002")],
                     [attendee("C1", ids[0])])
    ingest_paths([bad], settings, "2017-05-20T10:00:00+08:00")  # F04, late
    good = write_xlsx(settings.inbox / "T001" / "T001_201704_2.xlsx",
                      [course("C1", start_date="2017-04-10", end_date="2017-04-10", closed_date="2017-04-12"),
                       course("C2", start_date="2017-04-10", end_date="2017-04-10", closed_date="2017-04-12",
                              hours="0")], [attendee("C1", ids[1])])
    [late] = ingest_paths([good], settings, "2017-05-21T10:00:00+08:00")
    may = _ingest(settings, [course("C3")], [attendee("C3", ids[2])])
    with Warehouse(settings, read_only=True) as wh:
        history = {m.month: m for m in partner_history(wh.con, "T001", "2017-05")}
    apr, m5 = history["2017-04"], history["2017-05"]
    assert (apr.uploads, apr.loaded, apr.refused, apr.late, apr.on_time) == (2, 1, 1, 1, 0)
    assert apr.rules == {"C05": 1, "F04": 1} and apr.rows_rejected == 1 and apr.arrival == "逾期 late"
    assert (m5.uploads, m5.on_time, m5.rules) == (1, 1, {}) and history["2017-03"].arrival == "未傳 missing"
    # the receipt's own history counted the upload in before it committed: the same figures
    assert [h for h in may["history"] if h["month"] == "2017-04"][0]["rules"] == {"C05": 1, "F04": 1}
    assert [h for h in late["history"] if h["month"] == "2017-04"][0]["refused"] == 1


# --- 3. check writes the receipt files and touches no warehouse ----------------------------------
def _digest(settings) -> str | None:
    """The DuckDB file's bytes (PostgreSQL: the table snapshot alone tells)."""
    return hashlib.sha256(settings.warehouse_path.read_bytes()).hexdigest() if settings.warehouse is None else None


@pytest.mark.slow
def test_check_writes_the_receipt_files_and_no_warehouse(settings, tmp_path: Path) -> None:
    exp, src = load_expected(CASES[0])
    before, digest = table_snapshot(settings), _digest(settings)
    out = tmp_path / "receipts"
    out.mkdir()
    env = {**__import__("os").environ, "INSERVICE_HOME": str(settings.home)}
    plain = subprocess.run([sys.executable, "-m", "inservice.cli", "check", str(src), "--received-at", RECEIVED,
                            "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    json_file, xlsx_file = out / f"{src.name}.check.receipt.json", out / f"{src.name}.check.receipt.xlsx"
    assert f"receipt: {json_file}" in plain.stdout and xlsx_file.is_file()
    receipt = json.loads(json_file.read_text(encoding="utf-8"))
    assert receipt["status"] == "checked" and receipt["courses"]["accepted"] == exp["courses_accepted"]
    wb = openpyxl.load_workbook(xlsx_file)
    assert wb["摘要 Summary"]["B4"].value.startswith("自我檢核")
    assert len(list(wb["檢核結果 Findings"].iter_rows())) == len(receipt["findings"]) + 1
    assert table_snapshot(settings) == before and _digest(settings) == digest
    assert not settings.outbox.exists()
    # the same findings as the upload itself gives
    [loaded] = ingest_paths([drop(settings, src)], settings, RECEIVED)
    keys = lambda fs: [(f["record"], f["row"], f["rule"], f["message_zh"]) for f in fs]  # noqa: E731
    assert keys(receipt["findings"]) == keys(loaded["findings"])


# --- 2. the template and the contract --------------------------------------------------------------
def _range_values(wb: openpyxl.Workbook, formula: str) -> list[str]:
    sheet, cells = re.fullmatch(r"'(.+)'!(\$?\w+\$?\d+:\$?\w+\$?\d+)", formula.lstrip("=")).groups()
    return [c.value for row in wb[sheet][cells.replace("$", "")] for c in row]


def test_template_lists_equal_code_lists_and_a_typed_row_passes(tmp_path: Path, settings) -> None:
    files = write_contract(tmp_path / "contract")
    assert [f.name for f in files] == [TEMPLATE_NAME, PACKAGE_NAME, XSD_NAME]
    wb = openpyxl.load_workbook(files[0])
    assert wb.sheetnames == [INSTRUCTIONS_SHEET, "課程", "研習名單", CODES_SHEET]
    for rt in (COURSE, ATTENDANCE):
        ws = wb[rt.sheet_names[0]]
        headers = [c.value for c in ws[1]]
        assert headers == [f.label for f in file_fields(rt)]
        assert all(ws.cell(1, i + 1).comment is not None for i in range(len(headers)))
        lists = {}
        for dv in ws.data_validations.dataValidation:
            col = str(dv.sqref).split(":")[0].rstrip("0123456789")
            field = file_fields(rt)[openpyxl.utils.column_index_from_string(col) - 1]
            assert dv.prompt  # every column carries its input hint
            if dv.type == "list":
                lists[field.code] = (_range_values(wb, dv.formula1) if "!" in dv.formula1
                                     else dv.formula1.strip('"').split(","))
        for f in file_fields(rt):
            if f.kind is Kind.CODE:
                assert lists.pop(f.code) == [c.code for c in codelists.codelist(f.codelist)], f.code
            elif f.kind is Kind.YESNO:
                assert lists.pop(f.code) == ["是", "否"]
        assert not lists
    instructions = " ".join(str(c.value) for row in wb[INSTRUCTIONS_SHEET].iter_rows() for c in row if c.value)
    assert "1060531" in instructions and "研習時數" in instructions and "<單位代碼>_<YYYYMM>" in instructions
    # a row typed into the template with valid values passes every rule
    ids = make_id(__import__("random").Random(7))
    typed = {"課程": course("K001", tags="T1;T3", audience="國小;J"), "研習名單": attendee("K001", ids, completed="是")}
    for sheet, row in typed.items():
        ws = wb[sheet]
        for i, cell in enumerate(ws[1], start=1):
            code = next(f.code for f in file_fields(COURSE if sheet == "課程" else ATTENDANCE) if f.label == cell.value)
            ws.cell(2, i).value = row.get(code)
    upload = settings.inbox / "T001" / "T001_201705.xlsx"
    upload.parent.mkdir(parents=True)
    wb.save(upload)
    [r] = ingest_paths([upload], settings, RECEIVED)
    assert r["status"] == "loaded" and r["findings"] == [], r["findings"]
    assert (r["courses"]["accepted"], r["attendance"]["accepted"]) == (1, 1)


def _canonical_csvs(case: Path, out: Path) -> tuple[Path, Path]:
    """The fixture's accepted rows in the contract's canonical form (ISO dates, codes), as CSV."""
    import pyarrow.compute as pc

    from inservice.loaders import reader_for
    from inservice.loaders.excel import read_excel
    from inservice.validations.engine import Context, validate
    from inservice.validations.pseudonym import Pseudonymiser

    _, src = load_expected(case)
    raw = read_excel(src) if src.suffix in (".xlsx", ".xls") else reader_for(src.suffix)(src)
    v = validate(raw, Context(unit=src.parent.name, channel="file", received_on=date(2017, 6, 3),
                              pseudonymiser=Pseudonymiser(b"k" * 32)))
    paths = []
    for rt, typed, raw_table in ((COURSE, v.courses, raw.courses), (ATTENDANCE, v.attendance, raw.attendance)):
        ok = typed.filter(typed["_ok"])
        raw_ok = raw_table.filter(pc.is_in(raw_table["_row"], ok["_row"]))
        path = out / f"{rt.feed_table}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(rt.codes)
            for i in range(ok.num_rows):
                row = []
                for f in rt.fields:
                    if f.personal:
                        value = raw_ok[f.code][i].as_py().strip().upper() if f.kind is Kind.NATIONAL_ID \
                            else raw_ok[f.code][i].as_py().strip()
                    else:
                        value = ok[f.code][i].as_py()
                    row.append("" if value is None else str(value).lower() if isinstance(value, bool) else value)
                w.writerow(row)
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("clean-xlsx", "defects-xml")], ids=lambda c: c.name)
def test_table_schema_validates_fixture_rows_with_frictionless(case: Path, tmp_path: Path) -> None:
    frictionless = pytest.importorskip("frictionless")
    [package_file] = [p for p in write_contract(tmp_path) if p.name == PACKAGE_NAME]
    courses_csv, attendance_csv = _canonical_csvs(case, tmp_path)
    assert len(courses_csv.read_text(encoding="utf-8").splitlines()) > 2
    report = frictionless.Package(str(package_file)).validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])[:5]
    # not vacuous: a code outside its list, a date in ROC form and a repeated key are each caught
    lines = courses_csv.read_text(encoding="utf-8").splitlines()
    head, first = lines[0].split(","), next(csv.reader([lines[1]]))
    bad = dict(zip(head, first, strict=True)) | {"organizer_type": "9", "start_date": "106/05/31"}
    with courses_csv.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow([bad[c] for c in head])
    report = frictionless.Package(str(package_file)).validate()
    kinds = {e.type for task in report.tasks for e in task.errors}
    assert not report.valid and {"constraint-error", "type-error", "primary-key"} <= kinds, kinds


def test_cli_template_writes_the_three_files(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "inservice.cli", "--home", str(tmp_path / "h"), "template", "--out",
                          str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted([TEMPLATE_NAME, PACKAGE_NAME, XSD_NAME])
    package = json.loads((tmp_path / "c" / PACKAGE_NAME).read_text(encoding="utf-8"))
    assert [r["name"] for r in package["resources"]] == ["inservice_courses", "inservice_attendance"]
    assert not (tmp_path / "h").exists()  # no warehouse, no home
