"""Corrections group: correction workbooks from inbox/_corrections/, the audit log and the archive
exceptions register. The work is the plain-Python core's (inservice.corrections); this module finds
files, hands them on and reports. Jobs, the sensor and `sealing`: inservice/pipelines/corrections.py.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from datetime import datetime

import dagster as dg

from inservice.assets.shared import (
    OWNERS,
    RETRY,
    WAREHOUSE_POOL,
    InserviceResource,
    access_metadata,
    permanent,
    table_schema,
)
from inservice.config import TAIPEI
from inservice.corrections.apply import FOLDER, process_workbook
from inservice.corrections.watch import settle_workbook
from inservice.inbox import find_upload
from inservice.warehouse import ddl
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.backend import TRANSIENT_ERRORS

GROUP = "corrections"


def md_table(rows: list[dict], columns: list[str], limit: int = 50) -> str:
    if not rows:
        return "(none)"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows[:limit]:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"… {len(rows) - limit} more")
    return "\n".join(lines)


# --- workbooks ------------------------------------------------------------------------------------
class CorrectionConfig(dg.Config):
    file_name: str  # a workbook in inbox/_corrections/ (or kept in archive/ or quarantine/ to re-run)
    content_hash: str = ""  # the exact copy (the sensor sets it); empty = inbox copy, else newest kept
    received_at: str = ""  # ISO-8601; empty = now (the sensor passes the arrival time)


@dg.asset(
    group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS, kinds={"python", "duckdb"},
    description=(
        "A correction workbook (修改已結案課程內容申請表) from inbox/_corrections/: each row applied to a "
        "closed production course or refused with its reason; the applied rows in one transaction, through "
        "the history. Receipt (JSON + Excel) in outbox/_corrections/; the original then moves to "
        "archive/_corrections/<YYYYMM>/ (or quarantine/_corrections/ if unreadable). The same bytes twice "
        "apply nothing twice."),
)
def correction_workbook(context: dg.AssetExecutionContext, config: CorrectionConfig,
                        inservice: InserviceResource) -> dg.MaterializeResult:
    settings = inservice.settings()
    path = find_upload(settings, FOLDER, config.file_name, config.content_hash)
    if path is None:
        raise dg.Failure(description=f"{FOLDER}/{config.file_name} is in none of inbox/, quarantine/, archive/",
                         allow_retries=False)
    session = WriteSession(settings)  # leaving it: the analysts' refresh, shown below
    try:
        with session as wh:
            receipt = process_workbook(path, settings, wh, config.received_at or None)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        raise permanent(exc, "correction workbook failed (nothing of it was applied)") from exc
    moved = settle_workbook(settings, path, receipt)
    context.log.info(f"{path.name}: {receipt['status']}; original now {moved}")
    rows = receipt["rows"]
    return dg.MaterializeResult(metadata={
        "file": receipt["file"], "status": receipt["status"], "refusal": receipt["refusal"] or "none",
        **{f"rows_{k}": v for k, v in rows.items()},
        "changes": dg.MetadataValue.md(md_table(receipt["changes"], ["row", "unit_code", "course_code", "field",
                                                                 "status", "reason", "message_en"])),
        "receipt": dg.MetadataValue.path(receipt["receipt_files"][0]),
        "receipt_xlsx": dg.MetadataValue.path(receipt["receipt_files"][1]),
        "original": dg.MetadataValue.path(str(moved)),
        "content_hash": receipt["content_hash"],
        **access_metadata(session.refresh),
    })


@dg.asset(
    group_name=GROUP, deps=[correction_workbook], pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS,
    kinds={"duckdb", "table"},
    description="The correction audit log (corrections): every workbook row, applied or refused, with its "
                "letter number and reason; national IDs only masked.",
    metadata={"dagster/column_schema": table_schema(ddl.CORRECTIONS), "dagster/table_name": "main.corrections"},
)
def correction_log(inservice: InserviceResource) -> dg.MaterializeResult:
    with inservice.warehouse(read_only=True) as wh:
        by_status = dict(wh.con.execute("SELECT status, count(*) FROM corrections GROUP BY 1").fetchall())
        [(books,)] = wh.con.execute("SELECT count(*) FROM correction_workbooks").fetchall()
    return dg.MaterializeResult(metadata={"dagster/row_count": sum(by_status.values()), "workbooks": books,
                                          **{f"rows_{k}": v for k, v in sorted(by_status.items())}})


# --- the archive exceptions register ----------------------------------------------------------------
EXCEPTIONS_SQL = """SELECT exception_id, unit_code, coalesce(course_code, 'all') AS course_code, letter_no,
    letter_date, valid_until,
    CASE WHEN valid_until < $1 THEN 'expired' WHEN letter_date > $1 THEN 'not yet' ELSE 'in force' END AS status
    FROM archive_exceptions ORDER BY exception_id"""


@dg.asset(
    group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS, kinds={"duckdb", "table"},
    description="The archive-cutoff exceptions register (archive_exceptions, spec §6): approval letters that "
                "admit courses starting on or before the cutoff (C07), per unit and course or all; each shown "
                "in force, expired (past valid_until) or not yet (letter dated later), as of today.",
    metadata={"dagster/column_schema": table_schema(ddl.ARCHIVE_EXCEPTIONS),
              "dagster/table_name": "main.archive_exceptions"},
)
def archive_exceptions(inservice: InserviceResource) -> dg.MaterializeResult:
    today = datetime.now(TAIPEI).date()
    with inservice.warehouse(read_only=True) as wh:
        cur = wh.con.execute(EXCEPTIONS_SQL, [today])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("in force", "expired", "not yet")}
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(rows), "as_of": today.isoformat(),
        **{k.replace(" ", "_"): v for k, v in counts.items()},
        "register": dg.MetadataValue.md(md_table(rows, names)),
    })


CORRECTION_ASSETS = [correction_workbook, correction_log, archive_exceptions]
