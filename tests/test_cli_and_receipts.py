"""The register and exception commands, and what a unit reads in its receipt workbook."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook

from inservice import receipts
from inservice.ingest import ingest_paths
from tests.conftest import FIXTURES, RECEIVED, drop, load_expected


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "INSERVICE_HOME": str(home)}, timeout=300)


def test_units_and_exceptions_commands(home: Path) -> None:
    assert cli(home, "units", "add", "T001", "--name", "國立臺灣師範大學", "--channel", "file", "--state",
               "production", "--joined", "2017-01-01").returncode == 0
    assert cli(home, "units", "add", "C63000", "--name", "臺北市政府教育局", "--channel", "db", "--state", "testing",
               "--joined", "2017-03-01").returncode == 0
    listing = cli(home, "units", "list").stdout.splitlines()
    assert listing == ["C63000\t臺北市政府教育局\tdb\ttesting\t2017-03-01",
                       "T001\t國立臺灣師範大學\tfile\tproduction\t2017-01-01"]
    bad = cli(home, "units", "add", "T002", "--name", "x", "--channel", "fax", "--state", "production",
              "--joined", "2017-01-01")
    assert bad.returncode == 1 and "fax" in bad.stderr
    assert cli(home, "exceptions", "add", "T001", "--letter", "臺教師(三)字第1號", "--letter-date", "2017-03-01",
               "--valid-until", "2017-12-31").returncode == 0
    assert cli(home, "exceptions", "add", "T001", "--course", "A1010101", "--letter", "第2號", "--letter-date",
               "2017-03-02", "--valid-until", "2018-12-31").returncode == 0
    rows = [r.split("\t") for r in cli(home, "exceptions", "list").stdout.splitlines()]
    assert rows == [["1", "T001", "all", "臺教師(三)字第1號", "2017-03-01", "2017-12-31"],
                    ["2", "T001", "A1010101", "第2號", "2017-03-02", "2018-12-31"]]
    assert cli(home, "exceptions", "remove", "1").returncode == 0
    assert cli(home, "exceptions", "remove", "1").returncode == 1
    assert len(cli(home, "exceptions", "list").stdout.splitlines()) == 1


def test_receipt_workbook_lists_every_finding(settings) -> None:
    exp, src = load_expected(FIXTURES / "defects-xls")
    [r] = ingest_paths([drop(settings, src)], settings, RECEIVED)
    json_path, xlsx_path = map(Path, r["receipt_files"])
    assert json.loads(json_path.read_text(encoding="utf-8"))["findings"] == r["findings"]
    wb = load_workbook(xlsx_path, read_only=True)
    assert wb.sheetnames == ["摘要 Summary", "檢核結果 Findings"]
    summary = {row[0]: row[1] for row in wb["摘要 Summary"].iter_rows(values_only=True)}
    assert summary["檔名 File"] == "T003_201705.xls" and summary["狀態 Status"].startswith("已載入")
    assert summary["研習名單 收件/通過/退件 attendance"].split(" / ")[1] == str(exp["attendance_accepted"])
    rows = list(wb["檢核結果 Findings"].iter_rows(values_only=True))
    assert [h.split(" ")[0] for h in rows[0][:4]] == ["列", "資料", "欄位", "規則"]
    assert rows[0][6].startswith("說明")
    body = rows[1:]
    assert len(body) == len(exp["findings"])
    assert {(row[0], row[3]) for row in body} == {(f["row"], f["rule"]) for f in exp["findings"]}
    assert all(row[6] and row[7] for row in body)  # Chinese and English message on every row


def test_receipt_workbook_rows_spliced_in_read_as_openpyxl_writes_them(tmp_path: Path) -> None:
    """The findings rows written without openpyxl's cells read back exactly as openpyxl's own:
    values, types, styles, widths, frozen header — and values it treats specially take its way."""
    rng = random.Random(7)
    texts = ["研習", "A12*****89", " lead", "trail ", "a&b", "<x>", '"q"', "{b}", "tab\there", "new\nline"]
    special = ["", "=1+1", "#N/A", "cr\r"]

    def finding(i: int, pool: list[str]) -> dict:
        msg = "".join(rng.choice(pool) for _ in range(rng.randrange(1, 4)))
        return {"row": rng.choice([None, i]), "record": rng.choice(["course", "attendance", "file"]),
                "field": rng.choice([None, "course_code"]), "rule": "A07", "severity": rng.choice(["error", "warning"]),
                "course_code": rng.choice([None, "C1", "{C}"]), "message_zh": msg, "message_en": msg + " en"}

    def read(path: Path) -> list:
        wb = load_workbook(path)
        out = []
        for ws in wb.worksheets:
            out.append((ws.title, ws.freeze_panes, {k: d.width for k, d in ws.column_dimensions.items()}))
            out += [[(c.coordinate, c.value, c.data_type, c.font.b) for c in row] for row in ws.iter_rows()]
        return out

    for pool in (texts, texts + special):
        receipt = {"file": "T001_201705.xlsx", "unit": "T001", "month": "2017-05", "status": "loaded", "refusal": None,
                   "received_at": "2017-06-03T10:00:00+08:00", "on_time": True, "area": "production", "upload_id": "u",
                   "courses": {"received": 1, "accepted": 1, "rejected": 0},
                   "attendance": {"received": 300, "accepted": 290, "rejected": 10},
                   "findings": [finding(i, pool) for i in range(300)]}
        receipts._workbook(receipt).save(tmp_path / "openpyxl.xlsx")
        receipts._save_upload_workbook(receipt, tmp_path / "spliced.xlsx")
        assert read(tmp_path / "spliced.xlsx") == read(tmp_path / "openpyxl.xlsx")


def test_demo_leaves_nothing_already_handled_in_the_inbox(home: Path, capsys: pytest.CaptureFixture) -> None:
    from inservice.cli import main

    assert main(["--home", str(home), "demo"]) == 0
    assert [p for p in (home / "inbox").rglob("*") if p.is_file()] == []
    archived = sorted(p.name for p in (home / "archive").rglob("*") if p.is_file())
    assert archived == ["T001_201705.xml", "T002_201705.xlsx", "T003_201705.xlsx"]
    assert main(["--home", str(home), "demo"]) == 0  # again: every file a duplicate, and archived too
    assert [p for p in (home / "inbox").rglob("*") if p.is_file()] == []
    assert "duplicate F08" in capsys.readouterr().out
