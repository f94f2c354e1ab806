"""The Definitions production loads, as a reviewable snapshot: every asset (group, partitions, deps),
check (blocking or not), job (selection), schedule and sensor (default status). A rename or a lost
dependency shows up as a diff of tests/snapshots/definitions.json.

Refresh it on purpose: INSERVICE_UPDATE_SNAPSHOT=1 python3 -m pytest tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import dagster as dg

from inservice.pipelines.definitions import defs

warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")
SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def describe(definitions: dg.Definitions) -> dict:
    repo = definitions.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": type(node.partitions_def).__name__ if node.partitions_def else None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "pools": sorted(node.pools or []),
        }
    checks = {f"{k.asset_key.to_user_string()}:{k.name}": graph.get_check_spec(k).blocking
              for k in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))}
    jobs = {}
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        selected = sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        jobs[job.name] = {"assets": selected, "ops": sorted(n.name for n in job.nodes) if not selected else []}
    schedules = {s.name: {"cron": s.cron_schedule, "job": s.job_name, "default": s.default_status.value}
                 for s in sorted(repo.schedule_defs, key=lambda s: s.name)}
    sensors = {s.name: {"default": s.default_status.value} for s in sorted(repo.sensor_defs, key=lambda s: s.name)}
    return {"assets": assets, "checks": checks, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_definitions_match_the_snapshot() -> None:
    now = describe(defs)
    if os.environ.get("INSERVICE_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(now, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert now == json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def test_publications_depend_on_the_checked_tables_and_every_blocking_check_is_there() -> None:
    snap = describe(defs)
    for name in ("monthly_statistics", "yearbook_extract"):
        assert {"courses", "attendance", "upload_log"} <= set(snap["assets"][name]["deps"])
    from inservice.warehouse.checks import BLOCKING, PLAN_BLOCKING

    assert {f"{c.table}:{c.name}" for c in (*BLOCKING, *PLAN_BLOCKING)} == {
        k for k, blocking in snap["checks"].items() if blocking}
    for name in ("plan_participation", "plan_demand", "plan_supply", "plan_fulfilment"):
        assert {"courses", "attendance", "upload_log", "plan_tables"} <= set(snap["assets"][name]["deps"])
