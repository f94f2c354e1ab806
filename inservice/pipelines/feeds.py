"""Feeds: the daily pull job, its schedule (02:00 Asia/Taipei, the day just ended, one run per unit)
and the sensor that makes each unit of the feed register a `feed_unit` partition."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import os
from datetime import date, timedelta
from typing import Any

import dagster as dg

from inservice.assets.feeds import FEED_UNIT_KEYS, FEED_UNITS, partner_feed
from inservice.assets.shared import InserviceResource
from inservice.config import TAIPEI
from inservice.feeds import register as feed_register
from inservice.warehouse.backend import UNREADABLE_NOW

REGISTER_INTERVAL = int(os.environ.get("INSERVICE_FEED_SENSOR_INTERVAL", "300"))

feed_job = dg.define_asset_job(
    "feed_pull", selection=dg.AssetSelection.assets(partner_feed),
    description="One unit's feed for one day (started by feed_daily_schedule, or by a backfill).")


def feed_run_requests(units: list[str], day: date) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=f"feed:{u}:{day.isoformat()}",
                          partition_key=dg.MultiPartitionKey({"unit": u, "day": day.isoformat()}),
                          tags={"inservice/unit": u, "inservice/feed_day": day.isoformat()})
            for u in sorted(units)]


@dg.schedule(job=feed_job, cron_schedule="0 2 * * *", execution_timezone="Asia/Taipei", name="feed_daily_schedule",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="02:00 Asia/Taipei: every registered feed unit pulls, as the partition of the day "
                         "just ended.")
def feed_daily_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    day = context.scheduled_execution_time.astimezone(TAIPEI).date() - timedelta(days=1)
    units = list(context.instance.get_dynamic_partitions(FEED_UNIT_KEYS))
    if not units:
        return dg.SkipReason("no feed units yet (feed_register_sensor adds them from the feed register)")
    return feed_run_requests(units, day)


@dg.sensor(name="feed_register_sensor", minimum_interval_seconds=REGISTER_INTERVAL,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds each unit of the feed register (inservice feeds add) as a feed_unit partition.")
def feed_register_sensor(context: dg.SensorEvaluationContext, inservice: InserviceResource) -> dg.SensorResult:
    try:
        with inservice.warehouse(read_only=True, wait=0) as wh:
            registered = {f.unit_code for f in feed_register.feeds(wh)}
    except UNREADABLE_NOW as exc:  # busy with a writer: next tick
        return dg.SensorResult(skip_reason=f"warehouse not readable now ({type(exc).__name__}); next tick")
    known = set(context.instance.get_dynamic_partitions(FEED_UNIT_KEYS))
    missing = sorted(registered - known)
    if not missing:
        return dg.SensorResult(skip_reason=f"{len(registered)} feed unit(s), all known")
    return dg.SensorResult(dynamic_partitions_requests=[FEED_UNITS.build_add_request(missing)])


FEED_JOBS: list[Any] = [feed_job]  # job definitions (dagster names no common type of asset and op jobs)
FEED_SCHEDULES = [feed_daily_schedule]
FEED_SENSORS = [feed_register_sensor]
