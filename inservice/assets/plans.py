"""Planning survey (group "plans"): plan exports from inbox/PLAN/ through the core (PlanIngestor), the
plan tables with their blocking checks, and the four publications per school year.

Partitions are ROC school years (static, from 101 = 2012-08-01..2013-07-31, to the next one). The
publications are gated like the monthly statistics: the core refuses to publish while a blocking
check fails (`inservice.warehouse.checks.require_passing`, called first by `publish_plans`), and the
job runs the checks as its own steps. The work is the plain-Python core's (inservice.plans).
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg
from pydantic import Field

from inservice.assets.publish import gated
from inservice.assets.shared import (
    OWNERS,
    RETRY,
    WAREHOUSE_POOL,
    InserviceResource,
    access_metadata,
    permanent,
    table_schema,
)
from inservice.assets.uploads import ACCEPTED_WHAT, findings_table, top_rules_markdown
from inservice.assets.warehouse import WAREHOUSE_ASSETS, blocking_check
from inservice.inbox import arrival, find_upload, settle
from inservice.plans.publish import PUBLICATIONS, TITLES
from inservice.schemas.plans import FIRST_SCHOOL_YEAR, PLAN_UNIT, current_school_year, parse_plan_name
from inservice.warehouse import checks, ddl
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.backend import TRANSIENT_ERRORS

GROUP = "plans"
SCHOOL_YEARS = dg.StaticPartitionsDefinition([str(y) for y in range(FIRST_SCHOOL_YEAR, current_school_year() + 2)])


class PlanExportConfig(dg.Config):
    file_name: str = Field(description="檔名，例 PLAN_106_teacher.xlsx（在 inbox/PLAN/，或重跑保留於 "
                                       "archive／quarantine 者） / file name in inbox/PLAN/ (or a kept copy to re-run)")
    content_hash: str = Field(default="", description="內容雜湊（感測器填入）；空白＝收件匣那份，否則最新保留那份 / "
                                                      "content hash (the sensor sets it)")
    received_at: str = Field(default="", description="收件時間 ISO-8601；空白＝檔案抵達時間 / receipt time; empty = "
                                                     "the file's arrival")


PLAN_ACCEPTED = "plan_export_accepted"


@dg.asset(
    partitions_def=SCHOOL_YEARS, group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS,
    kinds={"python", "excel", "csv"},
    check_specs=[dg.AssetCheckSpec(PLAN_ACCEPTED, asset="plan_export", description=ACCEPTED_WHAT,
                                   partitions_def=SCHOOL_YEARS)],
    description="A planning survey export (PLAN_<學年度>_school / _teacher, .xlsx or .csv) from inbox/PLAN/: "
                "F-rules on the file, P-rules row by row, receipt (JSON + Excel) in outbox/PLAN/; loaded, it "
                "replaces the school year's plans of its kind as a whole (the earlier revision kept in the "
                "history). The original then moves to archive/PLAN/<學年度>/ (or quarantine/PLAN/).",
)
def plan_export(context: dg.AssetExecutionContext, config: PlanExportConfig,
                inservice: InserviceResource):  # noqa: ANN201 (a generator of a result and a check)
    from inservice.plans.intake import PlanIngestor

    settings = inservice.settings()
    name = parse_plan_name(config.file_name)
    years = SCHOOL_YEARS.get_partition_keys()
    if name is not None and str(name.school_year) in years and str(name.school_year) != context.partition_key:
        raise dg.Failure(description=f"{config.file_name} is school year {name.school_year}, not the partition "
                                     f"{context.partition_key}", allow_retries=False)
    path = find_upload(settings, PLAN_UNIT, config.file_name, config.content_hash)
    if path is None:
        raise dg.Failure(description=f"{config.file_name} not found in inbox/PLAN/, archive or quarantine",
                         allow_retries=False)
    received = config.received_at or (arrival(path.stat().st_ctime) if settings.inbox in path.parents else None)
    session = WriteSession(settings)  # leaving it: the analysts' refresh, shown below
    try:
        with session as wh:
            receipt = PlanIngestor(settings, wh, load=True).ingest(path, received, unit=PLAN_UNIT)
        moved = settle(settings, PLAN_UNIT, path, receipt)
    except TRANSIENT_ERRORS:
        raise  # the retry policy tries again; the transaction left the warehouse as it was
    except Exception as exc:
        raise permanent(exc, "processing failed (the warehouse is unchanged)") from exc
    context.log.info(f"{path.name}: {receipt['status']}{' ' + receipt['refusal'] if receipt['refusal'] else ''}; "
                     f"original now {moved}")
    meta = {"status": receipt["status"], "refusal": receipt["refusal"] or "none", "kind": receipt.get("kind") or "",
            **{f"rows_{k}": v for k, v in receipt["plans"].items()},
            "findings": len(receipt["findings"]),
            "top_rules": dg.MetadataValue.md(top_rules_markdown(receipt["findings"])),
            "upload_id": receipt.get("upload_id") or "", "original": dg.MetadataValue.path(str(moved)),
            **{k: v for k, v in receipt.get("merge", {}).items()}, **access_metadata(session.refresh)}
    files = receipt.get("receipt_files") or []
    if files:
        meta["receipt"] = dg.MetadataValue.path(files[0])
        meta["receipt_xlsx"] = dg.MetadataValue.path(files[1])
    if receipt["findings"]:
        meta["findings_preview"] = findings_table(receipt["findings"])
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(check_name=PLAN_ACCEPTED, passed=receipt["status"] != "refused",
                              severity=dg.AssetCheckSeverity.WARN, metadata={"status": receipt["status"]})


@dg.asset(
    group_name=GROUP, deps=[plan_export], pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS,
    kinds={"duckdb", "table"},
    description="The plans in force (school_plans: one row per school and domain; teacher_plans: one row per "
                "teacher_key and domain — no national ID is stored), the replaced revisions "
                "(school_plans_history, teacher_plans_history) and their register (plan_revisions).",
    metadata={"dagster/column_schema": table_schema(ddl.TEACHER_PLANS), "dagster/table_name": "main.teacher_plans"},
)
def plan_tables(inservice: InserviceResource) -> dg.MaterializeResult:
    with inservice.warehouse(read_only=True) as wh:
        counts = {t.name: wh.con.execute(f"SELECT count(*) FROM main.{t.name}").fetchone()[0]
                  for t in ddl.PLAN_TABLES}
        years = [r[0] for r in wh.con.execute("SELECT DISTINCT school_year FROM main.plan_revisions ORDER BY 1")
                 .fetchall()]
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["teacher_plans"], **counts,
                                          "school_years": ", ".join(map(str, years)) or "none"})


PLAN_CHECKS = [blocking_check(plan_tables, c) for c in checks.PLAN_BLOCKING]
# publications read the plan tables and the warehouse tables: lineage shows it, their checks guard them
_DEPS = [dg.AssetDep(plan_tables.key), *(dg.AssetDep(a.key) for a in WAREHOUSE_ASSETS)]


@dg.multi_asset(
    partitions_def=SCHOOL_YEARS, group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY,
    backfill_policy=dg.BackfillPolicy.single_run(), can_subset=False,
    specs=[dg.AssetSpec(f"plan_{name}", deps=_DEPS, owners=OWNERS, kinds={"duckdb", "excel", "html"},
                        description=f"{TITLES[name]}（per school year）: stat_plan_* tables, workbook and HTML page "
                                    "under publish/plans/<學年度>/. Published together with the other three, "
                                    "refused with nothing written while a blocking check fails.")
           for name in PUBLICATIONS],
)
def plan_publications(context: dg.AssetExecutionContext, inservice: InserviceResource):  # noqa: ANN201
    from inservice.plans.publish import publish_plans

    settings = inservice.settings()

    def one(year: str) -> dict:
        pub = publish_plans(settings, year)
        context.log.info(f"{year} revision {pub.revision} as of {pub.as_of.isoformat()}")
        return {"school_year": year, "revision": pub.revision, "as_of": pub.as_of.isoformat(),
                **{k: v for k, v in pub.totals.items() if v is not None}, "files": pub.files,
                **access_metadata(pub.access)}

    done = gated(context, one)
    last = done[-1]
    for i, name in enumerate(PUBLICATIONS):
        meta = {k: (dg.MetadataValue.json(v) if isinstance(v, list) else v) for k, v in last.items()
                if k != "files"}
        meta["workbook"] = dg.MetadataValue.path(last["files"][2 * i])
        meta["html"] = dg.MetadataValue.path(last["files"][2 * i + 1])
        if len(done) > 1:
            meta["school_years"] = dg.MetadataValue.json([d["school_year"] for d in done])
        yield dg.MaterializeResult(asset_key=f"plan_{name}", metadata=meta)


PLAN_ASSETS = [plan_export, plan_tables, plan_publications]
