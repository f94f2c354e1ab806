"""No path publishes from a warehouse that fails a blocking check.

A real upload is loaded, then one violation per blocking check is put into the warehouse; the
monthly statistics, the yearbook and the county export are then asked for through the CLI (in
process and as a real `inservice` process) and through Dagster (the publication jobs, the asset's
own "Materialize", which runs no check step, and the county export job). Each must write nothing:
no file under publish/, no stat_* row, no snapshot, no materialization — and name the failed check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from inservice.assets.publish import monthly_statistics, yearbook_extract
from inservice.assets.shared import InserviceResource
from inservice.cli import main
from inservice.config import Settings
from inservice.pipelines.definitions import defs
from inservice.warehouse import checks
from inservice.warehouse.store import Warehouse
from tests.conftest import FIXTURES, RECEIVED, drop

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")
REPO = Path(__file__).resolve().parents[1]
MONTH, YEAR = "2017-05", "2017"

ONE_ROW = "(SELECT min(course_code) FROM main.courses)"
# one violation per blocking check: (check key, statements, needs DuckDB: PostgreSQL's unique indexes
# refuse the duplicate itself)
VIOLATIONS: list[tuple[str, list[str], bool]] = [
    ("courses.unique_key", [f"INSERT INTO main.courses SELECT * FROM main.courses WHERE course_code = {ONE_ROW}"],
     True),
    ("courses.cutoff_respected",
     [f"UPDATE main.courses SET start_date = DATE '2012-06-01' WHERE course_code = {ONE_ROW}"], False),
    ("courses.no_national_id", [f"UPDATE main.courses SET title = '研習 A123456789' WHERE course_code = {ONE_ROW}"],
     False),
    ("attendance.unique_key", ["INSERT INTO main.attendance SELECT * FROM main.attendance WHERE teacher_key = "
                               "(SELECT min(teacher_key) FROM main.attendance)"], True),
    ("attendance.has_course", ["INSERT INTO testing.attendance SELECT * FROM main.attendance WHERE teacher_key = "
                               "(SELECT min(teacher_key) FROM main.attendance)"], False),
    ("attendance.no_national_id", ["UPDATE main.attendance SET school_code = 'A123456789' WHERE teacher_key = "
                                   "(SELECT min(teacher_key) FROM main.attendance)"], False),
    ("upload_log.no_national_id", ["UPDATE main.uploads SET file_name = 'A123456789.xlsx'"], False),
]
IDS = [v[0] for v in VIOLATIONS]


def loaded(settings: Settings) -> str:
    """The sample T002 workbook loaded; returns the county its courses are in."""
    src = FIXTURES / "clean-xlsx" / "T002" / "T002_201705.xlsx"
    assert main(["ingest", str(drop(settings, src)), "--received-at", RECEIVED]) == 0
    with Warehouse(settings, read_only=True) as wh:
        [(county,)] = wh.con.execute("SELECT county_code FROM main.courses GROUP BY 1 ORDER BY count(*) DESC, 1 "
                                     "LIMIT 1").fetchall()
    return county


def violate(settings: Settings, statements: list[str], backend: str, duckdb_only: bool) -> None:
    if duckdb_only and backend != "duckdb":
        pytest.skip("PostgreSQL's unique index refuses the duplicate itself")
    with Warehouse(settings) as wh:
        for sql in statements:
            wh.con.execute(sql)
    assert failing_keys(settings), "the violation must fail its check"


def failing_keys(settings: Settings) -> list[str]:
    with Warehouse(settings, read_only=True) as wh:
        return [c.key for c, _ in checks.failing(wh.con, settings.archive_cutoff)]


def published_nothing(settings: Settings) -> None:
    publish = settings.home / "publish"
    assert not publish.exists() or not any(p.is_file() for p in publish.rglob("*")), list(publish.rglob("*"))
    with Warehouse(settings, read_only=True) as wh:
        for table in ("stat_publications", "yearbook_snapshots", "stat_monthly_course_county_level"):
            exists = wh.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                    [table]).fetchone()[0]
            if exists:
                assert wh.con.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0] == 0, table


PUBLICATIONS: dict[str, Callable[[str], list[str]]] = {
    "monthly": lambda county: ["stats", "--month", MONTH],
    "yearbook": lambda county: ["yearbook", "--year", YEAR],
    "export": lambda county: ["export", "--county", county, "--from", "2017-01", "--to", "2017-12"],
}


def every_check_with_every_publication() -> list:
    """Every (check, publication) pair; the fast tier keeps one publication per check, in turn, so that each
    check and each publication is in it."""
    names = sorted(PUBLICATIONS)
    return [pytest.param(publication, check, statements, duckdb_only, id=f"{check}-{publication}",
                         marks=() if names.index(publication) == i % len(names) else pytest.mark.slow)
            for i, (check, statements, duckdb_only) in enumerate(VIOLATIONS) for publication in names]


@pytest.mark.parametrize(("publication", "check", "statements", "duckdb_only"), every_check_with_every_publication())
def test_cli_publishes_nothing_while_a_check_fails(settings: Settings, warehouse_backend: str, publication: str,
                                                   check: str, statements: list[str], duckdb_only: bool,
                                                   capsys: pytest.CaptureFixture) -> None:
    county = loaded(settings)
    violate(settings, statements, warehouse_backend, duckdb_only)
    assert failing_keys(settings) == [check]
    capsys.readouterr()
    assert main([*PUBLICATIONS[publication](county), "--json"]) == 3
    err = capsys.readouterr().err
    assert check in err and "not published" in err and "A123456789" not in err
    published_nothing(settings)


@pytest.mark.slow
def test_cli_process_names_the_check_and_exits_non_zero(settings: Settings, warehouse_backend: str) -> None:
    loaded(settings)
    violate(settings, VIOLATIONS[2][1], warehouse_backend, False)
    env = {**os.environ, "INSERVICE_HOME": str(settings.home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "inservice.cli", "stats", "--month", MONTH], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "courses.no_national_id" in proc.stderr and "Traceback" not in proc.stderr
    published_nothing(settings)


@pytest.mark.slow
def test_cli_publishes_once_the_warehouse_is_fixed(settings: Settings, warehouse_backend: str) -> None:
    county = loaded(settings)
    violate(settings, VIOLATIONS[2][1], warehouse_backend, False)
    assert main(["stats", "--month", MONTH]) == 3
    with Warehouse(settings) as wh:  # staff fix the row the check named
        wh.con.execute(f"UPDATE main.courses SET title = '研習' WHERE course_code = {ONE_ROW}")
    assert failing_keys(settings) == []
    for publication in sorted(PUBLICATIONS):
        assert main(PUBLICATIONS[publication](county)) == 0
    assert (settings.home / "publish" / "monthly" / MONTH / f"stats-{MONTH}.xlsx").is_file()


# --- through Dagster ---------------------------------------------------------------------------------------
@pytest.fixture
def on_duckdb(warehouse_backend: str) -> None:
    if warehouse_backend != "duckdb":
        pytest.skip("the gate is the core's, tested on both backends above; these Dagster paths on DuckDB")


@pytest.fixture
def instance(tmp_path: Path):  # noqa: ANN201 - a Dagster instance
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def no_materialization(instance: dg.DagsterInstance, asset: str) -> None:
    assert instance.get_latest_materialization_event(dg.AssetKey(asset)) is None


@pytest.mark.slow
@pytest.mark.parametrize(("check", "statements", "duckdb_only"), VIOLATIONS, ids=IDS)
def test_asset_page_materialize_publishes_nothing(settings: Settings, warehouse_backend: str,
                                                  instance: dg.DagsterInstance, check: str,
                                                  statements: list[str], duckdb_only: bool) -> None:
    """"Materialize" on the asset page runs no check step: the core's gate still refuses."""
    loaded(settings)
    violate(settings, statements, warehouse_backend, duckdb_only)
    result = dg.materialize([monthly_statistics], partition_key=MONTH, instance=instance,
                            resources={"inservice": InserviceResource()}, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert check in failure.event_specific_data.error.message
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)  # data, not luck
    no_materialization(instance, "monthly_statistics")
    published_nothing(settings)


