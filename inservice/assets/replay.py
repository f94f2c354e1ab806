"""Replay: archived uploads re-evaluated under the rules in force (inservice.replay). The asset's
metadata is the preview — per upload, the rows whose outcome changes — and with `apply` it loads what is
accepted now (one transaction per upload, locks respected, a re-evaluation receipt to the unit).
Its job: inservice/pipelines/replay.py."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg
from pydantic import Field

from inservice.assets.corrections import md_table
from inservice.assets.shared import OWNERS, WAREHOUSE_POOL, InserviceResource, access_metadata, refused
from inservice.errors import OperatorError
from inservice.replay import parse_months, parse_units, replay, report_lines
from inservice.warehouse.analyst import WriteSession

GROUP = "corrections"  # beside the other re-evaluations of what the archive holds


class ReplayConfig(dg.Config):
    units: list[str] = Field(description="單位代碼，例 [\"T001\", \"T002\"] / unit codes")
    months: str = Field(description="資料月份範圍，例 2013-01..2017-12 / data months YYYY-MM..YYYY-MM")
    apply: bool = Field(default=False, description=(
        "載入依現行規則改為通過之資料並寄送重新檢核回執；否＝僅預覽，不變更任何資料 / load what is accepted "
        "now and send re-evaluation receipts; false = preview only, nothing changes"))


@dg.asset(
    group_name=GROUP, pool=WAREHOUSE_POOL, owners=OWNERS, kinds={"python"},
    description=(
        "依現行規則重新檢核歸檔原始檔 (replay): the chosen units' archived uploads of the chosen data months "
        "run again through today's rules, compared row by row with the evaluation in force. The metadata "
        "lists every row whose outcome changes (refused → accepted, accepted → refused, findings added or "
        "gone). Without `apply` nothing is written; with it each changed upload is loaded in one transaction "
        "(closed courses stay locked), recorded with replay_of, and its unit gets a re-evaluation receipt."),
)
def archive_replay(context: dg.AssetExecutionContext, config: ReplayConfig,
                   inservice: InserviceResource) -> dg.MaterializeResult:
    settings = inservice.settings()
    session = WriteSession(settings) if config.apply else None  # a load: the analysts' refresh follows it
    try:
        replays = replay(settings, parse_units(config.units), parse_months(config.months),
                         apply=config.apply, session=session)
    except OperatorError as exc:  # a bad unit code or month range: staff's to fix, not retried
        raise refused(exc) from exc
    rows = [{"unit": r.unit, "file": r.file, "upload": r.original, "record": c.record, "row": c.row,
             "course": c.course_code or "", "outcome": f"{c.before} → {c.after}", "added": ",".join(c.added),
             "gone": ",".join(c.gone)} for r in replays for c in r.changes]
    for line in report_lines(replays, config.apply):
        context.log.info(line)
    return dg.MaterializeResult(metadata={
        "applied": config.apply,
        "uploads": len(replays),
        "uploads_changed": sum(r.changed for r in replays),
        "rows_changed": len(rows),
        "not_replayed": dg.MetadataValue.md(
            md_table([{"unit": r.unit, "file": r.file, "upload": r.original, "why": r.skipped}
                      for r in replays if r.after is None], ["unit", "file", "upload", "why"])),
        "preview": dg.MetadataValue.md(md_table(rows, ["unit", "file", "upload", "record", "row", "course",
                                                       "outcome", "added", "gone"], limit=200)),
        "replay_uploads": dg.MetadataValue.json([r.applied for r in replays if r.applied]),
        **access_metadata(session.refresh if session is not None else None),
    })


REPLAY_ASSETS = [archive_replay]
