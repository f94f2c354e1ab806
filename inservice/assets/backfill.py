"""The legacy archive's migration as an asset: `inservice backfill SOURCE` from the UI (Launchpad).

Progress is logged per chunk (rows read of the source's total, loaded, archived, refused); the
materialization carries the reconciliation's figures and the paths of the reconciliation and of the
sealed cold archive's manifest. A run that fails or is killed is continued by launching it again with
the same source: committed chunks are skipped.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg
from pydantic import Field

from inservice.assets.shared import OWNERS, WAREHOUSE_POOL, InserviceResource, access_metadata, refused
from inservice.backfill.core import Progress, run_backfill
from inservice.backfill.source import SourceError
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.backend import TRANSIENT_ERRORS


class BackfillConfig(dg.Config):
    source: str = Field(description="舊系統資料來源：資料庫連線字串（postgresql://…），或含 inservice_courses/ 與 "
                                    "inservice_attendance/（Parquet 或 CSV）之資料夾 / a database URL or a folder")
    batch_rows: int = Field(default=0, description="每段列數；0＝預設（200000，接續時沿用第一次之設定） / rows per "
                                                   "chunk; 0 = the default")


def backfill_metadata(report: dict) -> dict:
    meta = {k: report[k] for k in ("run_id", "source", "cutoff", "complete", "chunks", "rows_read", "loaded",
                                   "archived", "refused", "balanced")}
    meta["refused_by_rule"] = dg.MetadataValue.json(report["refused_by_rule"])
    meta["units_registered"] = len(report["units_registered"])
    meta["reconciliation"] = dg.MetadataValue.path(report["reconciliation_file"])
    if report["archive"]["manifest"]:
        meta["archive_manifest"] = dg.MetadataValue.path(report["archive"]["manifest"])
    return meta


@dg.asset(
    group_name="ingest",
    pool=WAREHOUSE_POOL,
    owners=OWNERS,
    kinds={"python", "duckdb", "parquet"},
    description=(
        "舊系統資料移轉 The legacy archive migrated once: both legacy tables read in key order and cut into chunks, "
        "checked by the same rules as uploads, merged in bulk; courses started on or before the archive cutoff "
        "(and their attendance) go to the sealed cold archive (Parquet by year, manifest with SHA-256). "
        "Reconciliation: rows read = loaded + archived + refused, per unit and year. Resumable: launch again."),
)
def legacy_archive(context: dg.AssetExecutionContext, config: BackfillConfig,
                   inservice: InserviceResource) -> dg.MaterializeResult:
    def progress(p: Progress) -> None:
        if p.skipped:
            return
        share = p.rows_read / p.rows_total if p.rows_total else 1.0
        context.log.info(f"chunk {p.chunk}: {p.rows_read:,}/{p.rows_total:,} rows ({share:.1%}), loaded {p.loaded:,}, "
                         f"archived {p.archived:,}, refused {p.refused:,}, {p.seconds:.0f} s")

    settings = inservice.settings()
    session = WriteSession(settings)  # held: its analysts' refresh is shown below
    try:
        report = run_backfill(settings, config.source, config.batch_rows or None, progress, session)
    except SourceError as exc:
        raise refused(exc) from exc
    except TRANSIENT_ERRORS:
        raise
    context.log.info(f"backfill {report['run_id']}: {report['rows_read']:,} read = {report['loaded']:,} loaded + "
                     f"{report['archived']:,} archived + {report['refused']:,} refused")
    return dg.MaterializeResult(metadata={**backfill_metadata(report), **access_metadata(session.refresh)})


BACKFILL_ASSETS = [legacy_archive]
