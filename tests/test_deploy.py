"""The production configuration in deploy/, run for real: Dagster storage in a fresh PostgreSQL database
(deploy/dagster.postgres.yaml), a code server started on its own, and the webserver, the daemon and the
CLI loading the location through deploy/workspace.production.yaml (only its port changed). Two runs of a
warehouse job go through the queue and the "warehouse" pool; they must succeed one after the other,
inside the code server's environment (the other processes have no INSERVICE_* variables at all).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import dagster as dg
import psycopg2
import psycopg2.extensions
import pytest
import yaml
from dagster._core.instance.config import PoolGranularity
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import ListRepositoriesResponse
from dagster._serdes import deserialize_value
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # dagster, dagster-daemon: the entry points of this environment
PG_SERVER = os.environ.get("INSERVICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
JOB = "sealing"  # lists dormant units (confirm: false): needs no inbox file, opens the warehouse read-write
START_TIMEOUT = 120.0  # process start on a busy 2-core machine
RUN_TIMEOUT = 180.0
LOCATION = "inservice"


@contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh database on the local server (its name), dropped afterwards even if still in use."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_SERVER)
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def pg_url(db: str) -> str:
    return PG_SERVER.rsplit("/", 1)[0] + f"/{db}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


class Processes:
    """Child processes, each in its own process group (with everything it spawns: the code server's
    server process and run workers), all ended on close."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.started.append((name, proc))
        return proc

    def run(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        """Run to the end; a non-zero exit fails the test with the command's output."""
        proc = self.start(name, args, env, cwd)
        self.finish(name, proc)

    def finish(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        try:
            rc = proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not finish in {START_TIMEOUT:.0f} s:\n{tail(self.logs / f'{name}.log')}")
        assert rc == 0, f"{name} exited {rc}:\n{tail(self.logs / f'{name}.log')}"

    def close(self) -> None:
        for _, proc in reversed(self.started):
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._signal(proc, signal.SIGKILL)  # the group: children outlive a parent that exited on TERM
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def wait_for(what: str, ready: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:.0f} s:\n{tail(log)}")


def code_server_serves(port: int) -> bool:
    """The code server answers and has loaded the definitions (not an error while loading)."""
    try:
        reply = deserialize_value(DagsterGrpcClient(port=port, host="127.0.0.1").list_repositories())
    except Exception:
        return False
    return isinstance(reply, ListRepositoriesResponse)


WORKSPACE = """{ workspaceOrError { ... on Workspace {
    locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"""
LAUNCH = """mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
RUNS = """query ($ids: [String!]) { runsOrError(filter: {runIds: $ids}) {
    ... on Runs { results { runId status } } } }"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.load(response)
    assert "errors" not in reply, reply["errors"]
    return reply["data"]


def webserver_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def production_workspace(port: int) -> dict:
    """deploy/workspace.production.yaml with only the port changed (checked to be the one gRPC location)."""
    config = yaml.safe_load((DEPLOY / "workspace.production.yaml").read_text())
    [entry] = config["load_from"]
    server = entry["grpc_server"]
    assert server["location_name"] == LOCATION and set(server) == {"host", "port", "location_name"}
    server["port"] = port
    return config


@pytest.mark.slow
def test_production_setup_runs_queued_jobs_on_postgres_storage(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = psycopg2.extensions.parse_dsn(PG_SERVER)
    assert dsn.get("port", "5432") == "5432", "deploy/dagster.postgres.yaml names port 5432"
    dagster_home, inservice_home, elsewhere, logs = (tmp_path / d for d in ("dagster", "home", "elsewhere", "logs"))
    for d in (dagster_home, inservice_home, elsewhere, logs):
        d.mkdir()
    (dagster_home / "dagster.yaml").write_text((DEPLOY / "dagster.postgres.yaml").read_text())
    port = free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump(production_workspace(port)))
    run_ids = [str(uuid.uuid4())]  # and the one the webserver launches

    with ExitStack() as stack:
        storage_db = stack.enter_context(pg_database("dagster_test"))
        warehouse_db = stack.enter_context(pg_database("inservice_t"))
        procs = Processes(logs)
        stack.callback(procs.close)  # before the databases are dropped

        dagster_env = {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": dsn.get("host", "127.0.0.1"),
                       "DAGSTER_PG_DB": storage_db, "DAGSTER_PG_USERNAME": dsn.get("user", "postgres"),
                       "DAGSTER_PG_PASSWORD": dsn.get("password", "")}  # empty: accepted, no password sent
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "INSERVICE_"))}
        env = clean | dagster_env  # webserver, daemon, CLI: no INSERVICE_* (they never import the code)
        code_env = env | {"INSERVICE_HOME": str(inservice_home), "INSERVICE_WAREHOUSE_URL": pg_url(warehouse_db),
                          "INSERVICE_PSEUDONYM_KEY": "test-deploy-key-" + "0" * 32}
        for key, value in dagster_env.items():
            monkeypatch.setenv(key, value)

        # The code server starts (slow: it imports the pipeline) while the instance is prepared.
        server = procs.start("code-server", [str(BIN / "dagster"), "code-server", "start",
                                             "-m", "inservice.pipelines.definitions", "-a", "defs",
                                             "--location-name", LOCATION, "-h", "127.0.0.1", "-p", str(port)],
                             code_env, inservice_home)
        procs.run("migrate", [str(BIN / "dagster"), "instance", "migrate"], env, elsewhere)
        procs.run("pool", [str(BIN / "dagster"), "instance", "concurrency", "set", "warehouse", "1"], env, elsewhere)
        wait_for("code server serving the definitions", lambda: code_server_serves(port) or server.poll() is not None,
                 START_TIMEOUT, logs / "code-server.log")
        assert server.poll() is None, f"code server exited:\n{tail(logs / 'code-server.log')}"

        # The webserver and the CLI load the location through the workspace file. One run is queued from
        # the CLI, one from the webserver (the daemon is not up yet: both wait in the queue).
        web_port = free_port()
        procs.start("webserver", [str(BIN / "dagster-webserver"), "-w", str(workspace),
                                  "-h", "127.0.0.1", "-p", str(web_port)], env, elsewhere)
        cli = {"validate": ["definitions", "validate", "-w", str(workspace)],
               "launch": ["job", "launch", "-w", str(workspace), "-j", JOB, "--run-id", run_ids[0]]}
        started = {name: procs.start(name, [str(BIN / "dagster"), *args], env, elsewhere) for name, args in cli.items()}
        for name, proc in started.items():
            procs.finish(name, proc)
        assert f"Validation successful for code location {LOCATION}" in (logs / "validate.log").read_text()
        wait_for("webserver", lambda: webserver_up(web_port), START_TIMEOUT, logs / "webserver.log")
        data = graphql(web_port, WORKSPACE)
        assert data["workspaceOrError"]["locationEntries"] == [
            {"name": LOCATION, "loadStatus": "LOADED", "locationOrLoadError": {"__typename": "RepositoryLocation"}}]
        data = graphql(web_port, LAUNCH, {"params": {"selector": {
            "repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": JOB}}})
        assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data
        run_ids.append(data["launchRun"]["run"]["runId"])

        instance = dg.DagsterInstance.get()
        stack.callback(instance.dispose)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.pool_granularity == PoolGranularity.RUN
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config is not None
        assert concurrency.run_queue_config.max_user_code_failure_retries == 3
        assert instance.event_log_storage.get_concurrency_info("warehouse").slot_count == 1
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.QUEUED, run
            assert run.run_op_concurrency is not None and run.run_op_concurrency.all_pools == {"warehouse"}
            origin = run.remote_job_origin.repository_origin.code_location_origin
            assert isinstance(origin, GrpcServerCodeLocationOrigin)
            assert (origin.port, origin.location_name) == (port, LOCATION)

        # The daemon dequeues them one at a time and the code server runs them.
        procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, elsewhere)

        def finished() -> bool:
            runs = instance.get_runs(dg.RunsFilter(run_ids=run_ids))
            return len(runs) == 2 and all(r.is_finished for r in runs)

        wait_for("both runs finished", finished, RUN_TIMEOUT, logs / "daemon.log")

        records = sorted(instance.get_run_records(dg.RunsFilter(run_ids=run_ids)), key=lambda r: r.start_time or 0)
        statuses = {r.dagster_run.run_id: r.dagster_run.status for r in records}
        assert statuses == dict.fromkeys(run_ids, dg.DagsterRunStatus.SUCCESS), (
            f"{statuses}\n{tail(logs / 'daemon.log')}\n{tail(logs / 'code-server.log')}")
        first, second = (r.dagster_run.run_id for r in records)
        # The queue held the second run back on the pool until the first ended (launch order alone
        # would not show it: a short run can end before the next launch even when both are let through).
        first_end = max(e.timestamp for e in instance.all_logs(first) if e.dagster_event_type in (
            dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE))
        [second_dequeued] = [e.timestamp for e in instance.all_logs(second)
                             if e.dagster_event_type == dg.DagsterEventType.RUN_STARTING]
        assert second_dequeued >= first_end, "the warehouse pool let two runs start together"
        blocked = [line for line in (logs / "daemon.log").read_text().splitlines()
                   if f"Run {second} is blocked by global concurrency limits" in line]
        assert blocked and '"warehouse"' in blocked[0]
        for run_id in run_ids:
            events = instance.all_logs(run_id)
            assert any(e.dagster_event_type == dg.DagsterEventType.RUN_ENQUEUED for e in events)
            assert any("0 dormant unit(s)" in e.user_message for e in events)

        data = graphql(web_port, RUNS, {"ids": run_ids})  # the webserver reads them from PostgreSQL
        assert {r["runId"]: r["status"] for r in data["runsOrError"]["results"]} == dict.fromkeys(run_ids, "SUCCESS")

        # The runs are rows in PostgreSQL, and the run workers wrote the warehouse named only in the code
        # server's environment (its tables, in schema main).
        with closing(psycopg2.connect(pg_url(storage_db))) as con, con.cursor() as cur:
            cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
            assert dict(cur.fetchall()) == dict.fromkeys(run_ids, "SUCCESS")
        with closing(psycopg2.connect(pg_url(warehouse_db))) as con, con.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main'")
            assert cur.fetchone()[0] > 0


def test_staff_pages_open_without_the_community_dialog(tmp_path: Path) -> None:
    """Seen in the staff journey: "Join the Dagster community" covered every page at each start."""
    from dagster import DagsterInstance

    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert not instance.nux_enabled
    assert yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text())["nux"] == {"enabled": False}
