"""The Parquet lake and the cold archive read by a real Spark (pyspark in local mode, one session for the
module): the tables register from the statements `inservice warehouse lake-ddl --engine spark` prints, a
query on one partition reads only that partition's files, and every table's rows — counted, and an
order-independent checksum over their typed values (DATE, DECIMAL(5,1), TIMESTAMP, TIMESTAMP_NTZ) —
equal the warehouse's; the sealed archive of `inservice backfill` equals its manifest and files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from inservice.backfill.core import run_backfill, verify_archive
from inservice.cli import main as cli
from inservice.config import Settings
from inservice.ingest import ingest_paths
from inservice.warehouse import analyst
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Warehouse
from tests.conftest import RECEIVED, drop, fixture_cases, load_expected
from tests.test_backends import _load_plans
from tests.test_backfill import write_folder

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
    reason="no Java runtime for Spark (scripts/setup installs Debian's default-jre-headless)")]

# Spark's names of the declared types: the DDL's types must be what Spark reads back
SPARK_READ = {"VARCHAR": "string", "DATE": "date", "DECIMAL(5,1)": "decimal(5,1)", "TIMESTAMP": "timestamp_ntz",
              "TIMESTAMPTZ": "timestamp", "BOOLEAN": "boolean", "INTEGER": "int", "BIGINT": "bigint"}
CASES = ("clean-xlsx", "defects-xml", "defects-xlsx")  # rows, findings, refusals of rows


@dataclass(frozen=True)
class Built:
    settings: Settings
    lake: Path
    archive: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One small warehouse: partner fixture files through the normal ingest (2017), a school year's plans,
    a legacy archive migrated (courses of 2014–2016 loaded, 2010–2011 to the cold archive); then the lake."""
    root = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("INSERVICE_WAREHOUSE_URL", "INSERVICE_PSEUDONYM_KEY", "INSERVICE_ARCHIVE_CUTOFF"):
            mp.delenv(var, raising=False)
        mp.setenv("INSERVICE_HOME", str(root / "home"))
        settings = replace(Settings.from_env(root / "home"), warehouse=None)
        with WriteSession(settings) as wh:
            for code in ("T001", "T002", "T003"):
                wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
        for case in fixture_cases():
            if case.name in CASES:
                ingest_paths([drop(settings, load_expected(case)[1])], settings, RECEIVED)
        _load_plans(settings)
        report = run_backfill(settings, str(write_folder(root / "legacy")))
        assert report["balanced"] and report["archived"] > 0
        assert _cli(settings, "warehouse", "lake").startswith("{")
        yield Built(settings, settings.home / "lake", Path(report["archive"]["folder"]))


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pyspark.sql import SparkSession  # a test-only dependency (the dev extra), never imported by the package

    session = (SparkSession.builder.master("local[1]").appName("inservice-lake-test")
               .config("spark.ui.enabled", "false").config("spark.driver.memory", "512m")
               .config("spark.sql.shuffle.partitions", "1")
               # a short-lived JVM: the quick compiler only, one GC thread (measured: half the JVM's CPU time)
               .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
               # not UTC: TIMESTAMP_NTZ (wall time) must not move, TIMESTAMP (an instant) must stay the same instant
               .config("spark.sql.session.timeZone", "Asia/Taipei").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _cli(settings: Settings, *argv: str) -> str:
    """What `inservice --home … <argv>` prints."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli(["--home", str(settings.home), *argv]) == 0
    return out.getvalue()


def _run_statements(spark: Any, text: str) -> list[str]:
    """Each statement printed (they end with `;` and a newline), as a user pastes them into spark.sql."""
    statements = [s.strip() for s in text.split(";\n") if s.strip()]
    for statement in statements:
        spark.sql(statement)
    return statements


def _canonical(value: object) -> str:
    """One value as text, typed: an instant in UTC, a wall time as it is, a decimal with its scale."""
    if value is None:
        return "null"
    if isinstance(value, datetime):
        return "instant:" + value.astimezone(UTC).isoformat() if value.tzinfo else "wall:" + value.isoformat()
    if isinstance(value, date | Decimal):
        return f"{type(value).__name__}:{value}"
    return f"{type(value).__name__}:{value!r}"


def checksum(rows: Iterable[dict]) -> tuple[int, int]:
    """(rows, sum of each row's SHA-256 over its canonical text mod 2^64): independent of row order."""
    count = total = 0
    for row in rows:
        text = "\x1f".join(f"{k}={_canonical(row[k])}" for k in sorted(row))
        total = (total + int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")) % 2 ** 64
        count += 1
    return count, total


def _spark_rows(spark: Any, sql: str) -> list[dict]:
    return spark.sql(sql).toArrow().to_pylist()


@pytest.fixture(scope="module")
def registered(built: Built, spark: Any) -> list[str]:
    ddl = _cli(built.settings, "warehouse", "lake-ddl", "--engine", "spark", "--location", str(built.lake))
    return _run_statements(spark, ddl)


def test_lake_registers_from_the_printed_ddl_and_equals_the_warehouse(built: Built, spark: Any,
                                                                     registered: list[str]) -> None:
    assert {t.name for t in spark.catalog.listTables("inservice")} == set(analyst.LAKE_DECLARED)
    with Warehouse(built.settings, read_only=True) as wh:
        for table, declared in analyst.LAKE_DECLARED.items():
            names = [c.name for c in declared.columns]
            read = spark.table(f"inservice.{table}").schema
            assert {f.name: f.dataType.simpleString() for f in read if f.name in names} == {
                c.name: SPARK_READ[c.type] for c in declared.columns}, table
            cols = ", ".join(f'"{n}"' for n in names)
            stored = wh.con.sql(f"SELECT {cols} FROM ({analyst.LAKE_QUERIES[table].format(ym='NULL')})")
            expected = checksum(stored.to_arrow_table().to_pylist())
            got = checksum(_spark_rows(spark, f"SELECT {', '.join(f'`{n}`' for n in names)} FROM inservice.{table}"))
            assert got == expected, table
            if table in ("courses", "attendance", "findings", "school_register", "teacher_plans"):
                assert expected[0] > 0, table  # a comparison of empty tables proves nothing
    # the typed values arrive as typed values, with the columns' Chinese comments
    hours = spark.sql("SELECT hours, start_date, modified_at FROM inservice.courses WHERE hours IS NOT NULL LIMIT 1")
    assert [f.dataType.simpleString() for f in hours.schema] == ["decimal(5,1)", "date", "timestamp_ntz"]
    described = {r.col_name: r.comment for r in spark.sql("DESCRIBE TABLE inservice.courses").collect()}
    assert described["hours"] == "研習時數" and described["unit_code"] == "單位代碼"
    # the partition columns hold each row's own year and month
    assert spark.sql("""SELECT count(*) FROM inservice.courses
        WHERE year <> year(start_date) OR month <> month(start_date)""").collect()[0][0] == 0


def _scan(df: Any) -> str:
    return df._jdf.queryExecution().executedPlan().toString()


def _files_read(df: Any) -> tuple[int, int]:
    """Run the query; the scan's own metrics: (files read, rows out of the scan)."""
    plan = df._jdf.queryExecution().executedPlan()
    plan.executeCollect()
    leaves = plan.collectLeaves().iterator()
    scans = []
    while leaves.hasNext():
        metrics = leaves.next().metrics()
        scans.append((metrics.get("numFiles").get().value(), metrics.get("numOutputRows").get().value()))
    assert len(scans) == 1
    return scans[0]


def test_a_query_on_one_partition_reads_only_its_files(built: Built, spark: Any, registered: list[str]) -> None:
    years = sorted(int(p.name.split("=")[1]) for p in (built.lake / "attendance").iterdir())
    assert len(years) >= 3  # the fixtures' 2017 and the legacy courses of 2015–2016
    all_files = spark.table("inservice.attendance").inputFiles()
    for year in years:
        df = spark.table("inservice.attendance").where(f"year = {year}")
        files = df.inputFiles()
        assert files and all(f"/attendance/year={year}/" in f for f in files)
        assert len(files) < len(all_files)
        plan = _scan(df)
        assert "PartitionFilters: [isnotnull(year" in plan and f"= {year})]" in plan
        # executed: the scan opened that year's files only, and they hold exactly that year's rows
        on_disk = len(list((built.lake / "attendance" / f"year={year}").rglob("*.parquet")))
        with Warehouse(built.settings, read_only=True) as wh:
            assert _files_read(df) == (on_disk, wh.con.execute("""SELECT count(*) FROM attendance a JOIN courses c
                ON c.unit_code = a.unit_code AND c.course_code = a.course_code
                WHERE extract(year FROM c.start_date) = ?""", [year]).fetchone()[0])
    assert _files_read(spark.table("inservice.attendance"))[0] == len(all_files) > on_disk
    # a month within a year, and the plans by school year
    month = spark.table("inservice.courses").where("year = 2017 AND month = 5")
    assert month.inputFiles() and all("/courses/year=2017/month=5/" in f for f in month.inputFiles())
    plans = spark.table("inservice.teacher_plans").where("school_year = 105")
    assert "PartitionFilters: [isnotnull(school_year" in _scan(plans) and plans.count() > 0
    assert spark.table("inservice.teacher_plans").where("school_year = 104").inputFiles() == []


def test_cold_archive_registers_and_equals_its_manifest(built: Built, spark: Any) -> None:
    assert verify_archive(built.archive) == []  # every file whole, as sealed
    manifest = json.loads((built.archive / "manifest.json").read_text(encoding="utf-8"))
    ddl = _cli(built.settings, "warehouse", "lake-ddl", "--engine", "spark", "--archive", str(built.archive))
    _run_statements(spark, ddl)
    for table in analyst.ARCHIVE_TABLES:
        names = [c.name for c in analyst.archive_columns(table)]
        read = {f.name: f.dataType.simpleString() for f in spark.table(f"inservice_archive.{table}").schema}
        assert read == {**{c.name: SPARK_READ[c.type] for c in analyst.archive_columns(table)}, "year": "int"}
        per_year = {int(r[0]): r[1] for r in spark.sql(
            f"SELECT year, count(*) FROM inservice_archive.{table} GROUP BY year").collect()}
        in_manifest: dict[int, int] = {}
        for f in manifest["files"]:
            if f["table"] == table:
                in_manifest[int(f["year"])] = in_manifest.get(int(f["year"]), 0) + f["rows"]
        assert per_year == in_manifest and sum(per_year.values()) == manifest["rows"][table] > 0
        # the files as another engine reads them (DuckDB, Hive partitions) against Spark's rows
        cols = ", ".join(f'"{n}"' for n in [*names, "year"])
        files = duckdb.sql(f"""SELECT {cols} FROM read_parquet('{built.archive}/{table}/*/*.parquet',
            hive_partitioning = true, hive_types = {{'year': INTEGER}})""").to_arrow_table().to_pylist()
        got = _spark_rows(spark, f"SELECT {', '.join(f'`{n}`' for n in [*names, 'year'])} "
                                 f"FROM inservice_archive.{table}")
        assert checksum(got) == checksum(files), table
        year = min(in_manifest)
        one = spark.table(f"inservice_archive.{table}").where(f"year = {year}").inputFiles()
        assert one and all(f"/{table}/year={year}/" in f for f in one)


def test_the_printed_ddl_run_again_follows_a_rewritten_lake(built: Built, spark: Any, registered: list[str],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs last (it rewrites the module's lake). `inservice warehouse lake` replaces each table's folder:
    the same statements run again in the same session bring Spark to the new lake — partitions that are
    gone dropped, files rewritten read anew."""
    monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
    other = replace(Settings.from_env(tmp_path / "home"), warehouse=None)  # only 2017's partner files
    with WriteSession(other) as wh:
        for code in ("T001", "T002", "T003"):
            wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
    case = next(c for c in fixture_cases() if c.name == "clean-xlsx")
    ingest_paths([drop(other, load_expected(case)[1])], other, RECEIVED)
    _cli(other, "warehouse", "lake", "--dest", str(built.lake))
    _run_statements(spark, "".join(f"{s};\n" for s in registered))  # the same printed text
    assert {r[0].split("/")[0] for r in spark.sql("SHOW PARTITIONS inservice.courses").collect()} == {"year=2017"}
    with Warehouse(other, read_only=True) as wh:
        for table in ("courses", "attendance", "units", "school_plans"):
            names = [c.name for c in analyst.LAKE_DECLARED[table].columns]
            stored = wh.con.sql(f"SELECT {', '.join(names)} FROM ({analyst.LAKE_QUERIES[table].format(ym='NULL')})")
            got = _spark_rows(spark, f"SELECT {', '.join(f'`{n}`' for n in names)} FROM inservice.{table}")
            assert checksum(got) == checksum(stored.to_arrow_table().to_pylist()), table
