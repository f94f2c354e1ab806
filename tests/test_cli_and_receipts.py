"""The register and exception commands, what a unit reads in its receipt workbook, and receipts that
survive a crash, an unwritable outbox, a busy warehouse and a concurrent sender."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openpyxl import load_workbook

from inservice import receipts
from inservice.ingest import ingest_paths
from inservice.warehouse.store import Warehouse
from tests.builders import course, write_xlsx
from tests.conftest import FIXTURES, RECEIVED, drop, load_expected

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "INSERVICE_HOME": str(home)}, timeout=300)


def test_help_loads_no_library_and_a_command_only_its_own_module(tmp_path: Path) -> None:
    """`inservice --help` starts without the heavy libraries; a command imports the module declaring it, not
    the others' (feeds' SQLAlchemy dialects are not loaded to list the units)."""
    probe = ("import sys; from inservice.cli import main\n"
             "code = main(sys.argv[1:])\n"
             "heavy = ('dagster', 'duckdb', 'pyarrow', 'openpyxl', 'sqlalchemy', 'pandas', 'numpy', 'lxml')\n"
             "print(code, sorted(m for m in heavy if m in sys.modules), 'inservice.feeds.core' in sys.modules,\n"
             "      'inservice.publish.cli' in sys.modules, file=sys.stderr)\n")
    env = {**os.environ, "INSERVICE_HOME": str(tmp_path / "home")}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env,
                              timeout=120)
        return done.stderr.strip().splitlines()[-1]

    assert run("--help") == "0 [] False False"
    assert run("stats", "--help") == "0 [] False True"  # its module; its work imports the rest when it runs
    code, *_, feeds, publish = run("units", "list").split()
    assert (code, feeds, publish) == ("0", "False", "False")


@pytest.mark.slow
def test_units_and_exceptions_commands(home: Path) -> None:
    assert cli(home, "units", "add", "T001", "--name", "國立臺灣師範大學", "--channel", "file", "--state",
               "production", "--joined", "2017-01-01").returncode == 0
    assert cli(home, "units", "add", "C63000", "--name", "臺北市政府教育局", "--channel", "db", "--state", "testing",
               "--joined", "2017-03-01", "--county", "63000").returncode == 0
    listing = cli(home, "units", "list").stdout.splitlines()
    assert listing == ["C63000\t臺北市政府教育局\tdb\ttesting\t2017-03-01\t63000",
                       "T001\t國立臺灣師範大學\tfile\tproduction\t2017-01-01\t"]
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
    assert wb.sheetnames == ["摘要 Summary", "檢核結果 Findings", "歷程 History"]  # history: tests/test_partners.py
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


# --- receipts that survive a crash, an unwritable outbox and a concurrent sender -------------------
def run(settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`inservice …` as its own process, on this test's home and warehouse (environment inherited)."""
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "INSERVICE_HOME": str(settings.home), **env}, timeout=300)


def receipt_files(settings, unit: str = "T001") -> list[Path]:
    folder = settings.outbox / unit
    return sorted(folder.glob("*.receipt.json")) if folder.is_dir() else []


def uploads(settings) -> list[tuple]:
    with Warehouse(settings, read_only=True) as wh:
        return wh.con.execute("""SELECT upload_id, unit_code, status, refusal, data_month, area FROM uploads
                                 ORDER BY processed_at""").fetchall()


