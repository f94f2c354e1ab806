"""Dagster over the core, headless and real: definitions, the inbox sensor, runs on real files,
checks, retries, and the run queue that keeps warehouse runs from overlapping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from inservice.assets.shared import InserviceResource
from inservice.config import Settings
from inservice.corrections.lifecycle import set_state
from inservice.pipelines.definitions import defs
from inservice.warehouse import analyst, checks
from inservice.warehouse.store import Warehouse
from tests.conftest import table_snapshot

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "inservice" / "sample_inbox"
RESOURCES = {"inservice": InserviceResource()}

warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def drop_samples(settings: Settings, units: tuple[str, ...] = ("T001", "T002", "T003")) -> None:
    for unit in units:
        shutil.copytree(SAMPLE / unit, settings.inbox / unit, dirs_exist_ok=True)
        for f in (settings.inbox / unit).iterdir():
            f.chmod(0o644)  # the packaged samples are read-only; a partner's upload is not


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("inbox_sensor")
    ctx = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                  resources=RESOURCES, definitions=defs)
    return sensor.evaluate_tick(ctx)


def requests_after_two_ticks(instance: dg.DagsterInstance, cursor: str | None = None) -> tuple[list, str]:
    first = tick(instance, cursor)
    assert first.run_requests == []  # new files wait one tick
    second = tick(instance, first.cursor)
    for req in second.dynamic_partitions_requests or []:  # what the daemon does before launching
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return list(second.run_requests), second.cursor


def execute(rr: dg.RunRequest, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(rr.job_name)
    return job.execute_in_process(run_config=rr.run_config, partition_key=rr.partition_key, instance=instance,
                                  tags=rr.tags, **kwargs)


def launch(job_name: str, instance: dg.DagsterInstance, config: dict, partition: dg.MultiPartitionKey | None = None,
           **kwargs) -> dg.ExecuteInProcessResult:
    op = "partner_upload" if job_name == "ingest_upload" else "unsorted_upload"
    return defs.resolve_job_def(job_name).execute_in_process(
        run_config={"ops": {op: {"config": config}}}, partition_key=partition, instance=instance, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in mat.materialization.metadata.items()}


def key(unit: str, month: str = "2017-05") -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"unit": unit, "month": month})


# --- definitions ------------------------------------------------------------------------------------------
@pytest.mark.slow  # a `dagster` process
def test_workspace_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {**os.environ, "INSERVICE_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path),
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(["dagster", "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "[tool.dagster]" not in pyproject and "[tool.dg]" not in pyproject  # workspace.yaml is the loader


def test_definitions_groups_owners_pools_checks_sensor() -> None:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert {k: g for k, g in groups.items() if g != "publish"} == {
        "partner_upload": "ingest", "unsorted_upload": "ingest", "partner_feed": "ingest", "upload_overview": "ingest",
        "legacy_archive": "ingest", "courses": "warehouse", "attendance": "warehouse", "upload_log": "warehouse",
        "correction_workbook": "corrections", "correction_log": "corrections", "archive_exceptions": "corrections",
        "receipt_mail": "partners", "missing_month_reminders": "partners", "refusal_digest": "partners",
        "partner_history": "partners", "partner_contract": "partners",
        "archive_replay": "corrections",
        "plan_export": "plans", "plan_tables": "plans", "plan_participation": "plans", "plan_demand": "plans",
        "plan_supply": "plans", "plan_fulfilment": "plans"}
    for name in ("partner_upload", "unsorted_upload", "courses", "attendance", "upload_log"):
        node = graph.get(dg.AssetKey(name))
        assert node.description and node.owners == ["team:data-engineering"]
        assert node.pools == {"warehouse"}
    upload = graph.get(dg.AssetKey("partner_upload"))
    assert isinstance(upload.partitions_def, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in upload.partitions_def.partitions_defs}
    assert isinstance(dims["unit"], dg.DynamicPartitionsDefinition) and dims["unit"].name == "unit"
    assert isinstance(dims["month"], dg.MonthlyPartitionsDefinition)
    assert dims["month"].get_first_partition_key() == "2013-01"
    check_keys = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {("courses", "unique_key"), ("courses", "cutoff_respected"), ("courses", "no_national_id"),
            ("attendance", "unique_key"), ("attendance", "has_course"), ("attendance", "no_national_id"),
            ("upload_log", "no_national_id")} <= check_keys
    for check_key in graph.asset_check_keys:
        if check_key.asset_key.to_user_string() in ("courses", "attendance", "upload_log"):
            assert graph.get_check_spec(check_key).blocking
    # every publish asset (when that module exists) sits downstream of the checked tables
    for k, g in groups.items():
        if g == "publish":
            assert {"courses", "attendance"} <= {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys}
    sensor = defs.resolve_sensor_def("inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {j.name for j in repo.get_all_jobs()} >= {"ingest_upload", "ingest_unsorted_upload"}


def test_instance_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    inst = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
        pools = inst.get_concurrency_config().pool_config
        assert pools.pool_granularity.value == "run" and pools.default_pool_limit == 1
    finally:
        inst.dispose()
    from dagster._config import process_config
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(var, var.lower())
    config = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    processed = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert processed.success, processed.errors
    assert pg_url_from_config(processed.value).startswith("postgresql+psycopg2://")


# --- the sensor -------------------------------------------------------------------------------------------
def test_sensor_one_run_request_per_new_file(settings: Settings, instance: dg.DagsterInstance) -> None:
    drop_samples(settings)
    (settings.inbox / "_corrections").mkdir()
    (settings.inbox / "_corrections" / "T001_201705.xlsx").write_bytes(b"another feature's")
    (settings.inbox / "T001" / "T001-201705.xlsx").write_bytes(b"no data month in this name")
    requests, cursor = requests_after_two_ticks(instance)
    by_file = {rr.tags["inservice/file"]: rr for rr in requests}
    assert set(by_file) == {"T001_201705.xml", "T002_201705.xlsx", "T003_201705.xlsx", "T001-201705.xlsx"}
    assert len({rr.run_key for rr in requests}) == 4
    rr = by_file["T002_201705.xlsx"]
    assert rr.job_name == "ingest_upload" and rr.partition_key == "2017-05|T002"
    assert rr.run_key.startswith("T002/T002_201705.xlsx/") and len(rr.run_key.split("/")[2]) == 64
    cfg = rr.run_config["ops"]["partner_upload"]["config"]
    assert cfg["file_name"] == "T002_201705.xlsx" and cfg["content_hash"] == rr.run_key.split("/")[2]
    assert by_file["T001-201705.xlsx"].job_name == "ingest_unsorted_upload"
    assert by_file["T001-201705.xlsx"].partition_key is None
    # units became partitions once each, not one per file
    assert sorted(instance.get_dynamic_partitions("unit")) == ["T001", "T002", "T003"]
    # the warehouse pool got its limit before the first run was queued
    assert instance.event_log_storage.get_concurrency_info("warehouse").slot_count == 1
    # next tick, and the same tick replayed from the stored JSON cursor: nothing new
    assert tick(instance, cursor).run_requests == []
    assert tick(instance, json.loads(json.dumps(cursor))).run_requests == []
    # a file still being written waits until size and mtime hold still
    growing = settings.inbox / "T002" / "T002_201706.xlsx"
    growing.write_bytes(b"part")
    after = tick(instance, cursor)
    growing.write_bytes(b"part and more")
    assert tick(instance, after.cursor).run_requests == []


@pytest.mark.slow
def test_sensor_run_on_sample_inbox_loads_archives_and_never_twice(settings: Settings,
                                                                   instance: dg.DagsterInstance) -> None:
    drop_samples(settings)
    requests, cursor = requests_after_two_ticks(instance)
    assert len(requests) == 3
    for rr in requests:
        result = execute(rr, instance)
        assert result.success
        unit = rr.tags["inservice/unit"]
        meta = metadata(result, "partner_upload")
        assert meta["status"] == "loaded" and meta["refusal"] == "none"
        assert meta["courses_accepted"] > 0 and meta["attendance_accepted"] > 0
        assert 0 <= meta["refusal_rate"] < 1
        assert meta["on_time"] == "late"  # received now (the file's arrival), for a 2017 data month
        assert Path(meta["receipt"]).is_file() and Path(meta["receipt"]).parent == settings.outbox / unit
        assert Path(meta["receipt_xlsx"]).is_file()
        # the step after the commit, shown: the analysts' copy now holds this load
        assert meta["analyst_access"] == "copy" and meta["analyst_rows"] > 0
        # the core six, tags, five plan tables, the lights view; the registers, reference tables, bridges
        assert meta["analyst_tables"] == 13 + len(analyst.REFERENCE_TABLES)
        assert "| rule | severity | rows |" in meta["top_rules"] or meta["top_rules"] == "No findings."
        assert Path(meta["original"]) == settings.home / "archive" / unit / "201705" / rr.tags["inservice/file"]
        assert Path(meta["original"]).is_file()
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 8 and all(e.passed for e in evaluations)  # 7 blocking + upload_accepted
        assert rr.tags["inservice/content"] == rr.run_key
        assert instance.get_run_by_id(result.run_id).tags["inservice/status"] == "loaded"
        assert metadata(result, "courses")["dagster/row_count"] > 0
    assert list((settings.inbox / "T001").iterdir()) == []
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM uploads WHERE status = 'loaded'").fetchone()[0] == 3
        receipts = wh.con.execute("SELECT receipt_json FROM uploads").fetchall()
    assert all(Path(r[0]).is_file() for r in receipts)
    assert tick(instance, cursor).run_requests == []
    # a partner re-copies the same bytes: answered as a duplicate (F08) with its receipt, and archived —
    # never left in the inbox unanswered; the data tables do not change
    before = table_snapshot(settings)
    shutil.copyfile(settings.home / "archive/T002/201705/T002_201705.xlsx", settings.inbox / "T002/T002_201705.xlsx")
    [resend], cursor = requests_after_two_ticks(instance, cursor)
    assert resend.run_key.startswith(resend.tags["inservice/content"] + "@")  # keyed by its arrival
    result = execute(resend, instance)
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "duplicate" and meta["refusal"] == "F08" and Path(meta["receipt"]).is_file()
    assert instance.get_run_by_id(result.run_id).tags["inservice/status"] == "duplicate"
    assert not (settings.inbox / "T002/T002_201705.xlsx").exists()
    assert Path(meta["original"]).is_file() and settings.home / "archive" in Path(meta["original"]).parents
    after = table_snapshot(settings)
    assert {t: after[t] for t in ("courses", "attendance")} == {t: before[t] for t in ("courses", "attendance")}
    assert tick(instance, cursor).run_requests == []  # answered once


@pytest.mark.slow
def test_rerun_from_archive_and_from_quarantine(settings: Settings, instance: dg.DagsterInstance) -> None:
    with Warehouse(settings) as wh:
        set_state(wh, "T003", "sealed", "府教字第1號")
    drop_samples(settings, ("T002", "T003"))
    requests, _ = requests_after_two_ticks(instance)
    for rr in requests:
        assert execute(rr, instance).success
    quarantined = settings.home / "quarantine/T003/T003_201705.xlsx"
    assert quarantined.is_file()  # sealed unit: refused F06
    # re-run the archived original by naming it: the core calls it a duplicate; nothing changes
    before = table_snapshot(settings)
    result = launch("ingest_upload", instance, {"file_name": "T002_201705.xlsx"}, key("T002"))
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "duplicate" and meta["refusal"] == "F08"
    recorded = ("uploads", "findings")  # the duplicate is recorded there, and written nowhere else
    assert {k: v for k, v in table_snapshot(settings).items() if k not in recorded} == {
        k: v for k, v in before.items() if k not in recorded}
    assert (settings.home / "archive/T002/201705/T002_201705.xlsx").is_file()
    # the unit re-applies (sealed → testing) and is promoted; re-running its partition picks up the
    # quarantined file and loads it
    with Warehouse(settings) as wh:
        set_state(wh, "T003", "testing", "府教字第2號")
        set_state(wh, "T003", "production", "府教字第3號")
    result = launch("ingest_upload", instance, {"received_at": "2017-06-03T10:00:00+08:00"}, key("T003"))
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "loaded" and meta["on_time"] == "on time"
    assert not quarantined.exists()
    assert (settings.home / "archive/T003/201705/T003_201705.xlsx").is_file()
    # nothing left to re-run, a file of another month, an unknown file: clear failures, no retries
    for config, partition in (({}, key("T003")), ({"file_name": "T003_201706.xlsx"}, key("T003")),
                              ({"file_name": "T002_201705.xlsx"}, key("T002", "2017-06"))):
        failed = launch("ingest_upload", instance, config, partition, raise_on_error=False)
        assert not failed.success
        assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in failed.all_events)
    # staff may ask for an explicit re-run of loaded content: the core reloads it (no F08)
    result = launch("ingest_upload", instance, {"file_name": "T002_201705.xlsx", "rerun": True}, key("T002"),
                    raise_on_error=False)
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "loaded" and "-rerun" in meta["upload_id"]
    evaluations = result.get_asset_check_evaluations()  # a re-run's upload id must not look like an ID
    assert len(evaluations) == 8 and all(e.passed for e in evaluations)
    assert (settings.home / "archive/T002/201705/T002_201705.xlsx").is_file()


def test_unsorted_upload_is_refused_and_quarantined(settings: Settings, instance: dg.DagsterInstance) -> None:
    (settings.inbox / "T001").mkdir(parents=True)
    (settings.inbox / "T001" / "T001-201705.xlsx").write_bytes(b"not even a workbook")
    [rr], _ = requests_after_two_ticks(instance)
    result = execute(rr, instance)
    assert result.success
    meta = metadata(result, "unsorted_upload")
    assert meta["status"] == "refused" and meta["refusal"] == "F03" and meta["refusal_rate"] == 1.0
    assert (settings.home / "quarantine/T001/T001-201705.xlsx").read_bytes() == b"not even a workbook"


# --- checks -----------------------------------------------------------------------------------------------
def loaded_sample(settings: Settings, instance: dg.DagsterInstance, unit: str = "T002") -> None:
    drop_samples(settings, (unit,))
    [rr], _ = requests_after_two_ticks(instance)
    assert execute(rr, instance).success


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_check_functions_catch_each_violation(settings: Settings, instance: dg.DagsterInstance) -> None:
    loaded_sample(settings, instance)
    with Warehouse(settings) as wh:
        con = wh.con
        for fn in (checks.courses_unique, checks.attendance_unique, checks.attendance_has_course,
                   checks.raw_national_ids):
            assert fn(con)[0], fn.__name__
        assert checks.cutoff_respected(con, settings.archive_cutoff)[0]
        con.execute("INSERT INTO courses SELECT * FROM courses LIMIT 1")
        con.execute("INSERT INTO testing.attendance SELECT * FROM attendance LIMIT 2")
        con.execute("UPDATE uploads SET file_name = 'A123456789.xlsx'")  # a raw ID where text goes
        con.execute("UPDATE courses SET start_date = DATE '2012-06-01' WHERE course_code = "
                    "(SELECT max(course_code) FROM courses)")
        passed, details = checks.courses_unique(con)
        assert not passed and details["duplicated_keys"] == 1 and details["by_area"]["main"] == 1
        passed, details = checks.attendance_has_course(con)
        assert not passed and details["by_area"]["testing"] == 2
        passed, details = checks.raw_national_ids(con)
        assert not passed and len(details["rows_with_ids_by_column"]) == 1
        assert "A123456789" not in json.dumps(details)  # details never repeat the ID
        passed, details = checks.cutoff_respected(con, settings.archive_cutoff)
        assert not passed and details["uncovered_courses"] == 1
        # an approval letter valid when the upload was received covers it
        wh.add_exception("T002", None, "臺教師(三)字第1060000001號", date(2000, 1, 1), date(2099, 12, 31))
        assert checks.cutoff_respected(con, settings.archive_cutoff)[0]


@pytest.mark.slow
def test_a_failed_check_blocks_downstream_publishing(settings: Settings, instance: dg.DagsterInstance,
                                                     tmp_path: Path) -> None:
    loaded_sample(settings, instance)
    published = tmp_path / "published.txt"

    @dg.asset(deps=["courses", "attendance"], group_name="publish")
    def monthly_report() -> None:  # stands for any publish asset: reads the warehouse, writes a file
        published.write_text("published")

    from inservice.assets.uploads import UPLOAD_ASSETS
    from inservice.assets.warehouse import WAREHOUSE_ASSETS, WAREHOUSE_CHECKS

    job = dg.define_asset_job("publish_test", selection=dg.AssetSelection.assets("courses", "attendance",
                                                                                   "monthly_report"))
    test_defs = dg.Definitions(assets=[*UPLOAD_ASSETS, *WAREHOUSE_ASSETS, monthly_report],
                               asset_checks=WAREHOUSE_CHECKS, jobs=[job], resources=RESOURCES,
                               executor=dg.in_process_executor)
    with Warehouse(settings) as wh:
        wh.con.execute("INSERT INTO attendance SELECT * FROM attendance LIMIT 1")
    result = test_defs.resolve_job_def("publish_test").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failed = {(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
              if not e.passed}
    assert failed == {("attendance", "unique_key")}
    assert not published.exists()
    with Warehouse(settings) as wh:  # fixed: publishing goes ahead
        wh.con.execute("CREATE TEMP TABLE a AS SELECT DISTINCT * FROM attendance")
        wh.con.execute("DELETE FROM attendance")
        wh.con.execute("INSERT INTO attendance SELECT * FROM a")
    assert test_defs.resolve_job_def("publish_test").execute_in_process(instance=instance).success
    assert published.read_text() == "published"


# --- failures and retries ---------------------------------------------------------------------------------
RUN_ONE = """
import sys, warnings
warnings.simplefilter("ignore")
import dagster as dg
from inservice.pipelines.definitions import defs
inst = dg.DagsterInstance.ephemeral()
inst.add_dynamic_partitions("unit", ["T002"])
defs.resolve_job_def("ingest_upload").execute_in_process(
    run_config={"ops": {"partner_upload": {"config": {"file_name": "T002_201705.xlsx"}}}},
    partition_key=dg.MultiPartitionKey({"unit": "T002", "month": "2017-05"}), instance=inst)
