"""Dagster assets of the publications (group "publish"): the monthly statistics per month and the
yearbook extract per year, over the plain-Python core in inservice.publish.

Gate: the core refuses to publish from a warehouse that fails a blocking check
(`inservice.warehouse.checks.require_passing`, called first by `publish_month`/`publish_year`), so
every path — the schedule, a job, "Materialize" on the asset page, a backfill, the CLI — publishes
nothing then: no file, no stat_* row, no snapshot, and (the asset fails) no materialization.
The publication jobs (inservice/pipelines/publish.py) also run the warehouse checks as their own
steps, so the run shows which one failed.

A backfill of many partitions is ONE run (BackfillPolicy.single_run), publishing each month in turn.
"""

# no `from __future__ import annotations`: Dagster inspects the context annotation at definition time
from collections.abc import Callable

import dagster as dg

from inservice.assets.shared import OWNERS, RETRY, WAREHOUSE_POOL, InserviceResource, access_metadata
from inservice.assets.warehouse import WAREHOUSE_ASSETS
from inservice.warehouse.checks import ChecksFailed

MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2013-01", timezone="Asia/Taipei", fmt="%Y-%m")
YEARLY = dg.TimeWindowPartitionsDefinition(cron_schedule="0 0 1 1 *", start="2013", fmt="%Y", timezone="Asia/Taipei")
# publications read the warehouse tables: lineage shows it, and the checks on them guard publishing
WAREHOUSE_DEPS = [dg.AssetDep(a.key) for a in WAREHOUSE_ASSETS]


def _metadata(totals: dict, files: list[str]) -> dict:
    return {**{k: dg.MetadataValue.float(float(v)) if isinstance(v, float) else dg.MetadataValue.int(int(v))
               for k, v in totals.items()},
            "files": dg.MetadataValue.json(files),
            **{f"file_{i + 1}": dg.MetadataValue.path(f) for i, f in enumerate(files[:4])}}


def blocked(exc: ChecksFailed) -> dg.Failure:
    """A refused publication: a failure that names the checks, never retried (the data must be fixed)."""
    return dg.Failure(description=str(exc), allow_retries=False, metadata={
        "failed_checks": dg.MetadataValue.json({c.key: details for c, details in exc.failed})})


def gated(context: dg.AssetExecutionContext, publish: Callable[[str], dict]) -> list[dict]:
    """Publishes each partition of the run (one, or a backfill's range in one run) through the core."""
    out = []
    for key in context.partition_keys:
        try:
            out.append(publish(key))
        except ChecksFailed as exc:
            raise blocked(exc) from exc
    return out


@dg.asset(partitions_def=MONTHLY, group_name="publish", pool=WAREHOUSE_POOL, kinds={"duckdb", "excel", "html"},
          retry_policy=RETRY, owners=OWNERS, deps=WAREHOUSE_DEPS,
          backfill_policy=dg.BackfillPolicy.single_run(),
          description="教師在職進修統計月報 (monthly statistics): stat_* tables (one publication per run, keyed by "
                      "as_of), workbook and HTML page under publish/monthly/YYYY-MM/. Refused, with nothing "
                      "written, while a blocking warehouse check fails. Several months selected = one run.")
def monthly_statistics(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.publish.monthly import publish_month

    settings = inservice.settings()

    def one(month: str) -> dict:
        pub = publish_month(settings, month)
        context.log.info(f"{pub.month} revision {pub.revision} as of {pub.as_of.isoformat()}")
        return {**_metadata(pub.totals, pub.files), "month": pub.month, "revision": pub.revision,
                "as_of": pub.as_of.isoformat(), **access_metadata(pub.access)}

    done = gated(context, one)
    if len(done) == 1:
        return dg.MaterializeResult(metadata=done[0])
    return dg.MaterializeResult(metadata={"months": dg.MetadataValue.json([d["month"] for d in done])})


@dg.asset(partitions_def=YEARLY, group_name="publish", pool=WAREHOUSE_POOL, kinds={"duckdb", "parquet", "excel"},
          retry_policy=RETRY, owners=OWNERS, deps=WAREHOUSE_DEPS,
          backfill_policy=dg.BackfillPolicy.single_run(),
          description="師資培育統計年報 — 教師進修篇 (yearbook extract): a frozen snapshot of the year and the "
                      "extract from it under publish/yearbook/YYYY/. Refused, with nothing written (no snapshot "
                      "either), while a blocking warehouse check fails.")
def yearbook_extract(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.publish.yearbook import publish_year

    settings = inservice.settings()

    def one(year: str) -> dict:
        ext = publish_year(settings, year)
        context.log.info(f"{ext.year} snapshot {ext.snapshot.snapshot_id}")
        return {**_metadata(ext.totals, ext.files), "year": ext.year, "snapshot_id": ext.snapshot.snapshot_id,
                "snapshot_rows": dg.MetadataValue.json({"courses": ext.snapshot.courses,
                                                        "attendance": ext.snapshot.attendance}),
                **access_metadata(ext.access)}

    done = gated(context, one)
    if len(done) == 1:
        return dg.MaterializeResult(metadata=done[0])
    return dg.MaterializeResult(metadata={"years": dg.MetadataValue.json([d["year"] for d in done])})


PUBLISH_ASSETS = [monthly_statistics, yearbook_extract]