@pytest.mark.slow
def test_killed_between_commit_and_receipt_a_resend_restores_the_receipt(settings) -> None:
    """SIGKILL after the commit, before the receipt is renamed into place: the rows are in, no
    receipt. The re-send is F08 and writes the original receipt again, byte for byte what was meant."""
    exp, src = load_expected(FIXTURES / "defects-xlsx")
    path = drop(settings, src)
    killed = run(settings, "ingest", str(path), "--received-at", RECEIVED, "--json",
                 INSERVICE_FAILPOINT="ingest.after_commit")
    assert killed.returncode == -9
    assert receipt_files(settings, "T003") == []  # only the staged temporary files are there
    assert [r[2] for r in uploads(settings)] == ["loaded"]
    again = run(settings, "ingest", str(path), "--received-at", "2017-06-04T09:00:00+08:00", "--json")
    assert again.returncode == 0, again.stderr
    dup = json.loads(again.stdout)
    assert (dup["status"], dup["refusal"]) == ("duplicate", "F08")
    [original] = [p for p in receipt_files(settings, "T003") if ".20170603T100000." in p.name]
    assert dup["restored_receipt"] == [original.name, original.with_suffix(".xlsx").name]
    assert "written again" in dup["findings"][0]["message_en"] and original.name in dup["findings"][0]["message_en"]
    restored = json.loads(original.read_text(encoding="utf-8"))
    assert restored["status"] == "loaded" and restored["upload_id"] == uploads(settings)[0][0]
    assert restored["attendance"]["accepted"] == exp["attendance_accepted"]
    assert {(f["row"], f["rule"]) for f in restored["findings"]} == {(f["row"], f["rule"]) for f in exp["findings"]}
    wb = load_workbook(original.with_suffix(".xlsx"), read_only=True)
    assert len(list(wb["檢核結果 Findings"].iter_rows())) == len(exp["findings"]) + 1
    assert len(receipt_files(settings, "T003")) == 2  # the restored one and the duplicate's own
    # a third send: the receipt is there now, nothing is written again
    third = json.loads(run(settings, "ingest", str(path), "--json").stdout)
    assert third["status"] == "duplicate" and "restored_receipt" not in third


def test_an_unwritable_outbox_commits_reports_and_a_resend_restores(settings) -> None:
    """outbox/T001 is a file (root ignores permission bits): the load commits, the command says the
    receipt was not written and exits 75; once the outbox is fixed, the re-send restores the receipt."""
    path = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1")], [])
    settings.outbox.mkdir(parents=True)
    (settings.outbox / "T001").write_text("not a folder")
    out = run(settings, "ingest", str(path), "--received-at", RECEIVED)
    assert out.returncode == 75, out.stderr
    assert "Traceback" not in out.stderr and "receipt not written" in out.stderr
    assert "send the file again" in out.stderr
    assert [r[2] for r in uploads(settings)] == ["loaded"]
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM courses").fetchone()[0] == 1
    [r] = ingest_paths([path], settings, "2017-06-04T09:00:00+08:00")  # still unwritable: no crash either
    assert r["status"] == "duplicate" and "receipt_error" in r
    (settings.outbox / "T001").unlink()
    [r] = ingest_paths([path], settings, "2017-06-05T09:00:00+08:00")
    assert r["status"] == "duplicate" and "receipt_error" not in r
    [original] = [p for p in receipt_files(settings) if ".20170603T100000." in p.name]
    assert json.loads(original.read_text(encoding="utf-8"))["status"] == "loaded"
    assert original.with_suffix(".xlsx").stat().st_size
    assert not list(settings.outbox.rglob("*.tmp"))


@pytest.mark.slow
def test_the_same_file_sent_twice_at_the_same_moment_loads_once(settings, tmp_path: Path) -> None:
    """Two real processes released together by a barrier file: one loads, the other is F08 with a
    receipt of its own; one `loaded` row; no finding doubled. (DuckDB: the second waits for the file.)"""
    exp, src = load_expected(FIXTURES / "defects-xlsx")
    path = drop(settings, src)
    go = tmp_path / "go"
    code = ("import os, sys, time; from inservice.cli import main\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.002)\n"
            "sys.exit(main(['ingest', sys.argv[2], '--received-at', sys.argv[3], '--json']))")
    env = {**os.environ, "INSERVICE_HOME": str(settings.home)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(go), str(path), RECEIVED], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(3)  # both imported and waiting
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    got = sorted((json.loads(o[0]) for o in outs), key=lambda r: r["status"])
    assert [r["status"] for r in got] == ["duplicate", "loaded"]
    dup, loaded = got
    assert dup["refusal"] == "F08" and loaded["upload_id"] in dup["findings"][0]["message_en"]
    assert dup["upload_id"] != loaded["upload_id"]
    assert dup["receipt_files"][0] != loaded["receipt_files"][0]
    assert json.loads(Path(loaded["receipt_files"][0]).read_text(encoding="utf-8"))["status"] == "loaded"
    assert json.loads(Path(dup["receipt_files"][0]).read_text(encoding="utf-8"))["status"] == "duplicate"
    rows = uploads(settings)
    assert sorted(r[2] for r in rows) == ["duplicate", "loaded"] and len({r[0] for r in rows}) == 2
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM findings WHERE upload_id = ?",
                              [loaded["upload_id"]]).fetchone()[0] == len(exp["findings"])
        assert wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] == exp["attendance_accepted"]


