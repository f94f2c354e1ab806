"""All-or-nothing loads (the process killed mid-load) and personal data never stored or shown raw."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from openpyxl import load_workbook

from inservice.ingest import ingest_paths
from inservice.warehouse.store import Warehouse
from tests.builders import teacher_plan, write_plan_csv
from tests.conftest import FIXTURES, RECEIVED, drop, fixture_cases, load_expected, table_snapshot

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

ID_SHAPE = re.compile(r"[A-Z][12890A-D][0-9]{8}")


def run_cli(settings, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "INSERVICE_HOME": str(settings.home)}
    if failpoint:
        env["INSERVICE_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["merge.after_courses", "merge.before_commit"])
def test_killed_mid_load_leaves_nothing_and_rerun_loads_whole(settings, failpoint: str) -> None:
    exp, src = load_expected(FIXTURES / "defects-xlsx")
    path = drop(settings, src)
    before = table_snapshot(settings)
    killed = run_cli(settings, "ingest", str(path), "--received-at", RECEIVED, "--json", failpoint=failpoint)
    assert killed.returncode == -9  # SIGKILL inside the open transaction
    assert table_snapshot(settings) == before  # the warehouse has none of that upload
    ok = run_cli(settings, "ingest", str(path), "--received-at", RECEIVED, "--json")
    assert ok.returncode == 0, ok.stderr
    receipt = json.loads(ok.stdout)
    assert receipt["status"] == "loaded"
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM courses").fetchone()[0] == exp["courses_accepted"]
        assert wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] == exp["attendance_accepted"]
        assert wh.con.execute("SELECT count(*) FROM uploads").fetchone()[0] == 1


# Runs of characters a raw ID or a name is made of: a needle made only of such characters can only
# occur inside a maximal run of them.
_RUNS = (re.compile(r"[0-9A-Za-z\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]+"),
         re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+"))


def occurring(needles: set[str], text: str) -> set[str]:
    """`{n for n in needles if n in text}` in one pass over the text instead of one per needle (7,000
    IDs and names over megabytes of receipts took 30 s): the text's runs' substrings of the needles'
    lengths are looked up in a set; a needle of other characters is searched plainly."""
    left, found = set(needles), set()
    for run in _RUNS:
        mine = {n for n in left if run.fullmatch(n)}
        lengths = {len(n) for n in mine}
        runs = set(run.findall(text))
        found |= mine & {r[k:k + n] for r in runs for n in lengths for k in range(len(r) - n + 1)}
        left -= mine
    return found | {n for n in left if n in text}


def _source_ids_and_names(settings) -> tuple[set[str], set[str]]:
    ids, names = set(), set()
    from inservice.loaders import reader_for

    for case in fixture_cases():
        if "access" in str(case):
            continue
        _, src = load_expected(case)
        raw = reader_for(src.suffix.lower())(src)
        ids |= {v.strip().upper() for v in raw.attendance["national_id"].to_pylist() if v and v.strip()}
        names |= {v.strip() for v in raw.attendance["name"].to_pylist() if v and v.strip()}
    return ids, names


@pytest.mark.slow
def test_no_raw_id_or_name_in_any_table_receipt_or_output(settings) -> None:
    paths = [drop(settings, load_expected(c)[1]) for c in fixture_cases() if "access" not in str(c)]
    out = run_cli(settings, "ingest", *map(str, paths), "--received-at", RECEIVED, "--json")
    assert out.returncode == 0, out.stderr
    ids, names = _source_ids_and_names(settings)
    assert len(ids) > 1000 and len(names) > 100
    # the planning survey: the same teachers' plans (and an invalid ID), loaded and published
    with Warehouse(settings) as wh:
        wh.add_unit("PLAN", "plans", "file", "production", date(2016, 1, 1))
    some = sorted(i for i in ids if ID_SHAPE.fullmatch(i))[:200]
    plans = [teacher_plan(i, "423605", d, school_year="105") for i in some for d in "AB"]
    plans.append(teacher_plan(some[0][:-1] + str((int(some[0][-1]) + 1) % 10), "423605", "C", school_year="105"))
    plan_file = write_plan_csv(settings.inbox / "PLAN" / "PLAN_105_teacher.csv", plans)
    plan_out = run_cli(settings, "ingest", str(plan_file), "--received-at", RECEIVED, "--json")
    stats = run_cli(settings, "plans", "stats", "--school-year", "105", "--json")
    assert plan_out.returncode == 0 and stats.returncode == 0, plan_out.stderr + stats.stderr
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM teacher_plans").fetchone()[0] > 300
        assert wh.con.execute("SELECT count(*) FROM stat_plan_fulfilment").fetchone()[0] > 0
    with Warehouse(settings, read_only=True) as wh:
        text_cols = wh.con.execute("""SELECT table_schema, table_name, column_name FROM information_schema.columns
                                      WHERE data_type = 'VARCHAR'""").fetchall()
        values: set[str] = set()
        for schema, table, column in text_cols:
            values |= {v for (v,) in wh.con.execute(f'SELECT DISTINCT "{column}" FROM {schema}.{table}').fetchall()
                       if v is not None}
    stored = " ".join(values)
    assert not ID_SHAPE.search(stored), ID_SHAPE.search(stored)
    assert not any(n in values for n in names)
    assert not occurring(ids, stored)
    # receipts (JSON and Excel), the commands' own output, the publications and the log
    texts = [out.stdout, out.stderr, plan_out.stdout, plan_out.stderr, stats.stdout, stats.stderr]
    texts += [f.read_text(encoding="utf-8") for f in (settings.home / "publish").rglob("*.html")]
    for book in (settings.home / "publish").rglob("*.xlsx"):
        wb = load_workbook(book, read_only=True)
        texts += [" ".join(str(c) for row in ws.iter_rows(values_only=True) for c in row if c is not None)
                  for ws in wb.worksheets]
    log = settings.home / "logs" / "inservice.log"
    texts.append(log.read_text(encoding="utf-8") if log.exists() else "")
    for receipt in (settings.outbox).rglob("*.receipt.json"):
        texts.append(receipt.read_text(encoding="utf-8"))
    for book in (settings.outbox).rglob("*.receipt.xlsx"):
        wb = load_workbook(book, read_only=True)
        texts += [" ".join(str(c) for row in ws.iter_rows(values_only=True) for c in row if c is not None)
                  for ws in wb.worksheets]
    blob = "\n".join(texts)
    assert not occurring(ids, blob)
    assert not occurring({n for n in names if len(n) >= 2}, blob)
    assert re.search(r"[A-Z][0-9A-Z]{2}\*{5}[0-9]{2}", blob)  # masked IDs do appear (A03 findings)


def test_pseudonym_key_is_generated_once_with_mode_0600(settings) -> None:
    path = drop(settings, FIXTURES / "clean-xlsx" / "T002" / "T002_201705.xlsx")
    ingest_paths([path], settings, RECEIVED)
    key = settings.home / "pseudonym.key"
    assert key.stat().st_mode & 0o777 == 0o600
    first = key.read_text()
    with Warehouse(settings, read_only=True) as wh:
        keys = {k for (k,) in wh.con.execute("SELECT teacher_key FROM attendance").fetchall()}
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    from inservice.validations.pseudonym import load_key

    assert load_key(settings.home).decode() == first


@pytest.mark.slow
def test_json_cli_contract(settings) -> None:
    path = drop(settings, FIXTURES / "defects-xml" / "T001" / "T001_201705.xml")
    out = run_cli(settings, "ingest", str(path), "--received-at", "2017-06-06T00:00:00+08:00", "--json")
    assert out.returncode == 0
    [line] = out.stdout.strip().splitlines()
    r = json.loads(line)
    assert list(r)[:10] == ["file", "unit", "month", "status", "refusal", "received_at", "on_time", "courses",
                            "attendance", "findings"]
    assert (r["file"], r["unit"], r["month"], r["on_time"]) == ("T001_201705.xml", "T001", "2017-05", False)
    assert set(r["findings"][0]) >= {"record", "row", "field", "rule", "severity", "course_code", "message_zh",
                                     "message_en"}
    assert run_cli(settings, "ingest").returncode == 1  # usage error
    assert run_cli(settings, "frobnicate").returncode == 1


def test_check_loads_nothing(settings, tmp_path: Path) -> None:
    path = drop(settings, FIXTURES / "defects-xlsx" / "T003" / "T003_201705.xlsx")
    before = table_snapshot(settings)
    out = run_cli(settings, "check", str(path), "--received-at", RECEIVED, "--json", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    exp, _ = load_expected(FIXTURES / "defects-xlsx")
    assert r["status"] == "checked" and r["courses"]["accepted"] == exp["courses_accepted"]
    assert table_snapshot(settings) == before
    assert not settings.outbox.exists()


def test_check_without_a_warehouse(tmp_path: Path, monkeypatch) -> None:
    """A unit's self-check on its own machine: no register, no warehouse, the same row findings."""
    monkeypatch.setenv("INSERVICE_HOME", str(tmp_path / "nohome"))
    exp, src = load_expected(FIXTURES / "defects-xml-big5")
    env = {**os.environ, "INSERVICE_HOME": str(tmp_path / "nohome")}
    out = subprocess.run([sys.executable, "-m", "inservice.cli", "check", str(src), "--received-at", RECEIVED,
                          "--json", "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    r = json.loads(out.stdout)
    assert r["attendance"]["accepted"] == exp["attendance_accepted"]
    assert not (tmp_path / "nohome").exists()  # nothing written on the unit's machine


def _refusals(settings) -> dict[str, Path]:
    """One upload per whole-upload refusal a partner can provoke, F01 in each format."""
    import random as _random
    from datetime import date

    from tests.builders import attendee, course, make_id, write_xlsx, write_xml

    rng = _random.Random(5)
    good_c, good_a = [course("C1")], [attendee("C1", make_id(rng))]
    inbox = settings.inbox / "T001"
    inbox.mkdir(parents=True)
    with Warehouse(settings) as wh:
        wh.add_unit("T004", "sealed", "file", "sealed", date(2013, 1, 1))
    out = {"F01 xlsx": inbox / "T001_201701.xlsx", "F01 xls": inbox / "T001_201702.xls",
           "F01 empty": inbox / "T001_201703.xlsx", "F01 xml cut": inbox / "T001_201704.xml",
           "F01 xml syntax": inbox / "T001_201705.xml", "F01 mdb": inbox / "T001_201706.mdb",
           "F01 accdb": inbox / "T001_201601.accdb", "F01 folder": inbox / "T001_201602.xlsx",
           "F02": inbox / "T001_201603.csv"}
    out["F01 xlsx"].write_bytes(b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(5000)))
    out["F01 xls"].write_bytes(b"\xd0\xcf\x11\xe0" + b"not an excel file at all" * 20)
    out["F01 empty"].write_bytes(b"")
    full = write_xml(settings.home / "full.xml", good_c * 5, good_a * 5).read_bytes()
    out["F01 xml cut"].write_bytes(full[: len(full) // 2])
    out["F01 xml syntax"].write_bytes(full.replace(b"</title>", b"</titel>", 1))
    mdb = bytearray((FIXTURES / "access" / "edge" / "small_V2003.mdb").read_bytes())
    for i in range(4096, len(mdb), 7):
        mdb[i] = rng.randrange(256)
    out["F01 mdb"].write_bytes(bytes(mdb))
    out["F01 accdb"].write_bytes((FIXTURES / "access" / "edge" / "small_V2010.accdb").read_bytes()[:5000])
    out["F01 folder"].mkdir()
    out["F02"].write_text("a,b\n")
    out["F03"] = write_xlsx(inbox / "T001_2017.xlsx", good_c, good_a)
    out["F04"] = write_xlsx(settings.inbox / "T002" / "T001_201607.xlsx", good_c, good_a)
    out["F05"] = write_xlsx(settings.inbox / "T009" / "T009_201608.xlsx", good_c, good_a)
    out["F06"] = write_xlsx(settings.inbox / "T004" / "T004_201609.xlsx", good_c, good_a)
    out["F07"] = write_xlsx(inbox / "T001_201610.xlsx", good_c, good_a, sheet_names=("課程", "名單"))
    out["F09"] = write_xml(inbox / "T001_201611.xml", good_c, good_a,
                           prolog='<!DOCTYPE x [<!ENTITY a "aaaa">]>')
    return out


def test_no_server_path_in_any_refusal_and_f01_in_plain_words(settings, caplog: pytest.LogCaptureFixture) -> None:
    """Partners read what is wrong and what to do; the reader library's words and any server path
    go to the log only. Nothing under the home (nor /tmp) appears in a receipt or a finding."""
    sent = _refusals(settings)
    with caplog.at_level("WARNING", logger="inservice.ingest"):
        receipts = {k: r for k, r in zip(sent, ingest_paths(list(sent.values()), settings, RECEIVED), strict=True)}
    for kind, r in receipts.items():
        assert r["status"] == "refused" and r["refusal"] == kind.split()[0], (kind, r["findings"])
    assert receipts["F01 xlsx"]["findings"][0]["message_zh"].endswith(
        "檔案不是有效的 Excel 活頁簿（可能損毀或未完整上傳），請重新匯出後再傳")
    assert "export it again and resend" in receipts["F01 xls"]["findings"][0]["message_en"]
    assert "(line " in receipts["F01 xml syntax"]["findings"][0]["message_en"]
    assert "Access database" in receipts["F01 accdb"]["findings"][0]["message_en"]
    for kind in ("F01 xlsx", "F01 xls", "F01 mdb"):
        text = receipts[kind]["findings"][0]["message_en"]
        assert not re.search(r"calamine|Xlsx error|Zip error|mdb_|MSysObjects|Traceback", text), (kind, text)
    logged = caplog.text
    assert "T001_201701.xlsx" in logged and "T001_201706.mdb" in logged  # the detail, for staff
    assert re.search(r"(?i)zip|xlsx|calamine", logged) and "MSysObjects" in logged
    texts = []
    for path in settings.outbox.rglob("*.receipt.json"):
        texts.append(path.read_text(encoding="utf-8"))
    for book in settings.outbox.rglob("*.receipt.xlsx"):
        wb = load_workbook(book, read_only=True)
        texts += [" ".join(str(c) for row in ws.iter_rows(values_only=True) for c in row if c is not None)
                  for ws in wb.worksheets]
    with Warehouse(settings, read_only=True) as wh:
        texts += [f"{zh} {en}" for zh, en in wh.con.execute("SELECT message_zh, message_en FROM findings").fetchall()]
        assert wh.con.execute("SELECT count(*) FROM uploads").fetchone()[0] == len(sent)
    assert len(texts) >= 3 * len(sent)
    for text in texts:
        assert str(settings.home) not in text and "/tmp" not in text, text[:500]


# --- the pseudonym key -------------------------------------------------------------------------------
CLEAN = FIXTURES / "clean-xlsx" / "T002" / "T002_201705.xlsx"


def _refused_by_key(settings, out: subprocess.CompletedProcess, path: Path, before: dict, words: str) -> None:
    """A key refusal: one line naming the fix, exit 78, the file left in the inbox, nothing written."""
    assert out.returncode == 78, (out.returncode, out.stderr)
    [line] = out.stderr.strip().splitlines()
    assert words in line and "INSERVICE_PSEUDONYM_KEY" in line and "Traceback" not in out.stderr
    assert out.stdout == ""
    assert path.exists()  # a configuration error, not the partner's: no receipt charges the file
    assert not list(settings.outbox.rglob(f"{path.name}.*"))
    assert table_snapshot(settings) == before


@pytest.mark.parametrize("content", [b"", b"\n", b"0123456789abcdef\n"], ids=["empty", "newline", "short"])
def test_empty_or_short_key_file_is_refused(settings, content: bytes) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    key = settings.home / "pseudonym.key"
    key.write_bytes(content)
    path = drop(settings, CLEAN)
    before = table_snapshot(settings)
    out = run_cli(settings, "ingest", str(path), "--received-at", RECEIVED)
    _refused_by_key(settings, out, path, before, "empty" if not content.strip() else "too short")
    assert key.read_bytes() == content  # not replaced behind anyone's back


def test_short_key_in_the_environment_is_refused(settings, monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", "secret")
    path = drop(settings, CLEAN)
    before = table_snapshot(settings)
    _refused_by_key(settings, run_cli(settings, "ingest", str(path)), path, before, "too short")


def test_key_path_that_is_a_folder_is_refused(settings) -> None:
    (settings.home / "pseudonym.key").mkdir(parents=True)
    path = drop(settings, CLEAN)
    before = table_snapshot(settings)
    _refused_by_key(settings, run_cli(settings, "ingest", str(path)), path, before, "cannot be read")


@pytest.mark.slow
def test_lost_key_is_refused_not_regenerated(settings) -> None:
    """The warehouse keeps the key's fingerprint from its first use: a deleted key is not silently
    replaced (the same teachers would get new keys), and a different key is refused."""
    first = drop(settings, CLEAN)
    assert run_cli(settings, "ingest", str(first), "--received-at", RECEIVED).returncode == 0
    key_file = settings.home / "pseudonym.key"
    key = key_file.read_bytes()
    with Warehouse(settings, read_only=True) as wh:
        [(recorded,)] = wh.con.execute("SELECT value FROM warehouse_meta WHERE name = 'pseudonym_key_fingerprint'"
                                       ).fetchall()
    assert key.decode() not in recorded and re.fullmatch(r"[0-9a-f]{64}", recorded)

    second = drop(settings, FIXTURES / "defects-xlsx" / "T003" / "T003_201705.xlsx")
    before = table_snapshot(settings)
    key_file.unlink()
    _refused_by_key(settings, run_cli(settings, "ingest", str(second), "--received-at", RECEIVED), second, before,
                    "missing")
    assert not key_file.exists()  # not regenerated

    key_file.write_text(os.urandom(32).hex())  # someone made a new one by hand
    _refused_by_key(settings, run_cli(settings, "ingest", str(second), "--received-at", RECEIVED), second, before,
                    "not the key this warehouse was loaded with")
    env_key = {"INSERVICE_PSEUDONYM_KEY": os.urandom(32).hex()}
    out = subprocess.run([sys.executable, "-m", "inservice.cli", "ingest", str(second)], capture_output=True,
                         text=True, env={**os.environ, "INSERVICE_HOME": str(settings.home), **env_key})
    _refused_by_key(settings, out, second, before, "not the key this warehouse was loaded with")

    key_file.write_bytes(key)  # restored from the backup: loads, with the same teacher keys as before
    ok = run_cli(settings, "ingest", str(second), "--received-at", RECEIVED, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "loaded"


def test_key_write_failing_midway_leaves_no_key_file(tmp_path: Path) -> None:
    """A disk that fills while the key is first written (here: a file-size limit of 16 bytes in a real
    process) leaves no key file at all, so the next run generates a whole one."""
    home = tmp_path / "home"
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))\n"
              "from pathlib import Path\n"
              "from inservice.validations.pseudonym import PseudonymKeyError, load_key\n"
              "try:\n"
              "    load_key(Path(sys.argv[1]))\n"
              "except PseudonymKeyError as exc:\n"
              "    print(exc)\n"
              "    sys.exit(3)\n")
    env = {k: v for k, v in os.environ.items() if k != "INSERVICE_PSEUDONYM_KEY"}
    out = subprocess.run([sys.executable, "-c", script, str(home)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "cannot write the pseudonym key" in out.stdout
    assert list(home.iterdir()) == []  # neither the key nor its temporary file
    from inservice.validations.pseudonym import load_key

    key = load_key(home)  # the next run: a whole key
    assert len(key) == 64 and (home / "pseudonym.key").stat().st_mode & 0o777 == 0o600


# --- the analysts' DuckDB copy --------------------------------------------------------------------------
FEED_VARIABLE = "FEED_ZQXJ_SECRET_URL"
LETTERS = ("臺教師(三)字第1069999001號", "臺教師(三)字第1068888002號")
TESTING_TITLE = "測試區機密課程甲乙丙"


def _secrets_in_the_warehouse(settings) -> list[bytes]:
    """Rows analysts may not read: a feed's variable name, letter numbers of a unit's state change and an
    archive exception, and a testing-area course title (each also checked to be in the warehouse file)."""
    from datetime import date

    from inservice.corrections.lifecycle import set_state
    from inservice.feeds.register import FeedSpec, add_feed
    from tests.builders import attendee, course, write_xlsx

    with Warehouse(settings) as wh:
        wh.add_unit("T004", "unit T004", "file", "testing", date(2016, 1, 1))
        add_feed(wh, FeedSpec("T003", FEED_VARIABLE, "inservice_courses", "inservice_attendance", 10))
        set_state(wh, "T003", "sealed", LETTERS[0])
        wh.add_exception("T001", None, LETTERS[1], date(2017, 1, 1), date(2017, 12, 31))
    testing = write_xlsx(settings.inbox / "T004" / "T004_201705.xlsx",
                         [course("C1", title=TESTING_TITLE, unit_code="T004")],
                         [attendee("C1", "A123456789", unit_code="T004")])
    [r] = ingest_paths([testing], settings, RECEIVED)
    assert r["status"] == "loaded" and r["area"] == "testing"
    wanted = [FEED_VARIABLE.encode(), *(x.encode() for x in LETTERS), TESTING_TITLE.encode()]
    held = settings.warehouse_path.read_bytes()
    assert all(w in held for w in wanted)  # the search finds them where they are
    return wanted


def test_the_analysts_copy_holds_no_byte_of_other_tables(settings, warehouse_backend: str) -> None:
    if warehouse_backend != "duckdb":
        pytest.skip("the copy is DuckDB's (PostgreSQL grants a read-only role)")
    from inservice.warehouse.analyst import REFERENCE_TABLES, snapshot_path
    from inservice.warehouse.ddl import COURSES

    wanted = _secrets_in_the_warehouse(settings)
    ingest_paths([drop(settings, CLEAN)], settings, RECEIVED)
    copy = snapshot_path(settings)
    for f in [p for p in copy.parent.rglob("*") if p.is_file()]:  # the catalog and the Parquet parts it reads
        data = f.read_bytes()
        assert [w.decode() for w in wanted if w in data] == [], f
    assert sorted(p.name for p in copy.parent.iterdir()) == ["parts", "warehouse.duckdb"]
    import duckdb

    with duckdb.connect(str(copy), read_only=True) as con, Warehouse(settings, read_only=True) as wh:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == {"courses", "attendance", "history", "uploads", "findings", "units", "school_plans",
                          "teacher_plans", "school_plans_history", "teacher_plans_history", "plan_revisions",
                          "tags", "organizer_light_courses", "snapshot_info", *REFERENCE_TABLES}
        views = {t for (t,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {"courses", "attendance", "history", "uploads", "organizer_light_courses"} <= views  # over Parquet
        for table in ("courses", "attendance", "history", "uploads", "findings", "course_audience"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == \
                wh.con.execute(f"SELECT count(*) FROM {table}").fetchone(), table
        assert con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'courses'").fetchone()[0] == \
            COURSES.comment
        [(seq,)] = con.execute("SELECT commit_seq FROM snapshot_info").fetchall()
        assert str(seq) == wh.meta("commit_seq")


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_a_killed_refresh_leaves_no_full_copy_and_the_next_run_refreshes(settings, warehouse_backend: str
                                                                        ) -> None:
    """kill -9 while the copy is being built: what is left is a partial copy of analyst tables in a
    private folder; the next run — a duplicate that writes nothing — removes it and brings the stale
    copy up to date."""
    if warehouse_backend != "duckdb":
        pytest.skip("the copy is DuckDB's")
    from inservice.warehouse.analyst import snapshot_path

    wanted = _secrets_in_the_warehouse(settings)
    path = drop(settings, CLEAN)
    killed = run_cli(settings, "ingest", str(path), "--received-at", RECEIVED, failpoint="analyst.copying")
    assert killed.returncode == -9
    folder = snapshot_path(settings).parent
    left = [p for p in folder.rglob("*") if p.is_file()]
    for p in left:
        assert not any(w in p.read_bytes() for w in wanted), p
        if p.parent != folder and folder / "parts" not in p.parents:  # parts: analyst rows only
            assert p.parent.stat().st_mode & 0o777 == 0o700  # nobody else can reach it
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    with Warehouse(settings, read_only=True) as wh:
        loaded = wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0]
    assert loaded > 0  # committed before the kill

    again = run_cli(settings, "ingest", str(path), "--received-at", RECEIVED, "--json")
    assert json.loads(again.stdout)["status"] == "duplicate"
    assert sorted(p.name for p in folder.iterdir()) == ["parts", "warehouse.duckdb"]  # the leftover is swept
    import duckdb

    with duckdb.connect(str(snapshot_path(settings)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM attendance").fetchone()[0] == loaded


def test_a_copy_left_stale_is_refreshed_by_the_next_writer_even_a_duplicate(settings, warehouse_backend: str,
                                                                           monkeypatch) -> None:
    if warehouse_backend != "duckdb":
        pytest.skip("the copy is DuckDB's")
    from dataclasses import replace

    import duckdb

    from inservice.warehouse.analyst import snapshot_path

    path = drop(settings, CLEAN)
    [r] = ingest_paths([path], replace(settings, analyst_copy=False), RECEIVED)  # loads, copy not refreshed
    assert r["status"] == "loaded"
    with duckdb.connect(str(snapshot_path(settings)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM attendance").fetchone()[0] == 0
    [r] = ingest_paths([path], settings, RECEIVED)
    assert r["status"] == "duplicate"
    with duckdb.connect(str(snapshot_path(settings)), read_only=True) as con, \
            Warehouse(settings, read_only=True) as wh:
        assert con.execute("SELECT count(*) FROM attendance").fetchone()[0] == \
            wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] > 0


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_self_check_against_a_warehouse_from_before_the_fingerprint(settings) -> None:
    """`check` opens the warehouse read-only: one made before `warehouse_meta` existed still works, and
    the first load records the fingerprint."""
    with Warehouse(settings) as wh:
        wh.con.execute("DROP TABLE warehouse_meta")
    path = drop(settings, CLEAN)
    out = run_cli(settings, "check", str(path), "--received-at", RECEIVED, "--json", "--out", str(settings.home))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "checked"
    assert run_cli(settings, "ingest", str(path), "--received-at", RECEIVED).returncode == 0
    with Warehouse(settings, read_only=True) as wh:
        assert wh.meta("pseudonym_key_fingerprint") is not None
