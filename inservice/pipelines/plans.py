"""Planning survey: the export job and plans_sensor (inbox/PLAN/, like inbox_sensor for unit folders),
and the publication job of a school year (the warehouse and plan checks as steps, then the four
publications)."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg

from inservice.assets.plans import SCHOOL_YEARS, PlanExportConfig, plan_export, plan_publications, plan_tables
from inservice.assets.shared import InserviceResource
from inservice.inbox import NewUpload, scan_folder
from inservice.pipelines.uploads import INTERVAL, watched_folder_tick  # one setting for every inbox
from inservice.schemas.plans import PLAN_UNIT, parse_plan_name

EXPORT_TAG = "inservice/plan_export"  # the run key as a tag we can look up

plan_export_job = dg.define_asset_job(
    "ingest_plan_export", selection=dg.AssetSelection.assets(plan_export, plan_tables),
    description="One planning survey export (partition: its school year) through the core, receipt, "
                "archive/quarantine, then the plan tables' counts and blocking checks. Started by plans_sensor, "
                "or by hand (config file_name) to re-run a kept export.")

plan_unsorted_job = dg.define_asset_job(
    "ingest_plan_unsorted", selection=dg.AssetSelection.assets(plan_export, plan_tables),
    description="A file in inbox/PLAN/ whose name gives no school year in range: processed in the current "
                "school year's partition, so it is refused (F02/F03) with a receipt and quarantined.")

plan_publications_job = dg.define_asset_job(
    "publish_plans",
    selection=dg.AssetSelection.assets(plan_publications) | dg.AssetSelection.assets(plan_tables)
    | dg.AssetSelection.groups("warehouse"),
    description="規劃統計: the warehouse and plan checks, then the four publications of the chosen school year "
                "(participation, demand report, supply against demand, fulfilment). Nothing is published if a "
                "check fails.")


def run_request(upload: NewUpload) -> dg.RunRequest:
    name = parse_plan_name(upload.file.name)
    keys = SCHOOL_YEARS.get_partition_keys()
    year = str(name.school_year) if name is not None else ""
    config = PlanExportConfig(file_name=upload.file.name, content_hash=upload.content_hash,
                              received_at=upload.received_at)
    job = plan_export_job if year in keys else plan_unsorted_job
    return dg.RunRequest(run_key=upload.run_key, job_name=job.name, partition_key=year if year in keys else keys[-1],
                         run_config=dg.RunConfig(ops={"plan_export": config}),
                         tags={"inservice/unit": PLAN_UNIT, "inservice/file": upload.file.name,
                               EXPORT_TAG: upload.run_key})


@dg.sensor(
    name="plans_sensor", jobs=[plan_export_job, plan_unsorted_job], minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches $INSERVICE_HOME/inbox/PLAN/ (the planning survey's exports) like inbox_sensor watches "
                "unit folders: a file is queued once its size and mtime hold still between two ticks; one run per "
                "content, in its school year's partition.",
)
def plans_sensor(context: dg.SensorEvaluationContext, inservice: InserviceResource) -> dg.SensorResult:
    settings = inservice.settings()
    files = scan_folder(PLAN_UNIT, settings.inbox / PLAN_UNIT)
    return watched_folder_tick(context, settings.inbox, files, EXPORT_TAG, run_request)


PLAN_JOBS = [plan_export_job, plan_unsorted_job, plan_publications_job]
PLAN_SENSORS = [plans_sensor]
