"""Uploads: the two ingest jobs; inbox_sensor, every new stable file in $INSERVICE_HOME/inbox/<UNIT>/
becomes exactly one run; unit_register_sensor, the `unit` partitions are the registered units.

The inbox sensor walks the folders and compares with its JSON cursor (inservice.inbox.plan_tick);
it opens no upload. Run key = unit + file name + content hash, so a restart or a second tick starts
nothing new; the same bytes dropped again after their run finished get a key with their arrival, so
they are answered again (F08, with a receipt) and leave the inbox. A file of a unit that is not
registered is never made a partition: it runs as an unsorted upload, which the core refuses (F05)
with a receipt, and it stays in quarantine.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from inservice.assets.shared import WAREHOUSE_POOL, InserviceResource
from inservice.assets.uploads import (
    FIRST_MONTH,
    MONTHS,
    UNIT_KEYS,
    UNITS,
    UnsortedUploadConfig,
    UploadConfig,
    partner_upload,
    unsorted_upload,
    upload_overview,
)
from inservice.assets.warehouse import WAREHOUSE_ASSETS
from inservice.inbox import InboxCursor, InboxFile, NewUpload, data_month, plan_tick, registered_units
from inservice.schemas.plans import PLAN_UNIT

INTERVAL = int(os.environ.get("INSERVICE_SENSOR_INTERVAL", "30"))
REGISTER_INTERVAL = int(os.environ.get("INSERVICE_REGISTER_SENSOR_INTERVAL", "60"))
MAX_RUNS_PER_TICK = int(os.environ.get("INSERVICE_SENSOR_MAX_RUNS", "20"))
UPLOAD_TAG = "inservice/upload"  # the run key, as a tag we can look up (Dagster's own tag is internal)
CONTENT_TAG = "inservice/content"  # unit/name/hash: every drop of the same bytes carries it


def watched_folder_tick(context: dg.SensorEvaluationContext, inbox: Path, files: Iterator[InboxFile], tag: str,
                        request: Callable[[NewUpload], dg.RunRequest]) -> dg.SensorResult:
    """One tick of a folder watched like the unit inboxes (corrections, plan exports): a file is queued
    once its size and mtime hold still between two ticks, one run per content (`tag` carries the run
    key, so a content already run is not queued again), at most MAX_RUNS_PER_TICK."""

    def already_done(upload: NewUpload) -> bool:
        return bool(context.instance.get_run_records(dg.RunsFilter(tags={tag: upload.run_key}), limit=1))

    plan = plan_tick(inbox, InboxCursor.from_json(context.cursor), max_uploads=MAX_RUNS_PER_TICK,
                     already_done=already_done, files=files)
    requests = [request(u) for u in plan.uploads]
    summary = (f"{len(requests)} queued, {plan.waiting} new or changing (wait a tick), "
               f"{plan.deferred} over this tick's cap")
    context.log.info(summary)
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json(),
                           skip_reason=None if requests else summary)


# Checks of the selected warehouse assets come with them, so every upload run ends checked.
ingest_upload_job = dg.define_asset_job(
    "ingest_upload",
    selection=dg.AssetSelection.assets(partner_upload, *WAREHOUSE_ASSETS, upload_overview),
    description="One upload (partition unit × month): core ingest, receipt, archive/quarantine, "
                "then warehouse row counts and checks, and the month's overview. Started by inbox_sensor, or "
                "by hand to re-run.",
)

ingest_unsorted_job = dg.define_asset_job(
    "ingest_unsorted_upload",
    selection=dg.AssetSelection.assets(unsorted_upload, *WAREHOUSE_ASSETS, upload_overview),
    description="An upload whose file name fits no unit × month partition, processed the same way.",
)


def _latest_run(instance: dg.DagsterInstance, tag: str, value: str) -> dg.DagsterRun | None:
    records = instance.get_run_records(dg.RunsFilter(tags={tag: value}), limit=1)
    return records[0].dagster_run if records else None


def with_run_key(instance: dg.DagsterInstance, upload: NewUpload) -> str | None:
    """The run key to hand `upload` on with, or None when it is being handled already.

    First drop of these bytes: unit/name/hash. A run for them still queued or running: None (a touch or a
    restart starts nothing twice). The earlier run finished and the bytes are in the inbox again: a re-send,
    keyed by its arrival, so it is answered too (F08 and its receipt, then archived) — never left in the
    inbox unanswered."""
    earlier = _latest_run(instance, CONTENT_TAG, upload.run_key) or _latest_run(instance, UPLOAD_TAG, upload.run_key)
    if earlier is None:
        return upload.run_key
    if not earlier.is_finished or _latest_run(instance, UPLOAD_TAG, upload.resend_key) is not None:
        return None
    return upload.resend_key


def _ensure_pool_limit(instance: dg.DagsterInstance) -> None:
    """A fresh instance has no limit for the pool (its first dequeue would run everything at once):
    set the instance's default pool limit, else 1. An operator's own limit is left alone."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or WAREHOUSE_POOL in storage.get_concurrency_keys():
        return
    storage.set_concurrency_slots(WAREHOUSE_POOL, instance.global_op_concurrency_default_limit or 1)