def test_stale_staged_receipts_are_swept(settings) -> None:
    """A killed run's `.…receipt.json.…tmp` older than an hour goes at the next ingest into that
    outbox; a fresh one (a run staging now) and anything else stay."""
    folder = settings.outbox / "T001"
    folder.mkdir(parents=True)
    old = [folder / ".T001_201705.xlsx.20170603T100000.receipt.json.abc123.tmp",
           folder / ".T001_201705.xlsx.20170603T100000.receipt.xlsx.def456.tmp"]
    fresh = folder / ".T001_201706.xlsx.20170603T100000.receipt.json.xyz789.tmp"
    other = folder / "notes.tmp"
    for p in [*old, fresh, other]:
        p.write_text("x")
    for p in [*old, other]:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    path = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1")], [])
    [r] = ingest_paths([path], settings, RECEIVED)
    assert r["status"] == "loaded"
    assert not any(p.exists() for p in old)
    assert fresh.exists() and other.exists()


@pytest.mark.slow
def test_a_busy_duckdb_warehouse_is_waited_for_then_exit_75(settings, warehouse_backend: str) -> None:
    """A second process on the DuckDB file (an ingest, `stats`, …) waits up to INSERVICE_LOCK_TIMEOUT,
    then one line and exit 75; the file stays in the inbox, no receipt. Released, it proceeds."""
    if warehouse_backend != "duckdb":
        pytest.skip("PostgreSQL serves many sessions; writers queue on the advisory lock")
    path = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1")], [])
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); sys.stdin.read()", str(settings.warehouse_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        busy = run(settings, "ingest", str(path), "--received-at", RECEIVED, INSERVICE_LOCK_TIMEOUT="2")
        waited = time.monotonic() - started
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert busy.returncode == 75, busy.stderr
    assert busy.stderr.count("\n") == 1 and "warehouse busy" in busy.stderr and "retry" in busy.stderr
    assert "Traceback" not in busy.stderr and waited >= 2
    assert path.exists() and receipt_files(settings) == []
    ok = run(settings, "ingest", str(path), "--received-at", RECEIVED, "--json", INSERVICE_LOCK_TIMEOUT="2")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "loaded"


@pytest.mark.slow
def test_a_writer_released_within_the_timeout_is_waited_for(settings, warehouse_backend: str) -> None:
    if warehouse_backend != "duckdb":
        pytest.skip("DuckDB's file lock")
    path = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1")], [])
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(2)", str(settings.warehouse_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    ok = run(settings, "ingest", str(path), "--received-at", RECEIVED, "--json", INSERVICE_LOCK_TIMEOUT="60")
    holder.wait(timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "loaded"


def test_the_month_overview_per_unit(settings) -> None:
    """Staff's month at a glance (Dagster's upload_overview), on both backends: loaded, refused with
    its rule, missing once the 5th has passed, and a folder that is no registered unit."""
    from datetime import datetime

    from inservice.config import TAIPEI
    from inservice.overview import month_overview

    sample = Path(__file__).resolve().parents[1] / "inservice" / "sample_inbox"
    good = drop(settings, sample / "T002" / "T002_201705.xlsx")
    bad = settings.inbox / "T001" / "T001_201705.xlsx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a workbook")
    stray = settings.inbox / "T009" / "T009_201705.xlsx"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(good.read_bytes())
    ingest_paths([good, bad, stray], settings, RECEIVED)
    with Warehouse(settings, read_only=True) as wh:
        after = {r.unit_code: r for r in month_overview(wh.con, "2017-05", datetime(2017, 6, 10, tzinfo=TAIPEI))}
        before = {r.unit_code: r.status for r in month_overview(wh.con, "2017-05",
                                                                 datetime(2017, 6, 4, tzinfo=TAIPEI))}
    assert (after["T002"].loaded, after["T002"].status) == (1, "已載入")
    assert (after["T001"].refused, after["T001"].rules, after["T001"].status) == (1, "F01", "僅退件（F01），逾期未補")
    assert after["T003"].status == "未傳（逾期）" and before["T003"] == "尚未到期"
    assert after["T009"].state is None and after["T009"].status == "未登錄單位（F05）"
