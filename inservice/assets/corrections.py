"""Corrections group: correction workbooks from inbox/_corrections/, the audit log, the archive
exceptions register, and the `sealing` job. The work is the plain-Python core's
(inservice.corrections); this module finds files, hands them on and reports.

Exposes CORRECTION_ASSETS, CORRECTION_JOBS, CORRECTION_SENSORS for the Definitions.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import os
from datetime import date, datetime

import dagster as dg

from inservice.config import TAIPEI
from inservice.corrections.apply import FOLDER, process_workbook
from inservice.corrections.lifecycle import DORMANT_FROM, DORMANT_TO, seal_dormant
from inservice.corrections.watch import scan_corrections, settle_workbook
from inservice.inbox import InboxCursor, NewUpload, find_upload, plan_tick
from inservice.pipelines.resources import (
    OWNERS,
    RETRY,
    TRANSIENT_ERRORS,
    WAREHOUSE_POOL,
    InserviceResource,
    permanent,
)
from inservice.warehouse import ddl
from inservice.warehouse.store import Warehouse

GROUP = "corrections"
INTERVAL = int(os.environ.get("INSERVICE_SENSOR_INTERVAL", "30"))
MAX_RUNS_PER_TICK = int(os.environ.get("INSERVICE_SENSOR_MAX_RUNS", "20"))
WORKBOOK_TAG = "inservice/correction"  # the run key as a tag we can look up


def _schema(table: ddl.Table) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(c.name, c.type, description=c.comment) for c in table.columns])


def _md(rows: list[dict], columns: list[str], limit: int = 50) -> str:
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
    try:
        with Warehouse(settings) as wh:
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
        "changes": dg.MetadataValue.md(_md(receipt["changes"], ["row", "unit_code", "course_code", "field",
                                                                 "status", "reason", "message_en"])),
        "receipt": dg.MetadataValue.path(receipt["receipt_files"][0]),
        "receipt_xlsx": dg.MetadataValue.path(receipt["receipt_files"][1]),
        "original": dg.MetadataValue.path(str(moved)),
        "content_hash": receipt["content_hash"],
    })


@dg.asset(
    group_name=GROUP, deps=[correction_workbook], pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS,
    kinds={"duckdb", "table"},
    description="The correction audit log (corrections): every workbook row, applied or refused, with its "
                "letter number and reason; national IDs only masked.",
    metadata={"dagster/column_schema": _schema(ddl.CORRECTIONS), "dagster/table_name": "main.corrections"},
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
    metadata={"dagster/column_schema": _schema(ddl.ARCHIVE_EXCEPTIONS),
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
        "register": dg.MetadataValue.md(_md(rows, names)),
    })


apply_corrections_job = dg.define_asset_job(
    "apply_corrections", selection=dg.AssetSelection.assets(correction_workbook, correction_log),
    description="One correction workbook through the core, then the audit log's counts. Started by "
                "corrections_sensor, or by hand (config file_name) to re-run a kept workbook.")

exceptions_register_job = dg.define_asset_job(
    "archive_exceptions_register", selection=dg.AssetSelection.assets(archive_exceptions),
    description="Refresh the view of the archive exceptions register.")


# --- the sensor ------------------------------------------------------------------------------------
def run_request(upload: NewUpload) -> dg.RunRequest:
    config = CorrectionConfig(file_name=upload.file.name, content_hash=upload.content_hash,
                              received_at=upload.received_at)
    return dg.RunRequest(run_key=upload.run_key, job_name=apply_corrections_job.name,
                         run_config=dg.RunConfig(ops={"correction_workbook": config}),
                         tags={"inservice/file": upload.file.name, WORKBOOK_TAG: upload.run_key})


@dg.sensor(
    name="corrections_sensor", jobs=[apply_corrections_job], minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches $INSERVICE_HOME/inbox/_corrections/ like inbox_sensor watches unit folders: a file "
                "is queued once its size and mtime hold still between two ticks; one run per content.",
)
def corrections_sensor(context: dg.SensorEvaluationContext, inservice: InserviceResource) -> dg.SensorResult:
    settings = inservice.settings()

    def already_done(upload: NewUpload) -> bool:
        runs = context.instance.get_run_records(dg.RunsFilter(tags={WORKBOOK_TAG: upload.run_key}), limit=1)
        return bool(runs)

    plan = plan_tick(settings.inbox, InboxCursor.from_json(context.cursor), max_uploads=MAX_RUNS_PER_TICK,
                     already_done=already_done, files=scan_corrections(settings))
    requests = [run_request(u) for u in plan.uploads]
    summary = (f"{len(requests)} queued, {plan.waiting} new or changing (wait a tick), "
               f"{plan.deferred} over this tick's cap")
    context.log.info(summary)
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json(),
                           skip_reason=None if requests else summary)


# --- sealing -------------------------------------------------------------------------------------------
class SealingConfig(dg.Config):
    confirm: bool = False  # false: list the dormant units only; true: seal them (staff confirmed)
    from_date: str = DORMANT_FROM.isoformat()
    to_date: str = DORMANT_TO.isoformat()
    letter: str = ""  # the sealing decision's letter number (required with confirm)


@dg.op(pool=WAREHOUSE_POOL, description="Units with no loaded upload or feed day in the window; sealed only "
                                         "with confirm (each change logged with the letter).")
def seal_dormant_units(context: dg.OpExecutionContext, config: SealingConfig,
                       inservice: InserviceResource) -> dg.Output[dict]:
    if config.confirm and not config.letter.strip():
        raise dg.Failure(description="confirm needs the sealing letter number (config letter)", allow_retries=False)
    with inservice.warehouse() as wh:
        out = seal_dormant(wh, date.fromisoformat(config.from_date), date.fromisoformat(config.to_date),
                           confirm=config.confirm, letter=config.letter or None)
    sealed = ", ".join(out["sealed"]) or ("none" if config.confirm else "none (list only: confirm is false)")
    context.log.info(f"{len(out['dormant'])} dormant unit(s) {out['from']}..{out['to']}; sealed: {sealed}")
    return dg.Output(out, metadata={
        "dormant": len(out["dormant"]), "sealed": len(out["sealed"]), "confirmed": config.confirm,
        "units": dg.MetadataValue.md(_md(out["dormant"], ["unit_code", "name", "state", "joined", "last_loaded"])),
    })


@dg.job(name="sealing", description="Lists units with no data exchange between two dates (default 2013-01-01 "
                                    "to 2017-06-08); seals them only with run config confirm: true and a letter.")
def sealing_job() -> None:
    seal_dormant_units()


CORRECTION_ASSETS = [correction_workbook, correction_log, archive_exceptions]
CORRECTION_JOBS = [apply_corrections_job, exceptions_register_job, sealing_job]
CORRECTION_SENSORS = [corrections_sensor]
