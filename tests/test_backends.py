"""The two warehouse backends: same tables and statistics, analyst access that never blocks a load,
the Parquet lake read back, the setting that picks the backend."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inservice.config import TAIPEI, Settings
from inservice.ingest import ingest_paths
from inservice.plans.intake import ingest_plan_paths
from inservice.plans.publish import publish_plans
from inservice.publish.monthly import publish_month
from inservice.warehouse import analyst, ddl
from inservice.warehouse.backend import POSTGRESQL, WarehouseUrl
from inservice.warehouse.store import Warehouse
from tests.builders import (
    attendee,
    course,
    make_id,
    school_plan,
    teacher_plan,
    write_plan_csv,
    write_xlsx,
)
from tests.conftest import RECEIVED, drop, fixture_cases, load_expected, pg_database

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

SAMPLE = Path(__file__).resolve().parent.parent / "inservice" / "sample_inbox"
AS_OF = datetime(2017, 6, 6, 6, 0, tzinfo=TAIPEI)
VOLATILE = {"loaded_at", "first_loaded_at", "processed_at", "received_at", "updated_at", "receipt_json",
            "receipt_xlsx", "upload_id", "changed_at", "source_id", "before_json", "after_json", "as_of",
            "files", "replaced_at"}


def test_url_picks_backend_and_hides_password() -> None:
    assert WarehouseUrl.parse("duckdb:///srv/w.duckdb") == WarehouseUrl("duckdb", "/srv/w.duckdb")
    pg = WarehouseUrl.parse("postgresql+psycopg2://loader:s3cret@db.example:5432/inservice")
    assert (pg.backend, pg.target) == ("postgresql", "postgresql://loader:s3cret@db.example:5432/inservice")
    assert "s3cret" not in pg.redacted() and "loader@db.example" in pg.redacted()
    with pytest.raises(ValueError, match="unknown scheme"):
        WarehouseUrl.parse("sqlite:///x.db")


def _load_everything(settings: Settings) -> None:
    """The fixtures and the sample inbox, then the month's statistics; and a school year's plans."""
    for case in fixture_cases():  # one at a time: later files of a unit re-send its month
        _, src = load_expected(case)
        ingest_paths([drop(settings, src)], settings, RECEIVED)
    publish_month(settings, "2017-05", as_of=AS_OF, report_date=date(2017, 6, 6))
    _load_plans(settings)


def _load_plans(settings: Settings) -> None:
    """School year 105 (2016-08 .. 2017-07, the fixtures' courses): school and teacher plans, then the
    planning survey's publications."""
    with Warehouse(settings) as wh:
        if wh.unit("PLAN") is None:
            wh.add_unit("PLAN", "plans", "file", "production", date(2016, 1, 1))
    rng = random.Random(105)
    schools = ["423605", "313601", "124601"]
    school_rows = [school_plan(s, d, school_year="105") for s in schools for d in "ABC"]
    teacher_rows = [teacher_plan(make_id(rng), rng.choice(schools), d, school_year="105")
                    for _ in range(20) for d in rng.sample("ABCDEF", 2)]
    for revision in (0, 1):  # a second revision of each: the replaced one goes to the history
        plans = [write_plan_csv(settings.inbox / "PLAN" / "PLAN_105_school.csv", school_rows[revision:]),
                 write_plan_csv(settings.inbox / "PLAN" / "PLAN_105_teacher.csv", teacher_rows[revision:])]
        assert [r["status"] for r in ingest_plan_paths(plans, settings, RECEIVED)] == ["loaded", "loaded"]
    publish_plans(settings, "105")


def _normal(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(TAIPEI).isoformat()
    if isinstance(value, Decimal | float):
        return round(float(value), 4)
    return value


def _analyst_view(settings: Settings) -> dict[str, list[tuple]]:
    """Every analyst table, volatile columns (times, generated ids, receipt paths) left out."""
    with Warehouse(settings, read_only=True) as wh:
        out = {}
        for table in analyst.analyst_tables(wh):
            cur = wh.con.execute(f"SELECT * FROM main.{table}")
            names = [d[0] for d in cur.description]
            keep = [i for i, n in enumerate(names) if n not in VOLATILE]
            out[table] = sorted((tuple(_normal(r[i]) for i in keep) for r in cur.fetchall()), key=repr)
        return out


@pytest.mark.slow
def test_same_inputs_give_identical_analyst_tables_and_statistics(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", "same-key-for-both-backends-" + "0" * 16)
    monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
    views = {}
    with pg_database() as url:
        for backend, warehouse in (("duckdb", None), ("postgresql", url)):
            s = replace(Settings.from_env(tmp_path / backend), warehouse=warehouse)
            with Warehouse(s) as wh:
                for code in ("T001", "T002", "T003"):
                    wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
            _load_everything(s)
            views[backend] = _analyst_view(s)
    duck, pg = views["duckdb"], views["postgresql"]
    assert sorted(duck) == sorted(pg)
    assert len(duck["attendance"]) > 10 and len(duck["findings"]) > 10 and duck["stat_monthly_series"]
    assert duck["teacher_plans"] and duck["stat_plan_fulfilment"] and duck["stat_plan_supply"]
    for table in duck:
        assert duck[table] == pg[table], table


@pytest.mark.slow
def test_lake_reads_back_with_duckdb(settings: Settings, warehouse_backend: str) -> None:
    _load_everything(settings)
    lake = settings.home / "lake"
    subprocess.run([sys.executable, "-m", "inservice.cli", "warehouse", "lake"], check=True, capture_output=True,
                   env={**os.environ, "INSERVICE_HOME": str(settings.home)})
    assert (lake / "courses" / "year=2017" / "month=5").is_dir()
    assert (lake / "attendance" / "year=2017" / "month=5").is_dir()
    con = duckdb.connect()
    with Warehouse(settings, read_only=True) as wh:
        for table, key in (("courses", "unit_code, course_code"), ("attendance", "unit_code, course_code, teacher_key"),
                           ("uploads", "upload_id"), ("findings", "upload_id, record, \"row\", rule, field")):
            read = con.execute(f"""SELECT * EXCLUDE (year, month) FROM read_parquet(
                '{lake}/{table}/**/*.parquet', hive_partitioning = true) ORDER BY {key}""").fetchall()
            where = " WHERE area = 'production'" if table == "uploads" else ""
            stored = wh.con.execute(f"SELECT * FROM main.{table}{where} ORDER BY {key}").fetchall()
            assert [tuple(map(_normal, r)) for r in read] == [tuple(map(_normal, r)) for r in stored], table
        # the Spark and Trino definitions name exactly the columns the files hold, in order
        spark, trino = analyst.lake_ddl("spark", str(lake)), analyst.lake_ddl("trino", str(lake))
        for table in analyst.LAKE_DECLARED:
            files = sorted((lake / table).rglob("*.parquet"))
            assert files, table
            keys = ("school_year",) if table in analyst.PLAN_LAKE else ()  # a partition, not in the files
            declared = [c.name for c in analyst.LAKE_DECLARED[table].columns if c.name not in keys]
            assert pq.read_schema(files[0]).names == declared, table
            # and the declared types, from either backend (what the Spark/Trino definitions say they are)
            types = {c.name: c.type for c in analyst.LAKE_DECLARED[table].columns}
            for f in files:
                assert [(field.name, _sql_type(field.type)) for field in pq.read_schema(f)] == [
                    (n, types[n]) for n in declared], f
            for text, quote in ((spark, "`"), (trino, '"')):
                block = text.split(f".{table} (\n", 1)[1].split("\n)", 1)[0]
                assert [line.strip().split()[0].strip(quote) for line in block.strip().splitlines()][
                    :len(declared)] == declared
        # partition pruning: a month's folder holds only that month's courses
        months = con.execute(f"""SELECT DISTINCT strftime(start_date, '%Y-%m'), year, month FROM read_parquet(
            '{lake}/courses/**/*.parquet', hive_partitioning = true)""").fetchall()
        assert all(ym == f"{y:04d}-{m:02d}" for ym, y, m in months)


def _sql_type(arrow: object) -> str:
    """The declared SQL type of a column the lake's file holds as `arrow`."""
    if isinstance(arrow, pa.TimestampType) and arrow.tz is not None:
        return "TIMESTAMPTZ"
    return {t: name for name, t in analyst.ARROW_TYPES.items()}.get(arrow, str(arrow))


def test_lake_ddl_is_a_script_of_statements() -> None:
    """What `lake-ddl` prints runs statement by statement: the schema first, every table once, each
    statement ended by `;` and a newline; comments quoted for each engine (tests/test_lake_spark.py runs it)."""
    for engine, schema in (("spark", "inservice"), ("trino", "hive.inservice")):
        for text, tables in ((analyst.lake_ddl(engine, "s3a://b/lake/"), analyst.LAKE_DECLARED),
                             (analyst.archive_ddl(engine, "/srv/cold/r1"), analyst.ARCHIVE_TABLES)):
            statements = [s.strip() for s in text.split(";\n") if s.strip()]
            assert statements[0].startswith("CREATE SCHEMA IF NOT EXISTS ") and text.rstrip().endswith(";")
            created = [s.split(" (", 1)[0].rsplit(".", 1)[1] for s in statements if s.startswith("CREATE TABLE")]
            assert created == list(tables)
            assert ("'s3a://b/lake/courses'" in text) if tables is analyst.LAKE_DECLARED else (
                "'/srv/cold/r1/attendance'" in text)
        assert f"CREATE SCHEMA IF NOT EXISTS {schema};" in analyst.lake_ddl(engine, "/x")
    assert analyst._spark_text("it's C:\\x") == "'it\\'s C:\\\\x'"
    assert "PARTITIONED BY (year)" in analyst.archive_ddl("spark", "/a")


def _big_upload(path: Path, unit: str, courses: int, per_course: int, seed: int) -> Path:
    rng = random.Random(seed)
    cs = [course(f"{unit}C{i:04d}", unit_code=unit) for i in range(courses)]
    att = [attendee(c["course_code"], make_id(rng), unit_code=unit) for c in cs for _ in range(per_course)]
    return write_xlsx(path, cs, att)


def _analyst_query(settings: Settings, backend: str, url: str | None) -> int:
    """One analyst query, the way an analyst connects: the read-only copy, or the read-only role."""
    if backend == POSTGRESQL:
        con = psycopg2.connect(url.rsplit("/", 1)[0].replace("postgres@", f"{settings.analyst_role}@")
                               + "/" + url.rsplit("/", 1)[1])
        try:
            cur = con.cursor()
            cur.execute("""SELECT count(*), count(DISTINCT teacher_key), sum(hours_granted)
                           FROM attendance a JOIN courses c USING (unit_code, course_code)""")
            return cur.fetchone()[0]
        finally:
            con.close()
    path = analyst.snapshot_path(settings)
    if not path.exists():
        return 0
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("""SELECT count(*), count(DISTINCT teacher_key), sum(hours_granted)
                              FROM attendance a JOIN courses c USING (unit_code, course_code)""").fetchone()[0]


@pytest.mark.slow
def test_analysts_query_while_three_uploads_load(settings: Settings, warehouse_backend: str,
                                                 warehouse_url: str | None) -> None:
    """An analyst loop runs while three uploads load in another process: no query fails, the loads
    never wait on it (on PostgreSQL no lock request is ever left waiting), and every count the analyst
    sees is a whole number of uploads (never a half-loaded one)."""
    uploads = [_big_upload(settings.inbox / f"T00{i}" / f"T00{i}_201705.xlsx", f"T00{i}", 60, 50, i)
               for i in (1, 2, 3)]
    if warehouse_backend == POSTGRESQL:
        with Warehouse(settings) as wh:
            analyst.grant_analyst_role(wh, settings.analyst_role)
    seen: list[int] = []
    errors: list[BaseException] = []
    waits: list[int] = []
    stop = threading.Event()

    def analyst_loop() -> None:
        while not stop.is_set():
            try:
                seen.append(_analyst_query(settings, warehouse_backend, warehouse_url))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    def lock_watch() -> None:
        admin = psycopg2.connect(warehouse_url)
        admin.autocommit = True
        while not stop.is_set():
            cur = admin.cursor()
            cur.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                        "WHERE NOT l.granted AND d.datname = current_database()")
            waits.append(cur.fetchone()[0])
            time.sleep(0.01)
        admin.close()

    threads = [threading.Thread(target=analyst_loop)]
    if warehouse_backend == POSTGRESQL:
        threads.append(threading.Thread(target=lock_watch))
    for t in threads:
        t.start()
    try:
        env = {**os.environ, "INSERVICE_HOME": str(settings.home), "INSERVICE_WAREHOUSE_URL": warehouse_url or ""}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "inservice.cli", "ingest", "--json", *map(str, uploads),
                               "--received-at", RECEIVED], env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # the analyst's view of the last load
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done.returncode == 0, done.stderr
    statuses = [json.loads(line)["status"] for line in done.stdout.splitlines() if line.startswith("{")]
    assert statuses == ["loaded"] * 3
    assert errors == []
    assert len(seen) > 10, f"only {len(seen)} analyst queries in {elapsed:.1f} s"
    assert set(seen) <= {0, 3000, 6000, 9000} and seen == sorted(seen) and seen[-1] == 9000
    if warehouse_backend == POSTGRESQL:
        assert waits and max(waits) == 0


def test_analyst_role_reads_analyst_tables_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
    with pg_database() as url:
        s = replace(Settings.from_env(tmp_path / "pg"), warehouse=url)
        with Warehouse(s) as wh:
            wh.add_unit("T001", "unit", "file", "production", date(2016, 1, 1))
            tables = analyst.grant_analyst_role(wh, s.analyst_role)
        assert {"courses", "attendance", "history", "uploads", "findings", "units"} <= set(tables)
        assert not {"feeds", "feed_watermarks", "corrections", "correction_workbooks"} & set(tables)
        con = psycopg2.connect(url.replace("postgres@", f"{s.analyst_role}@"))
        con.autocommit = True
        cur = con.cursor()
        cur.execute("SELECT unit_code FROM units")
        assert cur.fetchall() == [("T001",)]
        for sql in ("SELECT * FROM feeds", "SELECT * FROM testing.courses",
                    "INSERT INTO units (unit_code) VALUES ('X')", "CREATE TEMP TABLE staging (x int)",
                    "CREATE TABLE main.mine (x int)"):
            with pytest.raises(psycopg2.Error):
                cur.execute(sql)
        con.close()


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_duckdb_copy_opens_while_the_loader_holds_the_warehouse(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The warehouse file is the loader's alone; the analyst copy is readable meanwhile, and holds
    the analyst tables only."""
    monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
    settings = Settings.from_env(tmp_path / "duck")
    with Warehouse(settings) as wh:
        for code in ("T001", "T002", "T003"):
            wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
    _load_everything(settings)
    copy = analyst.snapshot_path(settings)
    with Warehouse(settings):  # the loader holds the file (DuckDB: one process)
        with duckdb.connect(str(copy), read_only=True) as con:
            names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            n = con.execute("SELECT count(*) FROM attendance").fetchone()[0]
    assert {"courses", "attendance", "uploads", "findings", "units", "stat_monthly_series"} <= names
    assert not {"feeds", "feed_watermarks", "corrections", "correction_workbooks"} & names
    with Warehouse(settings, read_only=True) as wh:
        assert n == wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] > 0



def test_a_failing_analyst_copy_does_not_fail_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The copy is published after the commit: if it cannot be written (here its folder is a file),
    the upload is still loaded and the failure is logged, not raised."""
    monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
    settings = Settings.from_env(tmp_path / "duck")
    with analyst.WriteSession(settings) as wh:
        wh.add_unit("T001", "unit T001", "file", "production", date(2016, 1, 1))
    shutil.rmtree(settings.home / "analyst")
    (settings.home / "analyst").write_text("not a folder")
    upload = _big_upload(settings.inbox / "T001" / "T001_201705.xlsx", "T001", 2, 3, 7)
    with caplog.at_level("WARNING", logger="inservice.warehouse"):
        [receipt] = ingest_paths([upload], settings, RECEIVED)
    assert receipt["status"] == "loaded"
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] == 6
    assert any("analyst access not refreshed" in r.getMessage() for r in caplog.records)


def test_publication_tables_join_the_registry_and_gain_added_columns(settings: Settings,
                                                                     warehouse_backend: str) -> None:
    """The stat_* tables are declared with every other table: not there before the first publication
    (analysts are granted only what exists), and one left from an older version gains the columns
    declared since, when the warehouse opens, as the core tables do."""
    declared = [c.name for c in ddl.table("stat_monthly_series").columns]
    with Warehouse(settings) as wh:
        assert analyst.analyst_tables(wh) == ["units", "uploads", "findings", "courses", "attendance", "history",
                                              "tags", *(t for t in analyst.REFERENCE_TABLES
                                                        if t not in analyst.BRIDGES),
                                              "school_plans", "teacher_plans", "school_plans_history",
                                              "teacher_plans_history", "plan_revisions", "organizer_light_courses",
                                              *analyst.BRIDGES]
        wh.con.execute("CREATE TABLE main.stat_monthly_series (month VARCHAR, as_of TIMESTAMPTZ)")
    with Warehouse(settings) as wh:
        cur = wh.con.execute("SELECT * FROM main.stat_monthly_series WHERE false")
        assert [d[0] for d in cur.description] == declared
        assert analyst.analyst_tables(wh)[-1] == "stat_monthly_series"
        assert not {"feeds", "corrections", "warehouse_meta", "upload_receipts"} & set(analyst.analyst_tables(wh))


CORE = 13 + len(analyst.REFERENCE_TABLES)  # the core six, tags, five plan tables, the lights view; the registers


def test_the_analysts_refresh_is_the_explicit_step_after_a_writers_commits(settings: Settings,
                                                                           warehouse_backend: str) -> None:
    """A WriteSession's end refreshes the analysts' access and says what it did; closing a plain
    Warehouse refreshes nothing; the next session catches up with a commit it missed."""
    def copied_units() -> int:
        with duckdb.connect(str(analyst.snapshot_path(settings)), read_only=True) as con:
            return con.execute("SELECT count(*) FROM units").fetchone()[0]

    idle = analyst.WriteSession(settings)
    with idle:
        pass
    assert idle.refresh is not None and idle.refresh.action == "none" and "nothing committed" in idle.refresh.note
    with Warehouse(settings) as wh:  # not a session: its close is only a close
        wh.add_unit("T009", "unit T009", "file", "production", date(2016, 1, 1))
    session = analyst.WriteSession(settings)
    with session as wh:
        wh.add_unit("T010", "unit T010", "file", "production", date(2016, 1, 1))
    refresh = session.refresh
    assert refresh is not None and refresh.metadata()["analyst_access"] == refresh.action
    if warehouse_backend == POSTGRESQL:
        with Warehouse(settings, read_only=True) as wh:
            role = bool(wh.con.execute("SELECT 1 FROM pg_roles WHERE rolname = ?", [settings.analyst_role]).fetchall())
        assert (refresh.action, refresh.tables) == (("grants", CORE) if role else ("none", 0))
        return
    assert (refresh.action, refresh.tables) == ("copy", CORE) and refresh.rows >= 5
    assert copied_units() == 5
    with Warehouse(settings) as wh:
        wh.add_unit("T011", "unit T011", "file", "production", date(2016, 1, 1))
    assert copied_units() == 5  # behind: nobody refreshed it
    behind = analyst.WriteSession(settings)
    with behind:
        pass  # writes nothing, finds the copy behind the warehouse
    assert behind.refresh is not None and behind.refresh.action == "copy" and copied_units() == 6
