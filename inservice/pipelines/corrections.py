"""Corrections: the workbook job and its sensor (inbox/_corrections/), the register view's job, and the
`sealing` job (dormant units)."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from datetime import date
from typing import Any

import dagster as dg

from inservice.assets.corrections import (
    CorrectionConfig,
    archive_exceptions,
    correction_log,
    correction_workbook,
    md_table,
)
from inservice.assets.shared import WAREHOUSE_POOL, InserviceResource
from inservice.corrections.lifecycle import DORMANT_FROM, DORMANT_TO, seal_dormant
from inservice.corrections.watch import scan_corrections
from inservice.inbox import NewUpload
from inservice.pipelines.uploads import INTERVAL, watched_folder_tick  # one setting for both inboxes

WORKBOOK_TAG = "inservice/correction"  # the run key as a tag we can look up


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
    return watched_folder_tick(context, settings.inbox, scan_corrections(settings), WORKBOOK_TAG, run_request)


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
        "units": dg.MetadataValue.md(md_table(out["dormant"], ["unit_code", "name", "state", "joined", "last_loaded"])),
    })


@dg.job(name="sealing", description="Lists units with no data exchange between two dates (default 2013-01-01 "
                                    "to 2017-06-08); seals them only with run config confirm: true and a letter.")
def sealing_job() -> None:
    seal_dormant_units()


CORRECTION_JOBS: list[Any] = [apply_corrections_job, exceptions_register_job, sealing_job]
CORRECTION_SENSORS = [corrections_sensor]
