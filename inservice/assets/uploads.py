"""Uploads (group "ingest"): one partner upload per run, processed by the core (`Ingestor.ingest`).

Partitions are unit × data month. The core writes the warehouse (one transaction) and the
receipt; this module only finds the file, hands it to the core, moves the original out of the
inbox afterwards (inservice.inbox.settle) and reports the receipt as materialization metadata.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from inservice.assets.shared import (
    OWNERS,
    RETRY,
    WAREHOUSE_POOL,
    InserviceResource,
    access_metadata,
    permanent,
)
from inservice.config import TAIPEI, Settings
from inservice.inbox import (
    arrival,
    data_month,
    find_upload,
    original_received_at,
    settle,
    waiting_or_refused,
)
from inservice.ingest import Ingestor
from inservice.schemas.rules import RULES
from inservice.warehouse.analyst import AccessRefresh, WriteSession
from inservice.warehouse.backend import TRANSIENT_ERRORS

UNIT_KEYS = "unit"  # the dynamic partitions of registered units, by name (the instance keeps them)
UNITS = dg.DynamicPartitionsDefinition(name=UNIT_KEYS)
FIRST_MONTH = "2013-01"  # the month after the archive cutoff (2012-12-31)
# Keys look like the core's data months ("2017-05"); end_offset=1: this month's early senders too.
MONTHS = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH, fmt="%Y-%m", end_offset=1, timezone="Asia/Taipei")
UPLOAD_PARTITIONS = dg.MultiPartitionsDefinition({"unit": UNITS, "month": MONTHS})


_FILE = ("檔名，例 T001_201705.xlsx；空白＝此分區在收件匣或隔離區的所有檔案 / file name; empty = every "
         "waiting or quarantined file of the partition")
_HASH = ("內容雜湊（感測器填入，指定某一份）；空白＝收件匣那份，否則最新保留那份 / content hash (the sensor "
         "sets it); empty = the inbox copy, else the newest kept")
_RECEIVED = ("收件時間 ISO-8601，例 2017-06-03T10:00:00+08:00；空白＝原始收件時間（重跑隔離或歸檔的檔案時沿用），"
             "新檔為抵達時間 / receipt time; empty = the original arrival (kept for a re-run), else the file's arrival")
_RERUN = ("重新載入已載入的內容（略過 F08），例如登錄封存例外後；僅限承辦人員 / reload content already loaded "
          "(skips F08), e.g. after an archive exception; staff only")


class UploadConfig(dg.Config):
    file_name: str = Field(default="", description=_FILE)
    content_hash: str = Field(default="", description=_HASH)
    received_at: str = Field(default="", description=_RECEIVED)
    rerun: bool = Field(default=False, description=_RERUN)


class UnsortedUploadConfig(dg.Config):
    unit: str = Field(description="收件匣資料夾（單位代碼） / the inbox folder the file came from (unit code)")
    file_name: str = Field(description="檔名 / file name")
    content_hash: str = Field(default="", description=_HASH)
    received_at: str = Field(default="", description=_RECEIVED)
    rerun: bool = Field(default=False, description=_RERUN)


@dataclass
class Processed:
    receipt: dict
    original: Path  # where the original is now


def _received_at(settings: Settings, unit: str, path: Path, given: str) -> str | None:
    """The receipt time: as given; for a file still in the inbox, its arrival there (as the sensor
    passes it); for a file kept in archive/quarantine, its first recorded arrival (a re-run must not
    turn an upload refused F05 until the unit was registered into "late"); else None (now)."""
    if given:
        return given
    if settings.inbox in path.parents:
        return arrival(path.stat().st_ctime)
    return original_received_at(settings, unit, path)


def process(context: dg.AssetExecutionContext, settings: Settings, unit: str, paths: list[Path],
            received_at: str, rerun: bool = False) -> tuple[list[Processed], AccessRefresh | None]:
    """Each file through the core, then its original to archive/ or quarantine/ (after the receipt);
    the session ends with the analysts' refresh, whose outcome is returned with the receipts."""
    done: list[Processed] = []
    session = WriteSession(settings)
    try:
        arrivals = [_received_at(settings, unit, p, received_at) for p in paths]
        with session as wh:
            ingestor = Ingestor(settings, wh, load=True)
            for path, arrival in zip(paths, arrivals, strict=True):
                receipt = ingestor.ingest(path, arrival, unit=unit, rerun=rerun)  # rerun: only when staff ask
                moved = settle(settings, unit, path, receipt)
                context.log.info(f"{path.name}: {receipt['status']}"
                                 f"{' ' + receipt['refusal'] if receipt['refusal'] else ''}; original now {moved}")
                done.append(Processed(receipt, moved))
    except TRANSIENT_ERRORS:
        raise  # the retry policy tries again; the core's transaction left the warehouse as it was
    except Exception as exc:
        raise permanent(exc, "processing failed (the warehouse is unchanged for the failing file)") from exc
    _tag_run(context, [d.receipt for d in done])
    return done, session.refresh


