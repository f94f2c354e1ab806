"""Ingest group: one partner upload per run, processed by the core (`Ingestor.ingest`).

Partitions are unit × data month. The core writes the warehouse (one transaction) and the
receipt; this module only finds the file, hands it to the core, moves the original out of the
inbox afterwards (inservice.inbox.settle) and reports the receipt as materialization metadata.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from inservice.config import Settings
from inservice.inbox import data_month, find_upload, settle, waiting_or_refused
from inservice.ingest import Ingestor
from inservice.pipelines.resources import (
    OWNERS,
    RETRY,
    TRANSIENT_ERRORS,
    WAREHOUSE_POOL,
    InserviceResource,
    permanent,
)
from inservice.warehouse.store import Warehouse

UNITS = dg.DynamicPartitionsDefinition(name="unit")
FIRST_MONTH = "2013-01"  # the month after the archive cutoff (2012-12-31)
# Keys look like the core's data months ("2017-05"); end_offset=1: this month's early senders too.
MONTHS = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH, fmt="%Y-%m", end_offset=1, timezone="Asia/Taipei")
UPLOAD_PARTITIONS = dg.MultiPartitionsDefinition({"unit": UNITS, "month": MONTHS})


class UploadConfig(dg.Config):
    file_name: str = ""  # one file; empty = every waiting or quarantined file of the partition
    content_hash: str = ""  # the exact copy (the sensor sets it); empty = inbox copy, else newest kept
    received_at: str = ""  # ISO-8601 receipt time; empty = now (the sensor passes the arrival time)
    rerun: bool = False  # staff only: reload content already loaded (the core then skips F08)


class UnsortedUploadConfig(dg.Config):
    unit: str  # the inbox folder the file came from
    file_name: str
    content_hash: str = ""
    received_at: str = ""
    rerun: bool = False


@dataclass
class Processed:
    receipt: dict
    original: Path  # where the original is now


def process(context: dg.AssetExecutionContext, settings: Settings, unit: str, paths: list[Path],
            received_at: str, rerun: bool = False) -> list[Processed]:
    """Each file through the core, then its original to archive/ or quarantine/ (after the receipt)."""
    done: list[Processed] = []
    explicit = {"rerun": True} if rerun else {}  # the core's explicit re-run, only when staff ask for it
    try:
        with Warehouse(settings) as wh:
            ingestor = Ingestor(settings, wh, load=True)
            for path in paths:
                receipt = ingestor.ingest(path, received_at or None, unit=unit, **explicit)
                moved = settle(settings, unit, path, receipt)
                context.log.info(f"{path.name}: {receipt['status']}"
                                 f"{' ' + receipt['refusal'] if receipt['refusal'] else ''}; original now {moved}")
                done.append(Processed(receipt, moved))
    except TRANSIENT_ERRORS:
        raise  # the retry policy tries again; the core's transaction left the warehouse as it was
    except Exception as exc:
        raise permanent(exc, "processing failed (the warehouse is unchanged for the failing file)") from exc
    return done


def _refusal_rate(receipt: dict) -> float:
    received = receipt["courses"]["received"] + receipt["attendance"]["received"]
    if receipt["status"] == "refused":
        return 1.0
    rejected = receipt["courses"]["rejected"] + receipt["attendance"]["rejected"]
    return round(rejected / received, 4) if received else 0.0


def top_rules_markdown(findings: list[dict], limit: int = 5) -> str:
    if not findings:
        return "No findings."
    counts = Counter((f["rule"], f["severity"]) for f in findings)
    example = {}
    for f in findings:
        example.setdefault((f["rule"], f["severity"]), f["message_en"])
    lines = ["| rule | severity | rows | example |", "|---|---|---:|---|"]
    for (rule, severity), n in counts.most_common(limit):
        text = example[(rule, severity)].replace("|", "\\|").replace("\n", " ")[:100]
        lines.append(f"| {rule} | {severity} | {n} | {text} |")
    return "\n".join(lines)


def upload_metadata(done: list[Processed]) -> dict:
    """The receipt(s) as metadata: counts, refusal rate, on time/late, receipt path, top rules."""
    receipts = [d.receipt for d in done]
    last = receipts[-1]
    sums = {f"{part}_{k}": sum(r[part][k] for r in receipts)
            for part in ("courses", "attendance") for k in ("received", "accepted", "rejected")}
    findings = [f for r in receipts for f in r["findings"]]
    received = sums["courses_received"] + sums["attendance_received"]
    rejected = sums["courses_rejected"] + sums["attendance_rejected"]
    meta: dict = {
        "files": ", ".join(r["file"] for r in receipts),
        "status": ", ".join(sorted({r["status"] for r in receipts})),
        "refusal": ", ".join(r["refusal"] for r in receipts if r["refusal"]) or "none",
        **sums,
        "refusal_rate": (_refusal_rate(last) if len(receipts) == 1
                         else round(rejected / received, 4) if received else 0.0),
        "on_time": ", ".join("on time" if r["on_time"] else "late" if r["on_time"] is False else "unknown"
                             for r in receipts),
        "findings": len(findings),
        "top_rules": dg.MetadataValue.md(top_rules_markdown(findings)),
        "received_at": last["received_at"],
        "upload_id": last.get("upload_id") or "",
        "content_hash": last.get("content_hash") or "",
        "original": dg.MetadataValue.path(str(done[-1].original)),
    }
    files = last.get("receipt_files") or []
    if files:
        meta["receipt"] = dg.MetadataValue.path(files[0])
        meta["receipt_xlsx"] = dg.MetadataValue.path(files[1])
    if len(receipts) > 1:
        rows = ["| file | status | refusal | receipt |", "|---|---|---|---|"]
        rows += [f"| {r['file']} | {r['status']} | {r['refusal'] or ''} | {(r.get('receipt_files') or [''])[0]} |"
                 for r in receipts]
        meta["receipts"] = dg.MetadataValue.md("\n".join(rows))
    if "merge" in last:
        meta.update({k: v for k, v in last["merge"].items()})
    return meta


def _locate(settings: Settings, unit: str, file_name: str, content_hash: str) -> Path:
    path = find_upload(settings, unit, file_name, content_hash)
    if path is None:
        which = f" with content {content_hash[:12]}…" if content_hash else ""
        raise dg.Failure(
            description=f"{unit}/{file_name}{which} is in none of inbox/, quarantine/, archive/ under "
                        f"{settings.home} (changed or removed since it was queued? the sensor queues new content)",
            allow_retries=False)
    return path


@dg.asset(
    partitions_def=UPLOAD_PARTITIONS,
    group_name="ingest",
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
    owners=OWNERS,
    kinds={"python", "duckdb"},
    description=(
        "A partner unit's upload for one data month (partition = unit × month). The inbox sensor "
        "starts one run per new file; the core checks it against the transmission spec, merges the "
        "accepted rows into the warehouse in one transaction and writes the receipt (回執). The "
        "original then moves to archive/<unit>/<YYYYMM>/ (processed) or quarantine/<unit>/ (refused). "
        "Re-run: materialize a partition (its waiting and quarantined files) or name `file_name` "
        "in the config (also an archived original)."),
)
def partner_upload(context: dg.AssetExecutionContext, config: UploadConfig,
                   inservice: InserviceResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    unit, month = keys["unit"], keys["month"]
    settings = inservice.settings()
    if config.file_name:
        if data_month(config.file_name) != month:
            raise dg.Failure(description=f"{config.file_name} does not name data month {month}; "
                                         f"choose its own partition", allow_retries=False)
        paths = [_locate(settings, unit, config.file_name, config.content_hash)]
    else:
        paths = waiting_or_refused(settings, unit, month)
        if not paths:
            raise dg.Failure(
                description=f"nothing waiting or quarantined for {unit} {month}; to re-run an archived "
                            f"upload, give its file_name in the run config", allow_retries=False)
    done = process(context, settings, unit, paths, config.received_at, config.rerun)
    return dg.MaterializeResult(metadata=upload_metadata(done))


@dg.asset(
    group_name="ingest",
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
    owners=OWNERS,
    kinds={"python", "duckdb"},
    description=(
        "An upload that fits no unit × month partition: its file name names no data month (so the "
        "core refuses it, F02/F03) or a month before 2013-01 or after this month. Processed exactly "
        "like partner_upload; config names the unit and the file."),
)
def unsorted_upload(context: dg.AssetExecutionContext, config: UnsortedUploadConfig,
                    inservice: InserviceResource) -> dg.MaterializeResult:
    settings = inservice.settings()
    path = _locate(settings, config.unit, config.file_name, config.content_hash)
    done = process(context, settings, config.unit, [path], config.received_at, config.rerun)
    return dg.MaterializeResult(metadata={"unit": config.unit, **upload_metadata(done)})


INGEST_ASSETS = [partner_upload, unsorted_upload]
