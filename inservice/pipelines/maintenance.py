"""Warehouse upkeep: once a month, courses and attendance stored again in key order (DuckDB), so the
merge and the rules keep reading only the row groups of an upload's keys (`Warehouse.cluster`, also
`inservice warehouse cluster`). On the 1st at 03:00 Asia/Taipei: before the month's files arrive in
numbers, in the warehouse pool (uploads wait for it, ~40 s at 31M rows)."""

# No `from __future__ import annotations`: Dagster reads annotations at runtime.

import time

import dagster as dg

from inservice.assets.shared import RETRY, WAREHOUSE_POOL, InserviceResource


@dg.op(pool=WAREHOUSE_POOL, retry_policy=RETRY,
       description="倉儲依鍵值重排 Stores courses and attendance again in key order (DuckDB; PostgreSQL "
                   "walks its key index and needs nothing).")
def cluster_warehouse(context: dg.OpExecutionContext, inservice: InserviceResource) -> None:
    t = time.perf_counter()
    with inservice.warehouse() as wh:
        rows = wh.cluster()
    context.add_output_metadata({"tables": dg.MetadataValue.json(rows), "seconds": round(time.perf_counter() - t, 1)})
    context.log.info(f"clustered {rows or 'nothing (PostgreSQL)'}")


@dg.job(name="warehouse_cluster", tags={"inservice/staff": "maintenance"},
        description="倉儲依鍵值重排（每月）。Courses and attendance in key order, so an upload's look-ups "
                    "stay bounded by what it carries.")
def cluster_job() -> None:
    cluster_warehouse()


cluster_schedule = dg.ScheduleDefinition(
    name="warehouse_cluster_schedule", job=cluster_job, cron_schedule="0 3 1 * *",
    execution_timezone="Asia/Taipei", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the 1st at 03:00 Asia/Taipei: the warehouse stored again in key order.")

MAINTENANCE_JOBS = [cluster_job]
MAINTENANCE_SCHEDULES = [cluster_schedule]
