"""Publications: one job per publication (the warehouse checks as steps, then the publication), the
monthly schedule (on by default), and the county export job."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from typing import Any

import dagster as dg
from pydantic import Field

from inservice.assets.publish import blocked, monthly_statistics, yearbook_extract
from inservice.assets.shared import WAREHOUSE_POOL, InserviceResource, refused
from inservice.config import TAIPEI
from inservice.warehouse.checks import ChecksFailed

# One job per publication. Each also materialises the warehouse group, so its blocking checks run as
# steps of the same run (the failed one is visible in the run) before the publication, which they stop;
# the core's gate stops it on every other path too.
_CHECKED = dg.AssetSelection.groups("warehouse")
monthly_statistics_job = dg.define_asset_job(
    "publish_monthly", selection=dg.AssetSelection.assets(monthly_statistics) | _CHECKED,
    description="統計月報: the warehouse checks, then the monthly statistics of the chosen month (the schedule "
                "takes the month just ended on the 6th). Nothing is published if a check fails.")
yearbook_job = dg.define_asset_job(
    "publish_yearbook", selection=dg.AssetSelection.assets(yearbook_extract) | _CHECKED,
    description="年報 教師進修篇: the warehouse checks, then a frozen snapshot of the chosen year and its extract "
                "(by hand, after the January audit). Nothing is published if a check fails.")


@dg.schedule(job=monthly_statistics_job, cron_schedule="0 6 6 * *", execution_timezone="Asia/Taipei",
             name="publish_monthly_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="On the 6th at 06:00 Asia/Taipei: the monthly statistics of the month just ended "
                         "(its files were due by the 5th).")
def monthly_statistics_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    t = context.scheduled_execution_time.astimezone(TAIPEI)
    year, month = (t.year, t.month - 1) if t.month > 1 else (t.year - 1, 12)
    return dg.RunRequest(partition_key=f"{year:04d}-{month:02d}")


class CountyExportConfig(dg.Config):
    county: str = Field(description="縣市代碼，例 63000 臺北市 / county code")
    from_month: str = Field(description="起始月份 YYYY-MM（研習起日） / first month (course start)")
    to_month: str = Field(description="結束月份 YYYY-MM / last month")
    format: str = Field(default="xlsx", description="xlsx、csv 或 parquet / file format")


@dg.op(pool=WAREHOUSE_POOL, description="縣市匯出 All records of a county's units, pseudonymised; refused while a "
                                        "blocking warehouse check fails.")
def export_county_records(context: dg.OpExecutionContext, config: CountyExportConfig,
                  inservice: InserviceResource) -> dg.Output[dict]:
    from inservice.publish.export import export_county

    try:
        ex = export_county(inservice.settings(), config.county, config.from_month, config.to_month, config.format)
    except ChecksFailed as exc:
        raise blocked(exc) from exc
    except ValueError as exc:
        raise refused(exc) from exc
    context.log.info(f"county {ex.county} {ex.first}..{ex.last}: {ex.rows}")
    return dg.Output(ex.as_json(), metadata={
        "courses": ex.rows["courses"], "attendance": ex.rows["attendance"], "units": ", ".join(ex.units),
        **{f"file_{i + 1}": dg.MetadataValue.path(f) for i, f in enumerate(ex.files)}})


@dg.job(name="publish_county_export", tags={"inservice/staff": "export"},
        description="縣市匯出：某縣市所屬單位之全部課程與名單（假名化），檔案在 publish/export/。A county's export; "
                    "nothing is written while a blocking warehouse check fails.")
def county_export_job() -> None:
    export_county_records()


PUBLISH_JOBS: list[Any] = [monthly_statistics_job, yearbook_job, county_export_job]  # asset and op jobs
PUBLISH_SCHEDULES = [monthly_statistics_schedule]
