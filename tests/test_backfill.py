"""The legacy archive's migration (`inservice backfill`): reconciliation, cold archive, resume after a kill."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inservice.backfill.core import run_backfill, verify_archive
from inservice.config import Settings
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.warehouse.analyst import archive_schema
from inservice.warehouse.store import Warehouse
from tests.builders import attendee, course, make_id
from tests.conftest import pg_database

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends
ROOT = Path(__file__).resolve().parents[1]
KEY = "test-backfill-pseudonym-key-0123456789abcdef"
MOD = "2017-05-12 10:00:00"
_RNG = random.Random(18)


def _ids(n: int) -> list[str]:
    return [make_id(_RNG) for _ in range(n)]


IDS = _ids(20)
BAD_ID = "A123456780"  # wrong check digit: A03


def legacy_rows() -> tuple[list[dict], list[dict]]:
    """Three units (T001 registered, L100 and L200 not), pre-cutoff courses and defective rows."""
    c, a = [], []

    def add_course(unit: str, code: str, **over: object) -> None:
        c.append(course(code, unit_code=unit, modified_at=MOD, **over))

    def add_att(unit: str, code: str, nid: str) -> None:
        a.append(attendee(code, nid, unit_code=unit, modified_at=MOD))

    for i, code in enumerate(("C1", "C2", "C3", "C4")):
        add_course("T001", code)
        for j in range(3):
            add_att("T001", code, IDS[i * 3 + j])
    add_att("T001", "C1", BAD_ID)  # refused A03
    add_course("T001", "C5", start_date="2010-03-01", end_date="2010-03-01", closed_date="2010-03-05")  # archived
    add_att("T001", "C5", IDS[12])
    add_att("T001", "C5", IDS[13])
    add_course("T001", "C6", hours="0")  # refused C05
    add_att("T001", "C6", IDS[14])  # refused A05 (its course refused)
    add_att("T001", "CX", IDS[15])  # refused A04 (no such course)
    add_course("L100", "C1", start_date="2016-02-01", end_date="2016-02-01", closed_date="2016-02-03")
    add_att("L100", "C1", IDS[16])
    add_att("L100", "C1", IDS[17])
    add_course("L100", "C2", start_date="2011-06-01", end_date="2011-06-01", closed_date="2011-06-02")  # archived
    add_att("L100", "C2", IDS[18])  # archived
    add_att("L100", "C2", BAD_ID)  # refused A03 (not archived: an error of its own)
    add_course("L200", "C9", start_date="2015-09-01", end_date="2015-09-01", closed_date="2015-09-03")
    add_att("L200", "C9", IDS[19])
    add_course("L200", "C8", start_date="2014-01-01", end_date="2014-01-01", closed_date="2014-01-02")
    add_course("x1", "C1")  # refused C02 (not a unit code), never registered
    _RNG.shuffle(c)  # the legacy tables are in no particular order
    _RNG.shuffle(a)
    return c, a


EXPECTED = {"course": {"read": 11, "loaded": 7, "archived": 2, "refused": 2},
            "attendance": {"read": 22, "loaded": 15, "archived": 3, "refused": 4}}
EXPECTED_RULES = {"A03": 2, "A04": 1, "A05": 1, "C02": 1, "C05": 1}


def _table(rt, rows: list[dict]) -> pa.Table:
    return pa.table({f.code: pa.array([r.get(f.code) for r in rows], pa.string()) for f in rt.fields})


def write_folder(folder: Path, fmt: str = "parquet") -> Path:
    courses, attendance = legacy_rows()
    for rt, rows in ((COURSE, courses), (ATTENDANCE, attendance)):
        sub = folder / rt.feed_table
        sub.mkdir(parents=True)
        half = len(rows) // 2  # two files a table: the source is read as one
        for i, part in enumerate((rows[:half], rows[half:])):
            table = _table(rt, part)
            if fmt == "parquet":
                pq.write_table(table, sub / f"part-{i}.parquet")
            else:
                import pyarrow.csv as pacsv
                pacsv.write_csv(table, sub / f"part-{i}.csv")
    return folder


def _check(report: dict) -> None:
    assert report["complete"] and report["balanced"]
    assert report["by_record"] == EXPECTED
    assert report["rows_read"] == report["source_rows"] == 33
    assert (report["loaded"], report["archived"], report["refused"]) == (22, 5, 6)
    assert report["refused_by_rule"] == EXPECTED_RULES
    assert set(report["samples"]) == set(EXPECTED_RULES)
    assert all(s["id_masked"] is None or "*" in s["id_masked"] for v in report["samples"].values() for s in v)
    assert report["units_registered"] == [{"unit_code": "L100", "joined": "2011-06-01"},
                                          {"unit_code": "L200", "joined": "2014-01-01"}]
    per = {(r["unit_code"], r["year"], r["record"]): r for r in report["per_unit_year"]}
    assert per[("T001", 2010, "course")] == {"unit_code": "T001", "year": 2010, "record": "course", "read": 1,
                                             "loaded": 0, "archived": 1, "refused": 0}
    assert per[("T001", 2010, "attendance")]["archived"] == 2
    assert per[("T001", None, "attendance")]["refused"] == 1  # CX: no course, no year
    assert per[("L100", 2011, "attendance")] == {"unit_code": "L100", "year": 2011, "record": "attendance",
                                                 "read": 2, "loaded": 0, "archived": 1, "refused": 1}
    assert sum(r["read"] for r in report["per_unit_year"]) == 33


def _warehouse(settings: Settings) -> dict:
    """Rows of the migrated tables (times of the run left out: they are the run's, not the data's)."""
    with Warehouse(settings, read_only=True) as wh:
        out = {}
        for table, cols in (("courses", "unit_code, course_code, title, start_date, hours, closed_date, upload_id"),
                            ("attendance", "unit_code, course_code, teacher_key, hours_granted, upload_id"),
                            ("units", "unit_code, name, channel, state, joined"),
                            ("backfill_counts", "chunk, unit_code, year, record, outcome, rule, \"rows\""),
                            ("backfill_samples", "chunk, record, \"row\", rule, id_masked")):
            out[table] = sorted(map(repr, wh.con.execute(f"SELECT {cols} FROM {table}").fetchall()))
        return out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_folder_backfill_reconciles_exactly_and_seals_the_archive(settings: Settings, tmp_path: Path, fmt: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    source = write_folder(tmp_path / "legacy", fmt)
    report = run_backfill(settings, str(source), batch_rows=4)
    _check(report)
    assert report["chunks"] > 2  # cut into several chunks, yet judged as a whole
    wh_rows = _warehouse(settings)
    assert len(wh_rows["courses"]) == 7 and len(wh_rows["attendance"]) == 15
    with Warehouse(settings, read_only=True) as wh:
        assert wh.unit("L100").state == "production" and wh.unit("L100").joined == date(2011, 6, 1)
        assert wh.unit("x1") is None
        assert wh.con.execute("SELECT count(*) FROM courses WHERE start_date <= DATE '2012-12-31'").fetchone()[0] == 0
    # the sealed cold archive: manifest verifies, files read-only, readable as Hive partitions
    archive = Path(report["archive"]["folder"])
    assert verify_archive(archive) == []
    manifest = json.loads((archive / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == {"courses": 2, "attendance": 3}
    assert not os.access(archive, os.W_OK) or os.geteuid() == 0
    assert all(not (archive / f["path"]).stat().st_mode & 0o222 for f in manifest["files"])
    got = duckdb.sql(f"""SELECT year, unit_code, course_code FROM read_parquet('{archive}/courses/**/*.parquet',
        hive_partitioning = true) ORDER BY 1, 2""").fetchall()
    assert got == [(2010, "T001", "C5"), (2011, "L100", "C2")]
    cols = duckdb.sql(f"SELECT * FROM read_parquet('{archive}/attendance/**/*.parquet') LIMIT 0").columns
    assert "teacher_key" in cols and "national_id" not in cols and "name" not in cols
    # the warehouse's declared columns and types (hours DECIMAL(5,1)): one definition for Spark/Trino and DuckDB
    assert all(pq.read_schema(archive / f["path"]).remove_metadata() == archive_schema(f["table"])
               for f in manifest["files"])
    # the same source in one chunk: the same outcome
    one = run_backfill(settings, str(source), batch_rows=4)  # finished: the same report, nothing redone
    assert {k: one[k] for k in ("loaded", "archived", "refused", "chunks")} == {
        k: report[k] for k in ("loaded", "archived", "refused", "chunks")}
    assert _warehouse(settings) == wh_rows
    # a damaged archive file is found
    bad = archive / manifest["files"][0]["path"]
    bad.chmod(0o644)
    bad.write_bytes(bad.read_bytes() + b"x")
    assert any("checksum" in p for p in verify_archive(archive))


def test_chunk_size_does_not_change_the_outcome(settings: Settings, tmp_path: Path, new_settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    source = write_folder(tmp_path / "legacy")
    small = run_backfill(settings, str(source), batch_rows=3)
    other = new_settings(tmp_path / "other")
    with Warehouse(other) as wh:
        wh.add_unit("T001", "unit T001", "file", "production", date(2016, 1, 1))
    big = run_backfill(other, str(source), batch_rows=100_000)
    assert big["chunks"] == 1 and small["chunks"] > 3
    for key in ("by_record", "refused_by_rule", "per_unit_year", "units_registered"):
        assert small[key] == big[key]
    a, b = _warehouse(settings), _warehouse(other)
    strip = lambda rows: sorted(r.rsplit(",", 1)[0] for r in rows)  # noqa: E731 (upload_id names the chunk)
    assert strip(a["courses"]) == strip(b["courses"]) and strip(a["attendance"]) == strip(b["attendance"])


def test_database_backfill_from_postgresql(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    courses, attendance = legacy_rows()
    with pg_database("inservice_legacy") as url:
        con = psycopg2.connect(url)
        with con, con.cursor() as cur:
            for rt, rows in ((COURSE, courses), (ATTENDANCE, attendance)):
                cols = ", ".join(f'"{f.code}" {"TIMESTAMP" if f.code == "modified_at" else "TEXT"}'
                                 for f in rt.fields)
                cur.execute(f"CREATE TABLE {rt.feed_table} ({cols})")
                names = ", ".join(f'"{f.code}"' for f in rt.fields)
                cur.executemany(f"INSERT INTO {rt.feed_table} ({names}) VALUES ({', '.join(['%s'] * len(rt.fields))})",
                                [[r.get(f.code) for f in rt.fields] for r in rows])
        con.close()
        report = run_backfill(settings, url, batch_rows=5)
    _check(report)
    assert "postgresql" in report["source"] and verify_archive(Path(report["archive"]["folder"])) == []


def _cli(home: Path, source: Path, env: dict, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(ROOT), "INSERVICE_PSEUDONYM_KEY": KEY}
    env.pop("INSERVICE_FAILPOINT", None)
    if failpoint:
        env["INSERVICE_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "inservice.cli", "--home", str(home), "backfill", str(source),
                           "--batch-rows", "4", "--json"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["backfill.before_commit.3", "backfill.after_chunk.2"])
def test_killed_run_continues_to_the_same_result(settings: Settings, tmp_path: Path, new_settings,
                                                 failpoint: str) -> None:
    source = write_folder(tmp_path / "legacy")
    env = {**os.environ}
    killed = _cli(settings.home, source, env, failpoint)
    assert killed.returncode == -9, killed.stderr
    with Warehouse(settings, read_only=True) as wh:
        assert 0 < wh.con.execute("SELECT count(*) FROM backfill_chunks").fetchone()[0] < 8
        assert wh.con.execute("SELECT finished_at FROM backfill_runs").fetchone()[0] is None
    resumed = _cli(settings.home, source, env)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    _check(report)
    # an uninterrupted run into another warehouse: the same rows, counts and archive bytes
    other = new_settings(tmp_path / "other")
    with Warehouse(other) as wh:  # registered as the `settings` fixture registers them
        for code in ("T001", "T002", "T003"):
            wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
    env2 = {**env}
    if other.warehouse:
        env2["INSERVICE_WAREHOUSE_URL"] = other.warehouse
    whole = _cli(other.home, source, env2)
    assert whole.returncode == 0, whole.stderr
    assert _warehouse(settings) == _warehouse(other)
    m1 = json.loads((Path(report["archive"]["folder"]) / "manifest.json").read_text(encoding="utf-8"))
    m2 = json.loads((Path(json.loads(whole.stdout)["archive"]["folder"]) / "manifest.json").read_text(encoding="utf-8"))
    assert m1["files"] == m2["files"] and m1["files"]


def test_dagster_job_materializes_the_reconciliation(settings: Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from inservice.pipelines.definitions import defs

    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    source = write_folder(tmp_path / "legacy")
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("legacy_backfill").execute_in_process(
            run_config={"ops": {"legacy_archive": {"config": {"source": str(source), "batch_rows": 6}}}},
            instance=instance)
        assert result.success
        [mat] = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in mat.materialization.metadata.items()}
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message and "chunk " in e.message]
    assert (meta["rows_read"], meta["loaded"], meta["archived"], meta["refused"]) == (33, 22, 5, 6)
    assert meta["balanced"] is True and meta["refused_by_rule"] == EXPECTED_RULES
    assert Path(meta["archive_manifest"]).exists() and Path(meta["reconciliation"]).exists()
    assert len(logs) == meta["chunks"] > 1  # progress: one line a chunk


def test_warnings_left_out_change_no_row(tmp_path: Path) -> None:
    """The backfill keeps no warning, so the engine skips W04/W05 for it: the same typed rows, keys and
    errors as with them."""
    from datetime import date as day

    from inservice.backfill.source import legacy_source
    from inservice.loaders.base import RawUpload
    from inservice.validations.engine import Context, validate
    from inservice.validations.pseudonym import Pseudonymiser

    same = {"title": "同名研習", "organizer": "臺北市教師研習中心", "modified_at": MOD, "unit_code": "T001"}
    courses = [course("S1", start_date="2017-05-10", end_date="2017-05-11", hours="12", **same),
               course("S2", start_date="2017-05-11", end_date="2017-05-11", hours="6", **same)]
    attendance = [attendee(c, nid, unit_code="T001", modified_at=MOD, **extra) for c, nid, extra in (
        ("S1", IDS[0], {}), ("S2", IDS[0], {}), ("S2", IDS[1], {"school_code": "ZZZ999"}), ("S2", BAD_ID, {}))]
    for rt, rows in ((COURSE, courses), (ATTENDANCE, attendance)):
        (tmp_path / rt.feed_table).mkdir()
        pq.write_table(_table(rt, rows), tmp_path / rt.feed_table / "part-0.parquet")
    with legacy_source(str(tmp_path)).open() as reader:
        raw = RawUpload(next(reader.stream(COURSE)), next(reader.stream(ATTENDANCE)))
    out = {}
    for warn in (True, False):
        ctx = Context(unit="T001", channel="db", received_on=day(2017, 6, 3), pseudonymiser=Pseudonymiser(KEY.encode()),
                      warehouse_warnings=warn)
        out[warn] = validate(raw, ctx)
    rules = {w: sorted(v.findings["rule"].to_pylist()) for w, v in out.items()}
    assert rules[True] == ["A03", "W04", "W05", "W05"] and rules[False] == ["A03"]
    assert out[True].courses.equals(out[False].courses) and out[True].attendance.equals(out[False].attendance)


def test_repeated_ids_are_hashed_once_with_the_same_keys() -> None:
    """A unit's history repeats its teachers: `keys` hashes each distinct ID once and spreads the key
    back; the keys equal Python's HMAC row for row, a missing ID stays missing."""
    from inservice.validations.pseudonym import Pseudonymiser

    teachers = _ids(50)
    rng = random.Random(3)
    ids = [None if rng.random() < 0.05 else rng.choice(teachers) for _ in range(20_000)]
    p = Pseudonymiser(KEY.encode())
    assert p.keys(pa.array(ids, pa.string())).to_pylist() == [None if i is None else p.one(i) for i in ids]


def test_tags_are_judged_against_the_register_as_uploads_are(settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The backfill's rules got no tag register (W06 judged against the spec's seed): a tag staff
    registered was dropped from legacy courses while uploads and feeds kept it."""
    from inservice.registers.tags import add_tag

    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    with Warehouse(settings) as wh:
        add_tag(wh, "T9", "數位教育", "數位學習", "某函", date(2013, 1, 1), by="staff")
    folder = tmp_path / "legacy"
    for rt, rows in ((COURSE, [course("G1", unit_code="T001", modified_at=MOD, tags="T9")]),
                     (ATTENDANCE, [attendee("G1", IDS[0], unit_code="T001", modified_at=MOD)])):
        (folder / rt.feed_table).mkdir(parents=True)
        pq.write_table(_table(rt, rows), folder / rt.feed_table / "part-0.parquet")
    report = run_backfill(settings, str(folder))
    assert report["balanced"] and report["loaded"] == 2
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT tags FROM courses WHERE course_code = 'G1'").fetchall() == [("T9",)]