STATUS_TAG = "inservice/status"
RULE_TAG = "inservice/rule"


def _tag_run(context: dg.AssetExecutionContext, receipts: list[dict]) -> None:
    """The outcome on the run itself, so the Runs list shows it without opening the run (and staff can
    filter by it): inservice/status=loaded|refused|duplicate, inservice/rule=F05 for a refusal."""
    statuses = sorted({r["status"] for r in receipts})
    tags = {STATUS_TAG: ",".join(statuses)}
    rules = sorted({r["refusal"] for r in receipts if r["refusal"] and r["status"] == "refused"})
    if rules:
        tags[RULE_TAG] = ",".join(rules)
    context.instance.add_run_tags(context.run_id, tags)


ACCEPTED_CHECK = "upload_accepted"
ACCEPTED_WHAT = ("the upload was not refused as a whole (a WARN, never blocking: a refused upload is the partner's to "
                 "fix from its receipt; the file is in quarantine)")


def accepted_check(receipts: list[dict]) -> dg.AssetCheckResult:
    refused = [r for r in receipts if r["status"] == "refused"]
    meta: dict[str, Any] = {"refused": len(refused), "files": ", ".join(r["file"] for r in receipts)}
    if refused:
        meta["rules"] = ", ".join(sorted({r["refusal"] for r in refused}))
        meta["reason"] = refused[0]["findings"][0]["message_zh"] if refused[0]["findings"] else ""
    return dg.AssetCheckResult(check_name=ACCEPTED_CHECK, passed=not refused, severity=dg.AssetCheckSeverity.WARN,
                               metadata=meta, description=ACCEPTED_WHAT)


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
    example: dict[tuple[str, str], str] = {}
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
    if findings:
        meta["findings_preview"] = findings_table(findings)
    return meta


PREVIEW_ROWS = 50


def findings_table(findings: list[dict]) -> dg.MetadataValue:
    """The first findings as a table staff can read in the UI: where and which rule, never a quoted
    value (the full text is in the receipt, which goes to the partner)."""
    columns = [("record", "類型"), ("row", "列"), ("field", "欄位"), ("rule", "規則"), ("severity", "嚴重度"),
               ("title", "說明")]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string", description=zh) for c, zh in columns])
    records = [dg.TableRecord({"record": f.get("record") or "", "row": str(f.get("row") or ""),
                               "field": f.get("field") or "", "rule": f["rule"], "severity": f["severity"],
                               "title": RULES[f["rule"]].zh if f["rule"] in RULES else ""})
               for f in findings[:PREVIEW_ROWS]]
    return dg.MetadataValue.table(records=records, schema=schema)


def _locate(settings: Settings, unit: str, file_name: str, content_hash: str) -> Path:
    path = find_upload(settings, unit, file_name, content_hash)
    if path is None:
        which = f" with content {content_hash[:12]}…" if content_hash else ""
        raise dg.Failure(
            description=f"{unit}/{file_name}{which} is in none of inbox/, quarantine/, archive/ under "
                        f"{settings.home} (changed or removed since it was queued? the sensor queues new content)",
            allow_retries=False)
    return path


