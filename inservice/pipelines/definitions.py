"""The one Definitions object: `dagster dev -w workspace.yaml` loads `defs` from here.

Groups: ingest (uploads) → warehouse (tables + blocking checks) → publish (monthly statistics,
from inservice.assets.publish when that module exists; this file does not depend on it).
"""

from __future__ import annotations

import importlib

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from inservice.assets.ingest import INGEST_ASSETS
from inservice.assets.warehouse import WAREHOUSE_ASSETS, WAREHOUSE_CHECKS
from inservice.pipelines.jobs import JOBS
from inservice.pipelines.resources import InserviceResource
from inservice.pipelines.sensors import inbox_sensor

PUBLISH_MODULE = "inservice.assets.publish"
FEATURE_MODULES = ("inservice.assets.corrections", "inservice.assets.feeds")


WAREHOUSE_KEYS = [dg.AssetKey(a.key.path) for a in WAREHOUSE_ASSETS]


def _publish_spec(spec: dg.AssetSpec) -> dg.AssetSpec:
    """Publish assets read the warehouse: put them downstream of its tables, so the blocking checks
    stop them, and keep the graph's three groups (an asset left in the default group joins publish)."""
    if spec.group_name in (None, "default"):
        spec = spec.replace_attributes(group_name="publish")
    if not {d.asset_key for d in spec.deps} & set(WAREHOUSE_KEYS):
        spec = spec.replace_attributes(deps=[*spec.deps, *(dg.AssetDep(k) for k in WAREHOUSE_KEYS)])
    return spec


def module_definitions(name: str, spec_fn=None) -> dg.Definitions | None:
    """A feature module's definitions, if the module exists (a broken module still fails loudly):
    its assets and checks, and the jobs, schedules and sensors it defines at module level."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise
    assets = dg.load_assets_from_modules([module])
    if spec_fn is not None:
        assets = dg.map_asset_specs(spec_fn, assets)
    found = {id(v): v for v in vars(module).values()}.values()
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules([module]),
        jobs=[v for v in found if isinstance(v, dg.JobDefinition | UnresolvedAssetJobDefinition)],
        schedules=[v for v in found if isinstance(v, dg.ScheduleDefinition)],
        sensors=[v for v in found if isinstance(v, dg.SensorDefinition)],
    )


def publish_definitions() -> dg.Definitions | None:
    return module_definitions(PUBLISH_MODULE, _publish_spec)


def checked_publish_jobs(publish: dg.Definitions) -> list[UnresolvedAssetJobDefinition]:
    """`<asset>_checked` per publish asset: warehouse tables and their blocking checks first, then the
    asset, which a failed check stops (a blocking check only holds back assets in its own run)."""
    keys = sorted({k for a in publish.assets or [] for k in getattr(a, "keys", [getattr(a, "key", None)]) if k},
                  key=lambda k: k.to_user_string())
    return [dg.define_asset_job(
        f"{'_'.join(k.path)}_checked",
        selection=dg.AssetSelection.assets(k) | dg.AssetSelection.assets(*WAREHOUSE_KEYS),
        description=f"Warehouse checks, then {k.to_user_string()} (not run if a blocking check fails).")
        for k in keys]


def build_definitions() -> dg.Definitions:
    core = dg.Definitions(
        assets=[*INGEST_ASSETS, *WAREHOUSE_ASSETS],
        asset_checks=WAREHOUSE_CHECKS,
        jobs=JOBS,
        sensors=[inbox_sensor],
        resources={"inservice": InserviceResource()},
        # One process per run, steps in order: the steps share one file-based warehouse anyway.
        executor=dg.in_process_executor,
    )
    parts = [core]
    for name in FEATURE_MODULES:  # corrections and feeds keep their own groups
        found = module_definitions(name)
        if found is not None:
            parts.append(found)
    publish = publish_definitions()
    if publish is not None:
        parts += [publish, dg.Definitions(jobs=checked_publish_jobs(publish))]
    return dg.Definitions.merge(*parts)


defs = build_definitions()
