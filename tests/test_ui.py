"""The UI staff work in: `dagster dev -w workspace.yaml`, checked through GraphQL, screenshotted by
headless chromium into artifacts/ (the asset graph and the inbox sensor's page)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from inservice.config import Settings
from inservice.warehouse.store import Warehouse

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = shutil.which("chromium")

pytestmark = [pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"),
                                 reason="chromium is not installed (scripts/setup installs it; in CI this test runs)"),
              pytest.mark.slow]  # a Dagster webserver and a browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe, timeout: float, log: Path):  # noqa: ANN001 - any callable returning a truthy value
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{log.read_text()[-3000:]}")


class Dagit:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:
            return json.loads(resp.read())

    def gql(self, query: str) -> dict:
        req = urllib.request.Request(self.base + "/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
        assert "errors" not in body, body
        return body["data"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Dagit, Settings]]:
    home = tmp_path / "home"
    settings = Settings(home=home)
    with Warehouse(settings) as wh:
        for code in ("T001", "T002", "T003"):
            wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
    shutil.copytree(REPO / "inservice" / "sample_inbox", settings.inbox)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")  # telemetry off there
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "INSERVICE_HOME": str(home),
           "INSERVICE_SENSOR_INTERVAL": "2", "DAGSTER_DISABLE_TELEMETRY": "1"}
    port = free_port()
    log = tmp_path / "dagster-dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ui = Dagit(port)
            wait_for("/server_info", lambda: ui.get("/server_info").get("dagster_version"), 120, log)
            yield ui, settings
        finally:
            # dagster dev shuts its children down on SIGINT (it ignores SIGTERM); then the whole group
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def screenshot(url: str, name: str, profile: Path) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    target.unlink(missing_ok=True)
    subprocess.run([CHROMIUM or "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,900",
                    "--virtual-time-budget=15000", f"--screenshot={target}", url],
                   check=True, capture_output=True, timeout=120)
    assert target.stat().st_size > 20_000  # a rendered page, not a blank one
    return target


ASSETS = """{ assetNodes { assetKey { path } groupName description
    owners { ... on TeamAssetOwner { team } }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
    partitionDefinition { type dimensionTypes { name type dynamicPartitionsDefinitionName } } } }"""
LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
SENSORS = """{ sensorsOrError(repositorySelector: {repositoryName: "__repository__",
    repositoryLocationName: "inservice"}) { ... on Sensors { results { name sensorState { status } } } } }"""
UNIT_PARTITIONS = """{ assetNodeOrError(assetKey: {path: ["partner_upload"]}) { ... on AssetNode {
    partitionKeysByDimension { name partitionKeys } } } }"""


def test_ui_shows_assets_checks_sensor_partitions(server: tuple[Dagit, Settings], tmp_path: Path) -> None:
    ui, settings = server
    log = tmp_path / "dagster-dev.log"

    def location_loaded() -> bool:
        [entry] = ui.gql(LOCATION)["workspaceOrError"]["locationEntries"]
        assert entry["locationOrLoadError"]["__typename"] != "PythonError", entry
        return entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"

    wait_for("the code location", location_loaded, 120, log)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in ui.gql(ASSETS)["assetNodes"]}
    groups = {k: n["groupName"] for k, n in nodes.items()}
    assert {k: g for k, g in groups.items() if g != "publish"} == {
        "partner_upload": "ingest", "unsorted_upload": "ingest", "partner_feed": "ingest", "upload_overview": "ingest",
        "legacy_archive": "ingest", "courses": "warehouse", "attendance": "warehouse", "upload_log": "warehouse",
        "correction_workbook": "corrections", "correction_log": "corrections", "archive_exceptions": "corrections",
        "plan_export": "plans", "plan_tables": "plans", "plan_participation": "plans", "plan_demand": "plans",
        "plan_supply": "plans", "plan_fulfilment": "plans"}
    assert {"monthly_statistics", "yearbook_extract"} <= {k for k, g in groups.items() if g == "publish"}
    for name in ("partner_upload", "courses", "attendance", "upload_log"):
        assert nodes[name]["description"] and nodes[name]["owners"] == [{"team": "data-engineering"}]
    checks = {(k, c["name"]): c["blocking"] for k, n in nodes.items()
              for c in (n["assetChecksOrError"] or {}).get("checks", [])}
    assert {("courses", "unique_key"), ("courses", "cutoff_respected"), ("attendance", "has_course"),
            ("attendance", "unique_key"), ("upload_log", "no_national_id")} <= {k for k, b in checks.items() if b}
    partitions = nodes["partner_upload"]["partitionDefinition"]
    assert partitions["type"] == "MULTIPARTITIONED"
    assert {(d["name"], d["type"]) for d in partitions["dimensionTypes"]} == {("unit", "DYNAMIC"),
                                                                             ("month", "TIME_WINDOW")}
    sensors = {s["name"]: s["sensorState"]["status"] for s in ui.gql(SENSORS)["sensorsOrError"]["results"]}
    assert sensors["inbox_sensor"] == "RUNNING"  # on by default: staff need not switch it on
    assert sensors["corrections_sensor"] == "RUNNING"
    assert sensors["plans_sensor"] == "RUNNING"

    def unit_partitions() -> list[str]:
        dims = ui.gql(UNIT_PARTITIONS)["assetNodeOrError"]["partitionKeysByDimension"]
        return sorted(next(d["partitionKeys"] for d in dims if d["name"] == "unit"))

    # the running sensor saw the sample inbox and added one partition per unit
    assert wait_for("unit partitions from the sensor", unit_partitions, 90, log) == ["T001", "T002", "T003"]
    assert ui.gql("mutation { setNuxSeen }")["setNuxSeen"] is True  # else a first-visit pop-up covers the page

    profile = tmp_path / "chromium"
    graph = screenshot(f"{ui.base}/asset-groups", "ui-asset-graph.png", profile)
    sensor_page = screenshot(f"{ui.base}/locations/inservice/sensors/inbox_sensor", "ui-inbox-sensor.png", profile)
    assert graph.is_file() and sensor_page.is_file()


RUNS = """{ runsOrError(filter: {tags: [{key: "%s", value: "%s"}]}) { ... on Runs { results {
    runId status jobName tags { key value } } } } }"""
LAUNCH = """mutation { launchPipelineExecution(executionParams: {
    selector: {repositoryLocationName: "inservice", repositoryName: "__repository__", pipelineName: "%s"},
    runConfigData: "{}", executionMetadata: {tags: [{key: "dagster/partition", value: "%s"}]}}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
RUN = """{ runOrError(runId: "%s") { ... on Run { status stepStats { stepKey status } } } }"""
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


def test_staff_journey_refusal_visible_and_a_failing_check_publishes_nothing(
        server: tuple[Dagit, Settings], tmp_path: Path) -> None:
    """Staff drop a good and a bad file into the running pipeline's inboxes, see the bad one marked
    refused, then launch the monthly statistics from the UI's API with a check failing: nothing is
    published, and the run says which check failed."""
    ui, settings = server
    log = tmp_path / "dagster-dev.log"
    bad = settings.inbox / "T001" / "T001_201706.xlsx"
    bad.write_bytes(b"not a workbook at all")  # F01

    def finished(tag: str, value: str) -> list[dict] | None:
        runs = ui.gql(RUNS % (tag, value))["runsOrError"]["results"]
        return runs if runs and all(r["status"] in DONE for r in runs) else None

    [refused_run] = wait_for("the refused upload's run", lambda: finished("inservice/file", bad.name), 240, log)
    tags = {t["key"]: t["value"] for t in refused_run["tags"]}
    assert refused_run["status"] == "SUCCESS"  # the pipeline worked; the upload was refused
    assert tags["inservice/status"] == "refused" and tags["inservice/rule"] == "F01"
    good = wait_for("the good upload's run", lambda: finished("inservice/file", "T002_201705.xlsx"), 240, log)
    assert {t["key"]: t["value"] for t in good[0]["tags"]}["inservice/status"] == "loaded"
    assert (settings.home / "quarantine" / "T001" / bad.name).is_file()
    assert ui.gql("mutation { setNuxSeen }")["setNuxSeen"] is True
    profile = tmp_path / "chromium"
    screenshot(f"{ui.base}/runs", "ui-runs-refused-tagged.png", profile)
    screenshot(f"{ui.base}/assets/partner_upload?view=checks", "ui-upload-check-refused.png", profile)
    screenshot(f"{ui.base}/assets/partner_upload?view=partitions&partition=2017-06%7CT001",
               "ui-upload-partition-refused.png", profile)

    # every upload run has ended, so nobody writes the warehouse: a raw ID lands in a course title
    wait_for("all upload runs to end", lambda: finished("inservice/unit", "T003"), 240, log)
    with Warehouse(settings) as wh:
        wh.con.execute("UPDATE main.courses SET title = 'A123456789' WHERE course_code = "
                       "(SELECT min(course_code) FROM main.courses)")
    launched = ui.gql(LAUNCH % ("publish_monthly", "2017-05"))["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    run = wait_for("the publication run", lambda: (r := ui.gql(RUN % run_id)["runOrError"])["status"] in DONE and r,
                   240, log)
    assert run["status"] == "FAILURE"
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert steps["courses_no_national_id"] == "FAILURE" and steps.get("monthly_statistics") != "SUCCESS"
    assert not (settings.home / "publish").exists() or not any(p.is_file()
                                                               for p in (settings.home / "publish").rglob("*"))
    screenshot(f"{ui.base}/runs/{run_id}", "ui-publication-blocked.png", profile)
