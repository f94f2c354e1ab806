"""Dagster assets of the publications (group "publish"): the monthly statistics per month and the
yearbook extract per year, over the plain-Python core in inservice.publish.

Both read and write the DuckDB warehouse (stat_* tables, snapshot registry), so they run in the
"warehouse" pool with the other writers and use the pipeline's `inservice` resource (INSERVICE_HOME).
The monthly job runs on the 6th at 06:00 Asia/Taipei for the month just ended (files are due by the
5th). The yearbook is not scheduled: it is taken after the January audit of the previous year, by
hand (materialise the year's partition).
"""

# no `from __future__ import annotations`: Dagster inspects the context annotation at definition time
import dagster as dg

from inservice.config import TAIPEI
from inservice.pipelines.resources import OWNERS, RETRY, WAREHOUSE_POOL, InserviceResource

MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2013-01", timezone="Asia/Taipei", fmt="%Y-%m")
YEARLY = dg.TimeWindowPartitionsDefinition(cron_schedule="0 0 1 1 *", start="2013", fmt="%Y", timezone="Asia/Taipei")


def _metadata(totals: dict, files: list[str]) -> dict:
    return {**{k: dg.MetadataValue.float(float(v)) if isinstance(v, float) else dg.MetadataValue.int(int(v))
               for k, v in totals.items()},
            "files": dg.MetadataValue.json(files)}


@dg.asset(partitions_def=MONTHLY, group_name="publish", pool=WAREHOUSE_POOL, kinds={"duckdb", "excel", "html"},
          retry_policy=RETRY, owners=OWNERS,
          description="教師在職進修統計月報: stat_* tables (one publication per run, keyed by as_of), "
                      "workbook and HTML page under publish/monthly/YYYY-MM/")
def monthly_statistics(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.publish.monthly import publish_month

    pub = publish_month(inservice.settings(), context.partition_key)
    context.log.info(f"{pub.month} revision {pub.revision} as of {pub.as_of.isoformat()}")
    return dg.MaterializeResult(metadata={**_metadata(pub.totals, pub.files), "revision": pub.revision,
                                          "as_of": pub.as_of.isoformat()})


@dg.asset(partitions_def=YEARLY, group_name="publish", pool=WAREHOUSE_POOL, kinds={"duckdb", "parquet", "excel"},
          retry_policy=RETRY, owners=OWNERS,
          description="師資培育統計年報 — 教師進修篇: a frozen snapshot of the year and the extract from it "
                      "under publish/yearbook/YYYY/")
def yearbook_extract(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.publish.yearbook import publish_year

    ext = publish_year(inservice.settings(), context.partition_key)
    context.log.info(f"{ext.year} snapshot {ext.snapshot.snapshot_id}")
    return dg.MaterializeResult(metadata={**_metadata(ext.totals, ext.files), "snapshot_id": ext.snapshot.snapshot_id,
                                          "snapshot_rows": dg.MetadataValue.json(
                                              {"courses": ext.snapshot.courses,
                                               "attendance": ext.snapshot.attendance})})


# Each publish job materialises the warehouse group too, so its blocking checks run first in the same
# run and stop publishing when they fail (a blocking check only holds back assets in its own run).
_CHECKED = dg.AssetSelection.groups("warehouse")
monthly_statistics_job = dg.define_asset_job("publish_monthly_job",
                                             selection=dg.AssetSelection.assets(monthly_statistics) | _CHECKED)
yearbook_job = dg.define_asset_job("publish_yearbook_job",
                                   selection=dg.AssetSelection.assets(yearbook_extract) | _CHECKED)


@dg.schedule(job=monthly_statistics_job, cron_schedule="0 6 6 * *", execution_timezone="Asia/Taipei",
             name="publish_monthly_schedule")
def monthly_statistics_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """On the 6th at 06:00 Taipei, the month just ended (its files were due by the 5th)."""
    t = context.scheduled_execution_time.astimezone(TAIPEI)
    year, month = (t.year, t.month - 1) if t.month > 1 else (t.year - 1, 12)
    return dg.RunRequest(partition_key=f"{year:04d}-{month:02d}")


PUBLISH_ASSETS = [monthly_statistics, yearbook_extract]
PUBLISH_JOBS = [monthly_statistics_job, yearbook_job]
PUBLISH_SCHEDULES = [monthly_statistics_schedule]