# what both upload assets are: one group, the warehouse pool, retried when the warehouse is busy
UPLOAD_ASSET: dict[str, Any] = {"group_name": "ingest", "pool": WAREHOUSE_POOL, "retry_policy": RETRY, "owners": OWNERS,
                "kinds": {"python", "duckdb"}}


@dg.asset(
    partitions_def=UPLOAD_PARTITIONS,
    check_specs=[dg.AssetCheckSpec(ACCEPTED_CHECK, asset="partner_upload", description=ACCEPTED_WHAT,
                                   partitions_def=UPLOAD_PARTITIONS)],
    **UPLOAD_ASSET,
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
    done, access = process(context, settings, unit, paths, config.received_at, config.rerun)
    return dg.MaterializeResult(metadata={**upload_metadata(done), **access_metadata(access)},
                                check_results=[accepted_check([d.receipt for d in done])])


@dg.asset(
    check_specs=[dg.AssetCheckSpec(ACCEPTED_CHECK, asset="unsorted_upload", description=ACCEPTED_WHAT)],
    **UPLOAD_ASSET,
    description=(
        "An upload that fits no unit × month partition: its file name names no data month (so the "
        "core refuses it, F02/F03), a month before 2013-01 or after next month, or its folder is no "
        "registered unit (F05). Processed exactly like partner_upload; config names the unit and the file."),
)
def unsorted_upload(context: dg.AssetExecutionContext, config: UnsortedUploadConfig,
                    inservice: InserviceResource) -> dg.MaterializeResult:
    settings = inservice.settings()
    path = _locate(settings, config.unit, config.file_name, config.content_hash)
    done, access = process(context, settings, config.unit, [path], config.received_at, config.rerun)
    return dg.MaterializeResult(metadata={"unit": config.unit, **upload_metadata(done), **access_metadata(access)},
                                check_results=[accepted_check([d.receipt for d in done])])




# --- the month at a glance, for staff ------------------------------------------------------------------
def _overview_md(rows: list) -> str:
    lines = ["| 單位 | 名稱 | 狀態 | 傳報 | 載入 | 退件（規則） | 重複 | 逾期 | 互傳日數 | 概況 |",
             "|---|---|---|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        refused = f"{r.refused}（{r.rules}）" if r.refused else "0"
        lines.append(f"| {r.unit_code} | {r.name or ''} | {r.state or '未登錄'} | {r.channel} | {r.loaded} | "
                     f"{refused} | {r.duplicate} | {r.late} | {r.feed_days} | {r.status} |")
    return "\n".join(lines)


@dg.asset(
    group_name="ingest", deps=[partner_upload, unsorted_upload], pool=WAREHOUSE_POOL, retry_policy=RETRY,
    owners=OWNERS, kinds={"python", "table"},
    description="本月傳報概況 The month at a glance: each registered unit's files (or feed days) — loaded, "
                "refused (rule), duplicate, late — and who is missing after the 5th; for the month now due and "
                "the latest month anything was received for. Refreshed by every upload run.",
)
def upload_overview(inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.overview import month_overview

    now = datetime.now(TAIPEI)
    due = f"{now.year - (now.month == 1):04d}-{(now.month - 2) % 12 + 1:02d}"  # the month due by the 5th
    with inservice.warehouse(read_only=True) as wh:
        [(latest,)] = wh.con.execute("SELECT max(data_month) FROM main.uploads").fetchall()
        months = sorted({due, *([latest] if latest else [])}, reverse=True)
        tables = {m: month_overview(wh.con, m, now) for m in months}
    meta: dict = {"months": ", ".join(months)}
    for m, rows in tables.items():
        meta[f"overview_{m}"] = dg.MetadataValue.md(_overview_md(rows))
        meta[f"missing_{m}"] = sum(1 for r in rows if r.status.startswith("未傳（逾期）"))
        meta[f"refused_only_{m}"] = sum(1 for r in rows if r.status.startswith("僅退件"))
    return dg.MaterializeResult(metadata=meta)


UPLOAD_ASSETS = [partner_upload, unsorted_upload, upload_overview]
