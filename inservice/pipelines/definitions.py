"""The one Definitions object: `dagster dev -w workspace.yaml` loads `defs` from here.

Assembled explicitly, domain by domain: each domain has its assets (and their checks) in
inservice/assets/<domain>.py and its jobs, sensors and schedules in inservice/pipelines/<domain>.py.
Groups: ingest (uploads, feeds, the month's overview) → warehouse (tables + blocking checks) →
publish (monthly statistics, yearbook, audit worklist); corrections (with the replay of archived uploads)
beside them; plans (the planning survey: exports, plan tables, its four publications per school year);
partners (mail, history, template).
"""

from __future__ import annotations

import warnings

import dagster as dg

from inservice.assets.audit import AUDIT_ASSETS
from inservice.assets.backfill import BACKFILL_ASSETS
from inservice.assets.corrections import CORRECTION_ASSETS
from inservice.assets.feeds import FEED_ASSETS
from inservice.assets.notifications import NOTIFICATION_ASSETS
from inservice.assets.plans import PLAN_ASSETS, PLAN_CHECKS
from inservice.assets.publish import PUBLISH_ASSETS
from inservice.assets.replay import REPLAY_ASSETS
from inservice.assets.shared import InserviceResource
from inservice.assets.uploads import UPLOAD_ASSETS
from inservice.assets.warehouse import WAREHOUSE_ASSETS, WAREHOUSE_CHECKS
from inservice.pipelines.audit import AUDIT_JOBS, AUDIT_SCHEDULES
from inservice.pipelines.backfill import BACKFILL_JOBS
from inservice.pipelines.corrections import CORRECTION_JOBS, CORRECTION_SENSORS
from inservice.pipelines.feeds import FEED_JOBS, FEED_SCHEDULES, FEED_SENSORS
from inservice.pipelines.maintenance import MAINTENANCE_JOBS, MAINTENANCE_SCHEDULES
from inservice.pipelines.notifications import NOTIFICATION_JOBS, NOTIFICATION_SCHEDULES, NOTIFICATION_SENSORS
from inservice.pipelines.plans import PLAN_JOBS, PLAN_SENSORS
from inservice.pipelines.publish import PUBLISH_JOBS, PUBLISH_SCHEDULES
from inservice.pipelines.replay import REPLAY_JOBS
from inservice.pipelines.units import UNIT_JOBS
from inservice.pipelines.uploads import UPLOAD_JOBS, UPLOAD_SENSORS

# Dagster itself tags a multi-partition run `dagster/partition/<dimension>` and then warns that such keys
# are deprecated; every tag key of ours is compliant (tests/test_dagster.py checks them).
warnings.filterwarnings("ignore", message=r"Non-compliant tag keys like \['dagster/partition/",
                        category=DeprecationWarning)

RESOURCES = {"inservice": InserviceResource()}


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[*UPLOAD_ASSETS, *WAREHOUSE_ASSETS, *FEED_ASSETS, *CORRECTION_ASSETS, *PUBLISH_ASSETS,
                *AUDIT_ASSETS, *BACKFILL_ASSETS, *REPLAY_ASSETS, *PLAN_ASSETS, *NOTIFICATION_ASSETS],
        asset_checks=[*WAREHOUSE_CHECKS, *PLAN_CHECKS],  # the uploads' own checks are declared on their assets
        jobs=[*UPLOAD_JOBS, *FEED_JOBS, *CORRECTION_JOBS, *PUBLISH_JOBS, *UNIT_JOBS, *AUDIT_JOBS, *BACKFILL_JOBS,
              *REPLAY_JOBS, *PLAN_JOBS, *NOTIFICATION_JOBS, *MAINTENANCE_JOBS],
        schedules=[*FEED_SCHEDULES, *PUBLISH_SCHEDULES, *AUDIT_SCHEDULES, *NOTIFICATION_SCHEDULES,
                   *MAINTENANCE_SCHEDULES],
        sensors=[*UPLOAD_SENSORS, *CORRECTION_SENSORS, *FEED_SENSORS, *PLAN_SENSORS, *NOTIFICATION_SENSORS],
        resources=RESOURCES,
        # One process per run, steps in order: the steps share one file-based warehouse anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
