"""The one Definitions object: `dagster dev -w workspace.yaml` loads `defs` from here.

Groups: ingest (uploads, feeds, the month's overview) → warehouse (tables + blocking checks) →
publish (monthly statistics, yearbook); corrections beside them. Assembled explicitly, domain by domain.
"""

from __future__ import annotations

import warnings

import dagster as dg

from inservice.assets.corrections import CORRECTION_ASSETS, CORRECTION_JOBS, CORRECTION_SENSORS
from inservice.assets.feeds import FEED_ASSETS, FEED_JOBS, FEED_SCHEDULES, FEED_SENSORS
from inservice.assets.ingest import INGEST_ASSETS
from inservice.assets.publish import PUBLISH_ASSETS, PUBLISH_JOBS, PUBLISH_SCHEDULES
from inservice.assets.warehouse import WAREHOUSE_ASSETS, WAREHOUSE_CHECKS
from inservice.pipelines.jobs import JOBS
from inservice.pipelines.resources import InserviceResource
from inservice.pipelines.sensors import inbox_sensor, unit_register_sensor
from inservice.pipelines.staff_jobs import STAFF_JOBS

# Dagster itself tags a multi-partition run `dagster/partition/<dimension>` and then warns that such keys
# are deprecated; every tag key of ours is compliant (tests/test_dagster.py checks them).
warnings.filterwarnings("ignore", message=r"Non-compliant tag keys like \['dagster/partition/",
                        category=DeprecationWarning)


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[*INGEST_ASSETS, *WAREHOUSE_ASSETS, *FEED_ASSETS, *CORRECTION_ASSETS, *PUBLISH_ASSETS],
        asset_checks=WAREHOUSE_CHECKS,  # the uploads' own check is declared on their assets
        jobs=[*JOBS, *FEED_JOBS, *CORRECTION_JOBS, *PUBLISH_JOBS, *STAFF_JOBS],
        schedules=[*FEED_SCHEDULES, *PUBLISH_SCHEDULES],
        sensors=[inbox_sensor, unit_register_sensor, *CORRECTION_SENSORS, *FEED_SENSORS],
        resources={"inservice": InserviceResource()},
        # One process per run, steps in order: the steps share one file-based warehouse anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