"""


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_a_run_killed_mid_merge_leaves_warehouse_and_inbox_as_before(settings: Settings) -> None:
    drop_samples(settings, ("T002",))
    before = table_snapshot(settings)
    env = {**os.environ, "INSERVICE_FAILPOINT": "merge.before_commit"}
    proc = subprocess.run([sys.executable, "-c", RUN_ONE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert table_snapshot(settings) == before
    assert (settings.inbox / "T002/T002_201705.xlsx").is_file()
    assert not (settings.home / "archive").exists()


HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.slow
def test_a_locked_warehouse_is_retried_with_backoff(settings: Settings, instance: dg.DagsterInstance,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSERVICE_LOCK_TIMEOUT", "0.5")  # the core waits that long for the file, then WarehouseBusy
    drop_samples(settings, ("T002",))
    [rr], _ = requests_after_two_ticks(instance)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(settings.warehouse_path), "3"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = execute(rr, instance)
    finally:
        holder.kill()
        holder.wait()
    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert metadata(result, "partner_upload")["status"] == "loaded"


# --- the run queue ----------------------------------------------------------------------------------------
def launched_at(instance: dg.DagsterInstance, run_id: str) -> float:
    [record] = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_STARTING).records
    return record.event_log_entry.timestamp


@pytest.mark.slow
def test_queued_warehouse_runs_never_overlap(settings: Settings, tmp_path: Path) -> None:
    """The real daemon (sensor + run queue) with deploy/dagster.yaml: two uploads, two runs, one at a time."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    drop_samples(settings, ("T002", "T003"))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "INSERVICE_HOME": str(settings.home),
           "INSERVICE_SENSOR_INTERVAL": "1", "DAGSTER_DISABLE_TELEMETRY": "1"}
    instance = dg.DagsterInstance.from_config(str(dagster_home))  # creates the storage before the daemon races for it
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(["dagster-daemon", "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        records: list = []
        while time.monotonic() < deadline:
            records = list(instance.get_run_records())
            done = [r for r in records if r.dagster_run.status in (dg.DagsterRunStatus.SUCCESS,
                                                                   dg.DagsterRunStatus.FAILURE)]
            if len(done) == 2:
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(1)
        assert len(records) == 2, (tmp_path / "daemon.log").read_text()[-3000:]
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        # a run is in progress from its launch (RUN_STARTING, its process starts) to its end
        spans = sorted((launched_at(instance, r.dagster_run.run_id), r.end_time) for r in records)
        assert spans[0][1] <= spans[1][0], f"runs overlapped: {spans}"
        for unit in ("T002", "T003"):
            assert (settings.home / f"archive/{unit}/201705/{unit}_201705.xlsx").is_file()
        # a re-copy of the same bytes: exactly one more run, which answers it (F08) and archives it
        shutil.copyfile(settings.home / "archive/T002/201705/T002_201705.xlsx",
                        settings.inbox / "T002/T002_201705.xlsx")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not [
                r for r in instance.get_run_records() if r.dagster_run.is_finished and
                r.dagster_run.tags.get("inservice/status") == "duplicate"]:
            time.sleep(1)
        time.sleep(6)  # ticks go by: nothing more
        runs = list(instance.get_run_records())
        assert len(runs) == 3, (tmp_path / "daemon.log").read_text()[-3000:]
        assert sorted(r.dagster_run.tags.get("inservice/status") for r in runs) == ["duplicate", "loaded", "loaded"]
        assert not (settings.inbox / "T002/T002_201705.xlsx").exists()
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        instance.dispose()
        log.close()


# --- the staff journey: refusals visible, the register decides partitions, re-runs, staff jobs ---------------
def run_tags(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> dict:
    return dict(instance.get_run_by_id(result.run_id).tags)


@pytest.mark.slow
def test_a_refused_upload_is_marked_on_its_run_and_partition(settings: Settings,
                                                             instance: dg.DagsterInstance) -> None:
    (settings.inbox / "T001").mkdir(parents=True)
    (settings.inbox / "T001" / "T001_201705.xlsx").write_bytes(b"not a workbook")  # F01
    [rr], _ = requests_after_two_ticks(instance)
    result = execute(rr, instance)
    assert result.success  # the pipeline worked; the upload is what was refused
    tags = run_tags(instance, result)
    assert tags["inservice/status"] == "refused" and tags["inservice/rule"] == "F01"
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "upload_accepted"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.partition == "2017-05|T001"
    assert evaluation.metadata["rules"].value == "F01"
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "refused"
    preview = meta["findings_preview"]
    assert [r.data["rule"] for r in preview.records] == ["F01"]
    # the month's overview lists T001 as refused only, and the other units as not yet sent
    overview = metadata(result, "upload_overview")
    table = overview["overview_2017-05"]
    assert "| T001 |" in table and "僅退件（F01）" in table and "| T002 |" in table and "未傳（逾期）" in table
    assert overview["refused_only_2017-05"] == 1 and overview["missing_2017-05"] == 2


def test_every_tag_key_of_ours_is_compliant() -> None:
    from dagster._utils.tags import is_valid_tag_key

    from inservice.assets.uploads import RULE_TAG, STATUS_TAG
    from inservice.pipelines.uploads import CONTENT_TAG, UPLOAD_TAG

    keys = {STATUS_TAG, RULE_TAG, CONTENT_TAG, UPLOAD_TAG, "inservice/unit", "inservice/file", "inservice/feed_day",
            "inservice/correction", "inservice/staff"}
    assert all(is_valid_tag_key(k) for k in keys)


def test_an_unregistered_unit_is_refused_f05_and_never_a_partition(settings: Settings,
                                                                   instance: dg.DagsterInstance) -> None:
    drop_samples(settings, ("T002",))
    (settings.inbox / "T009").mkdir(parents=True)
    shutil.copyfile(SAMPLE / "T002" / "T002_201705.xlsx", settings.inbox / "T009" / "T009_201705.xlsx")
    requests, _ = requests_after_two_ticks(instance)
    by_unit = {rr.tags["inservice/unit"]: rr for rr in requests}
    assert by_unit["T002"].job_name == "ingest_upload"
    assert by_unit["T009"].job_name == "ingest_unsorted_upload" and by_unit["T009"].partition_key is None
    assert sorted(instance.get_dynamic_partitions("unit")) == ["T002"]
    result = execute(by_unit["T009"], instance)
    meta = metadata(result, "unsorted_upload")
    assert meta["status"] == "refused" and meta["refusal"] == "F05" and Path(meta["receipt"]).is_file()
    assert (settings.home / "quarantine" / "T009" / "T009_201705.xlsx").is_file()
    assert run_tags(instance, result)["inservice/rule"] == "F05"
    # a partition left by an older version is removed; every registered unit is one
    instance.add_dynamic_partitions("unit", ["T009"])
    with Warehouse(settings) as wh:  # the planning service is a unit, but its exports are no partner_upload
        wh.add_unit("PLAN", "規劃填報系統", "file", "production", date(2016, 1, 1))
    sensor = defs.resolve_sensor_def("unit_register_sensor")
    ctx = dg.build_sensor_context(instance=instance, resources=RESOURCES, definitions=defs)
    for req in sensor.evaluate_tick(ctx).dynamic_partitions_requests:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        else:
            for k in req.partition_keys:
                instance.delete_dynamic_partition(req.partitions_def_name, k)
    assert sorted(instance.get_dynamic_partitions("unit")) == ["T001", "T002", "T003"]


@pytest.mark.slow
def test_a_rerun_of_a_quarantined_upload_keeps_its_original_arrival(settings: Settings,
                                                                    instance: dg.DagsterInstance) -> None:
    with Warehouse(settings) as wh:
        set_state(wh, "T003", "sealed", "府教字第1號")
    drop_samples(settings, ("T003",))
    instance.add_dynamic_partitions("unit", ["T003"])
    result = launch("ingest_upload", instance, {"file_name": "T003_201705.xlsx",
                                                "received_at": "2017-06-03T10:00:00+08:00"}, key("T003"))
    assert metadata(result, "partner_upload")["refusal"] == "F06"
    with Warehouse(settings) as wh:
        set_state(wh, "T003", "testing", "府教字第2號")
        set_state(wh, "T003", "production", "府教字第3號")
    result = launch("ingest_upload", instance, {}, key("T003"))  # no received_at: the original's
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "loaded" and meta["on_time"] == "on time"
    assert meta["received_at"].startswith("2017-06-03T10:00:00")


def test_launchpad_config_fields_are_described() -> None:
    from inservice.assets.plans import PlanExportConfig
    from inservice.assets.uploads import UnsortedUploadConfig, UploadConfig
    from inservice.pipelines.units import (
        ArchiveExceptionConfig,
        RegisterUnitConfig,
        UnitRegisterConfig,
        UnitStateConfig,
    )

    for config in (UploadConfig, UnsortedUploadConfig, RegisterUnitConfig, UnitStateConfig, UnitRegisterConfig,
                   ArchiveExceptionConfig, PlanExportConfig):
        for name, field in config.model_fields.items():
            text = field.description or ""
            assert text and any("\u4e00" <= ch <= "\u9fff" for ch in text) and " / " in text, (config, name)


@pytest.mark.slow
def test_staff_jobs_register_a_unit_change_its_state_and_add_an_exception(settings: Settings,
                                                                          instance: dg.DagsterInstance) -> None:
    def run(job: str, op: str, config: dict, ok: bool = True) -> dg.ExecuteInProcessResult:
        result = defs.resolve_job_def(job).execute_in_process(run_config={"ops": {op: {"config": config}}},
                                                              instance=instance, raise_on_error=False)
        assert result.success is ok, job
        return result

    run("staff_register_unit", "register_unit", {"code": "T004", "name": "新單位", "joined": "2017-05-01"})
    assert "T004" in instance.get_dynamic_partitions("unit")
    failed = run("staff_register_unit", "register_unit", {"code": "t4", "name": "x"}, ok=False)
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "unit code" in failure.event_specific_data.error.message  # a plain reason, no retry
    run("staff_change_unit_state", "change_unit_state", {"code": "T004", "state": "production",
                                                         "letter": "臺教師(三)字第1060000002號"})
    run("staff_add_archive_exception", "add_archive_exception",
        {"unit": "T004", "letter": "臺教師(三)字第1060000003號", "letter_date": "2017-03-01",
         "valid_until": "2017-12-31"})
    run("staff_change_unit_register", "change_unit_register",
        {"code": "T004", "field": "name", "value": "新單位（更名）", "letter": "臺教師(三)字第1060000004號",
         "effective_date": "2017-09-01"})
    run("staff_change_unit_register", "change_unit_register",
        {"code": "T004", "field": "channel", "value": "fax", "letter": "L"}, ok=False)  # not a channel
    with Warehouse(settings, read_only=True) as wh:
        assert wh.unit("T004").state == "production" and wh.unit("T004").name == "新單位（更名）"
        assert [(e["unit_code"], e["course_code"]) for e in wh.exceptions()] == [("T004", None)]
        log = wh.con.execute("""SELECT reason, changed_by, letter_no FROM unit_state_log WHERE unit_code = 'T004'
            ORDER BY changed_at""").fetchall()
        assert [r[0] for r in log] == ["register", "promote", "rename"]
        assert log[0][1] == log[2][1] == "dagster" and log[2][2] == "臺教師(三)字第1060000004號"


@pytest.mark.slow
def test_a_unit_refused_f05_then_registered_reruns_on_time(settings: Settings, instance: dg.DagsterInstance) -> None:
    """Refused F05 on 2017-06-03 (not yet registered), registered later, re-run from quarantine without a
    receipt time: judged as received then — on time — not as late on the day of the re-run."""
    (settings.inbox / "T009").mkdir(parents=True)
    shutil.copyfile(SAMPLE / "T002" / "T002_201705.xlsx", settings.inbox / "T009" / "T009_201705.xlsx")
    # the sample's rows name T002: give them T009, as the new unit's own export would
    from openpyxl import load_workbook
    wb = load_workbook(settings.inbox / "T009" / "T009_201705.xlsx")
    for ws in wb.worksheets:
        for row in ws.iter_rows(min_row=2):
            for cell in row:
                if cell.value == "T002":
                    cell.value = "T009"
    wb.save(settings.inbox / "T009" / "T009_201705.xlsx")
    result = launch("ingest_unsorted_upload", instance, {"unit": "T009", "file_name": "T009_201705.xlsx",
                                                         "received_at": "2017-06-03T10:00:00+08:00"})
    assert metadata(result, "unsorted_upload")["refusal"] == "F05"
    defs.resolve_job_def("staff_register_unit").execute_in_process(
        run_config={"ops": {"register_unit": {"config": {"code": "T009", "name": "新單位", "state": "production",
                                                         "joined": "2017-01-01"}}}}, instance=instance)
    result = launch("ingest_upload", instance, {}, key("T009"))
    meta = metadata(result, "partner_upload")
    assert meta["status"] == "loaded" and meta["on_time"] == "on time", meta
    assert meta["received_at"].startswith("2017-06-03T10:00:00")


def test_monthly_cluster_job_keeps_every_row_and_orders_them_by_key(settings: Settings,
                                                                    instance: dg.DagsterInstance) -> None:
    """The bounded merge relies on key-ordered storage (DuckDB zone maps): a scheduled job keeps it so."""
    from inservice.cli import main

    for unit in ("T003", "T001"):  # arrival order is not key order
        drop_samples(settings, (unit,))
        assert main(["ingest", *map(str, sorted((settings.inbox / unit).iterdir())),
                     "--received-at", "2017-06-03T10:00:00+08:00"]) == 0
    order = "SELECT unit_code, course_code, teacher_key FROM main.attendance ORDER BY rowid"
    with Warehouse(settings, read_only=True) as wh:
        before = wh.con.execute(order).fetchall()
    assert before != sorted(before)
    schedule = defs.resolve_schedule_def("warehouse_cluster_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 1 * *", "Asia/Taipei")
    result = defs.resolve_job_def("warehouse_cluster").execute_in_process(instance=instance)
    assert result.success
    with Warehouse(settings, read_only=True) as wh:
        after = wh.con.execute(order).fetchall()
    assert after == sorted(before)  # the same rows, in key order