@pytest.mark.slow
@pytest.mark.parametrize("job", ["publish_monthly", "publish_yearbook"])
@pytest.mark.usefixtures("on_duckdb")
def test_publication_jobs_stop_at_the_failed_check(settings: Settings, instance: dg.DagsterInstance,
                                                   job: str) -> None:
    loaded(settings)
    violate(settings, VIOLATIONS[5][1], "duckdb", False)  # an ID in attendance.school_code
    partition = MONTH if job == "publish_monthly" else YEAR
    result = defs.resolve_job_def(job).execute_in_process(partition_key=partition, instance=instance,
                                                          raise_on_error=False)
    assert not result.success
    failed = {(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
              if not e.passed}
    assert failed == {("attendance", "no_national_id")}
    no_materialization(instance, "monthly_statistics")
    no_materialization(instance, "yearbook_extract")
    published_nothing(settings)


RANGE = {"dagster/asset_partition_range_start": "2017-04", "dagster/asset_partition_range_end": "2017-05"}


@pytest.mark.slow
@pytest.mark.usefixtures("on_duckdb")
def test_a_backfill_of_many_months_is_one_run_and_publishes_nothing_while_blocked(
        settings: Settings, instance: dg.DagsterInstance) -> None:
    loaded(settings)
    assert monthly_statistics.backfill_policy == dg.BackfillPolicy.single_run()
    assert yearbook_extract.backfill_policy == dg.BackfillPolicy.single_run()
    resources = {"inservice": InserviceResource()}
    with Warehouse(settings) as wh:
        wh.con.execute(VIOLATIONS[6][1][0])
    result = dg.materialize([monthly_statistics], instance=instance, resources=resources, tags=RANGE,
                            raise_on_error=False)
    assert not result.success
    no_materialization(instance, "monthly_statistics")
    published_nothing(settings)
    with Warehouse(settings) as wh:  # fixed: one run publishes both months of the range
        wh.con.execute("UPDATE main.uploads SET file_name = 'T002_201705.xlsx'")
    result = dg.materialize([monthly_statistics], instance=instance, resources=resources, tags=RANGE)
    assert result.success
    for month in ("2017-04", "2017-05"):
        assert (settings.home / "publish" / "monthly" / month / f"stats-{month}.xlsx").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("on_duckdb")
def test_county_export_job_refuses_then_exports(settings: Settings, instance: dg.DagsterInstance) -> None:
    county = loaded(settings)
    violate(settings, VIOLATIONS[1][1], "duckdb", False)  # a course before the archive cutoff
    config = {"ops": {"export_county_records": {"config": {"county": county, "from_month": "2017-01",
                                                           "to_month": "2017-12"}}}}
    job = defs.resolve_job_def("publish_county_export")
    result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "courses.cutoff_respected" in failure.event_specific_data.error.message
    published_nothing(settings)
    with Warehouse(settings) as wh:  # an approval letter covers the archived course: the check passes
        wh.add_exception("T002", None, "臺教師(三)字第1060000001號", date(2017, 1, 1), date(2017, 12, 31))
    result = job.execute_in_process(run_config=config, instance=instance)
    files = [Path(f) for f in result.output_for_node("export_county_records")["files"]]
    assert files and all(f.is_file() for f in files)
