"""Dagster assets of the partners' side (group "partners"): the e-mails (receipts, reminders, the
staff digest) over inservice.notifications, each unit's 24-month history, and the template and
contract partners fill in (written under $INSERVICE_HOME/contract/).

Mail never fails a run for a mail problem: what could not be sent stays pending in `mail_outbox`
and the outcome is in the metadata (a later run sends it)."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.
from datetime import date, datetime, timedelta

import dagster as dg
from pydantic import Field

from inservice.assets.shared import OWNERS, RETRY, WAREHOUSE_POOL, InserviceResource
from inservice.config import TAIPEI

GROUP = "partners"


def _outcome_metadata(outcome) -> dict:
    return {k: dg.MetadataValue.int(v) for k, v in outcome.as_dict().items()}


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS, kinds={"python", "email"},
          description="回執通知: every upload or feed run processed since a unit's contact was added is mailed to its "
                      "contacts (summary in the body, the receipt workbook attached), once (mail_outbox). Started "
                      "after each ingest or feed run, and every 15 minutes for what is still pending.")
def receipt_mail(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.notifications import mail_receipts

    out = mail_receipts(inservice.settings())
    context.log.info(f"receipt mail: {out.as_dict()}")
    return dg.MaterializeResult(metadata=_outcome_metadata(out))


class ReminderConfig(dg.Config):
    today: str = Field(default="", description="執行日 YYYY-MM-DD（空白：今天，臺北時間）/ the day of the run")


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS, kinds={"python", "email"},
          description="缺件提醒: on the 6th, each file unit with contacts gets one mail naming every data month "
                      "(since it joined, the last 24 at most) with nothing loaded; once per unit and month.")
def missing_month_reminders(context: dg.AssetExecutionContext, config: ReminderConfig,
                            inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.notifications import mail_reminders, missing_months
    from inservice.warehouse.store import Warehouse

    settings = inservice.settings()
    today = date.fromisoformat(config.today) if config.today else datetime.now(TAIPEI).date()
    with Warehouse(settings) as wh:
        missing = missing_months(wh, today)
    out = mail_reminders(settings, today)
    return dg.MaterializeResult(metadata={
        **_outcome_metadata(out), "units_missing": len(missing),
        "missing": dg.MetadataValue.md("\n".join(f"- {u}: {', '.join(m)}" for u, m in missing.items()) or "none")})


class DigestConfig(dg.Config):
    day: str = Field(default="", description="日報日期 YYYY-MM-DD（空白：昨天，臺北時間）/ the day reported")


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, retry_policy=RETRY, owners=OWNERS, kinds={"python", "email"},
          description="退件日報: staff (INSERVICE_STAFF_EMAILS) get the day's refusals — uploads refused whole and "
                      "rows refused by rule, per unit — once per day.")
def refusal_digest(context: dg.AssetExecutionContext, config: DigestConfig,
                   inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.notifications import mail_digest

    day = date.fromisoformat(config.day) if config.day else datetime.now(TAIPEI).date() - timedelta(days=1)
    out = mail_digest(inservice.settings(), day)
    return dg.MaterializeResult(metadata={**_outcome_metadata(out), "day": day.isoformat()})


class HistoryConfig(dg.Config):
    until: str = Field(default="", description="最後資料月份 YYYY-MM（空白：倉儲中最新者）/ the last month shown")


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, owners=OWNERS, kinds={"python", "duckdb"},
          description="單位歷程: per unit, month by month over the last 24 data months, uploads, refusals by rule "
                      "and lateness (the same as the receipt's 歷程 sheet), one Markdown table per unit.")
def partner_history(context: dg.AssetExecutionContext, config: HistoryConfig,
                    inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.partners import history_markdown
    from inservice.partners import partner_history as history_of

    meta: dict = {}
    with inservice.warehouse(read_only=True) as wh:
        # the latest data month any unit sent (a warehouse of past years shows those years), else now
        latest = wh.con.execute("SELECT max(data_month) FROM uploads").fetchone()[0]
        until = config.until or latest or f"{datetime.now(TAIPEI):%Y-%m}"
        for unit in wh.units():
            history = history_of(wh.con, unit.unit_code, until)
            meta[unit.unit_code] = dg.MetadataValue.md(history_markdown(unit.unit_code, history))
    return dg.MaterializeResult(metadata={"units": len(meta), "until": until, **meta})


@dg.asset(group_name=GROUP, owners=OWNERS, kinds={"excel", "json"},
          description="傳報範本與資料格式: the Excel template partners fill in (label headers, validation lists, "
                      "hints, Chinese instructions), the Frictionless Data Package (Table Schema of both record "
                      "types) and the XSD, generated from inservice/schemas into $INSERVICE_HOME/contract/.")
def partner_contract(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.schemas.contract import CONTRACT_FOLDER, data_package, write_contract

    files = write_contract(inservice.settings().home / CONTRACT_FOLDER)
    return dg.MaterializeResult(metadata={
        **{f.suffix.lstrip(".") or f.name: dg.MetadataValue.path(str(f)) for f in files},
        "resources": dg.MetadataValue.json([r["name"] for r in data_package()["resources"]])})


NOTIFICATION_ASSETS = [receipt_mail, missing_month_reminders, refusal_digest, partner_history, partner_contract]