def run_request(upload: NewUpload, last_month: str, registered: bool = True, run_key: str = "") -> dg.RunRequest:
    """A registered unit's file naming a month in range runs in its unit × month partition; anything
    else (no month, a month out of range, a unit not registered) as an unsorted upload."""
    f = upload.file
    run_key = run_key or upload.run_key
    tags = {"inservice/unit": f.unit, "inservice/file": f.name, UPLOAD_TAG: run_key, CONTENT_TAG: upload.run_key}
    month = data_month(f.name)
    if registered and month is not None and FIRST_MONTH <= month <= last_month:
        config = UploadConfig(file_name=f.name, content_hash=upload.content_hash, received_at=upload.received_at)
        return dg.RunRequest(run_key=run_key, job_name=ingest_upload_job.name,
                             partition_key=dg.MultiPartitionKey({"unit": f.unit, "month": month}),
                             run_config=dg.RunConfig(ops={"partner_upload": config}), tags=tags)
    unsorted = UnsortedUploadConfig(unit=f.unit, file_name=f.name, content_hash=upload.content_hash,
                                    received_at=upload.received_at)
    return dg.RunRequest(run_key=run_key, job_name=ingest_unsorted_job.name,
                         run_config=dg.RunConfig(ops={"unsorted_upload": unsorted}), tags=tags)


@dg.sensor(
    name="inbox_sensor",
    jobs=[ingest_upload_job, ingest_unsorted_job],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches $INSERVICE_HOME/inbox/<UNIT>/ (folders starting with _ are skipped). A file "
                "is queued once its size and mtime hold still between two ticks; one run per file "
                f"dropped, at most {MAX_RUNS_PER_TICK} per tick. Files of unregistered units are refused "
                "(F05) as unsorted uploads, never made partitions.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, inservice: InserviceResource) -> dg.SensorResult:
    settings = inservice.settings()
    cursor = InboxCursor.from_json(context.cursor)
    keys: dict[str, str] = {}

    def already_done(upload: NewUpload) -> bool:
        key = with_run_key(context.instance, upload)
        if key is not None:
            keys[upload.file.rel] = key
        return key is None

    plan = plan_tick(settings.inbox, cursor, max_uploads=MAX_RUNS_PER_TICK, already_done=already_done)
    for folder in plan.ignored_folders:
        context.log.warning(f"inbox/{folder}/ is not a unit code folder: ignored")
    known = set(context.instance.get_dynamic_partitions(UNIT_KEYS))
    uploads = plan.uploads
    register: set[str] | None = set()
    if any(u.file.unit not in known for u in uploads):
        register = registered_units(settings)  # only for a unit seen for the first time
        if register is None:  # the warehouse is busy: hand those files on next tick, not unjudged
            later = [u for u in uploads if u.file.unit not in known]
            for u in later:
                plan.cursor.files[u.file.rel][2] = ""
            uploads = [u for u in uploads if u.file.unit in known]
            context.log.info(f"{len(later)} file(s) of new units wait a tick: the unit register is busy")
    last_month = MONTHS.get_last_partition_key() or FIRST_MONTH
    requests = [run_request(u, last_month, u.file.unit in known or u.file.unit in (register or set()),
                            keys[u.file.rel]) for u in uploads]
    partition_requests = []
    if requests:
        _ensure_pool_limit(context.instance)
        units = {r.partition_key.keys_by_dimension["unit"] for r in requests
                 if isinstance(r.partition_key, dg.MultiPartitionKey)}
        missing = sorted(units - known)
        if missing:
            partition_requests.append(UNITS.build_add_request(missing))
    summary = (f"{len(requests)} queued, {plan.waiting} new or changing (wait a tick), "
               f"{plan.deferred} over this tick's cap, {len(plan.cursor.files)} file(s) in the inbox")
    context.log.info(summary)
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json(),
                           dynamic_partitions_requests=partition_requests,
                           skip_reason=None if requests else summary)


@dg.sensor(name="unit_register_sensor", minimum_interval_seconds=REGISTER_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Keeps the `unit` partitions of partner_upload equal to the unit register: a unit "
                       "registered (CLI or the register_unit job) appears, one not registered disappears.")
def unit_register_sensor(context: dg.SensorEvaluationContext, inservice: InserviceResource) -> dg.SensorResult:
    register = registered_units(inservice.settings())
    if register is None:
        return dg.SensorResult(skip_reason="the warehouse is busy with a writer; next tick")
    register -= {PLAN_UNIT}  # the planning service's yearly exports have their own partitions (plans)
    known = set(context.instance.get_dynamic_partitions(UNIT_KEYS))
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if register - known:
        requests.append(UNITS.build_add_request(sorted(register - known)))
    if known - register:
        requests.append(UNITS.build_delete_request(sorted(known - register)))
    if not requests:
        return dg.SensorResult(skip_reason=f"{len(register)} registered unit(s), all partitions")
    return dg.SensorResult(dynamic_partitions_requests=requests)


UPLOAD_JOBS: list[Any] = [ingest_upload_job, ingest_unsorted_job]  # job definitions (asset jobs here)
UPLOAD_SENSORS = [inbox_sensor, unit_register_sensor]
