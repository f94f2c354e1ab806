"""inbox_sensor: every new, stable file in $INSERVICE_HOME/inbox/<UNIT>/ becomes exactly one run.

The sensor walks the folders and compares with its JSON cursor (inservice.inbox.plan_tick);
it opens no upload. Run key = unit + file name + content hash, so a restart, a second tick or a
re-copy of the same bytes starts nothing new (the cursor first, Dagster's run keys behind it).
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import os

import dagster as dg

from inservice.assets.ingest import FIRST_MONTH, MONTHS, UNITS, UnsortedUploadConfig, UploadConfig
from inservice.inbox import InboxCursor, NewUpload, data_month, plan_tick
from inservice.pipelines.jobs import ingest_unsorted_job, ingest_upload_job
from inservice.pipelines.resources import WAREHOUSE_POOL, InserviceResource

INTERVAL = int(os.environ.get("INSERVICE_SENSOR_INTERVAL", "30"))
MAX_RUNS_PER_TICK = int(os.environ.get("INSERVICE_SENSOR_MAX_RUNS", "20"))
UPLOAD_TAG = "inservice/upload"  # the run key, as a tag we can look up (Dagster's own tag is internal)


def _runs_for(instance: dg.DagsterInstance, upload: NewUpload) -> list[dg.RunRecord]:
    return list(instance.get_run_records(dg.RunsFilter(tags={UPLOAD_TAG: upload.run_key}), limit=1))


def _ensure_pool_limit(instance: dg.DagsterInstance) -> None:
    """A fresh instance has no limit for the pool (its first dequeue would run everything at once):
    set the instance's default pool limit, else 1. An operator's own limit is left alone."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or WAREHOUSE_POOL in storage.get_concurrency_keys():
        return
    storage.set_concurrency_slots(WAREHOUSE_POOL, instance.global_op_concurrency_default_limit or 1)


def run_request(upload: NewUpload, last_month: str) -> dg.RunRequest:
    f = upload.file
    tags = {"inservice/unit": f.unit, "inservice/file": f.name, UPLOAD_TAG: upload.run_key}
    month = data_month(f.name)
    if month is not None and FIRST_MONTH <= month <= last_month:
        config = UploadConfig(file_name=f.name, content_hash=upload.content_hash, received_at=upload.received_at)
        return dg.RunRequest(run_key=upload.run_key, job_name=ingest_upload_job.name,
                             partition_key=dg.MultiPartitionKey({"unit": f.unit, "month": month}),
                             run_config=dg.RunConfig(ops={"partner_upload": config}), tags=tags)
    config = UnsortedUploadConfig(unit=f.unit, file_name=f.name, content_hash=upload.content_hash,
                                  received_at=upload.received_at)
    return dg.RunRequest(run_key=upload.run_key, job_name=ingest_unsorted_job.name,
                         run_config=dg.RunConfig(ops={"unsorted_upload": config}), tags=tags)


@dg.sensor(
    name="inbox_sensor",
    jobs=[ingest_upload_job, ingest_unsorted_job],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches $INSERVICE_HOME/inbox/<UNIT>/ (folders starting with _ are skipped). A file "
                "is queued once its size and mtime hold still between two ticks; one run per file, "
                f"at most {MAX_RUNS_PER_TICK} per tick.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, inservice: InserviceResource) -> dg.SensorResult:
    settings = inservice.settings()
    cursor = InboxCursor.from_json(context.cursor)

    def already_done(upload: NewUpload) -> bool:
        # A re-copy of bytes already handed on (e.g. after the original was archived): say so, once.
        runs = _runs_for(context.instance, upload)
        if runs:
            run = runs[0].dagster_run
            context.log.info(f"{upload.file.rel}: same bytes already handled by run {run.run_id} "
                             f"({run.status.value}); left in the inbox untouched")
        return bool(runs)

    plan = plan_tick(settings.inbox, cursor, max_uploads=MAX_RUNS_PER_TICK, already_done=already_done)
    for folder in plan.ignored_folders:
        context.log.warning(f"inbox/{folder}/ is not a unit code folder: ignored")
    last_month = MONTHS.get_last_partition_key() or FIRST_MONTH
    requests = [run_request(u, last_month) for u in plan.uploads]
    partition_requests = []
    if requests:
        _ensure_pool_limit(context.instance)
        # One dynamic partition per unit, added the first time a unit's file is queued.
        units = {r.partition_key.keys_by_dimension["unit"] for r in requests if r.partition_key}
        missing = sorted(units - set(context.instance.get_dynamic_partitions(UNITS.name)))
        if missing:
            partition_requests.append(UNITS.build_add_request(missing))
    summary = (f"{len(requests)} queued, {plan.waiting} new or changing (wait a tick), "
               f"{plan.deferred} over this tick's cap, {len(plan.cursor.files)} file(s) in the inbox")
    context.log.info(summary)
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json(),
                           dynamic_partitions_requests=partition_requests,
                           skip_reason=None if requests else summary)
