"""Dagster asset of the audit worklist (查核): per month, the units due and what each sent (group "publish").

Core: inservice/publish/audit.py (also `inservice audit --month YYYY-MM`). It reads the lights of the
month from the published monthly statistics, so it depends on `monthly_statistics`.
"""

# no `from __future__ import annotations`: Dagster inspects the context annotation at definition time
import dagster as dg

from inservice.assets.publish import MONTHLY, WAREHOUSE_DEPS, monthly_statistics
from inservice.assets.shared import OWNERS, RETRY, WAREHOUSE_POOL, InserviceResource


@dg.asset(partitions_def=MONTHLY, group_name="publish", pool=WAREHOUSE_POOL, kinds={"excel"},
          retry_policy=RETRY, owners=OWNERS, deps=[*WAREHOUSE_DEPS, dg.AssetDep(monthly_statistics.key)],
          description="查核工作清單 (audit worklist): the units due this month — first 12 months every month, then "
                      "January, April, July, October; in January also the whole previous year — and per unit and "
                      "month: files or feed days, on time or late, missing, refused rows by rule, the light, "
                      "W01/W02 titles. Workbook under publish/audit/YYYY-MM/.")
def audit_worklist(context: dg.AssetExecutionContext, inservice: InserviceResource) -> dg.MaterializeResult:
    from inservice.publish.audit import audit_worklist as build

    w = build(inservice.settings(), context.partition_key)
    preview = "\n".join(["| 單位 | 頻率 | 月份 | 未傳 |", "|---|---|---|---|"] + [
        f"| {d.unit_code} {d.name} | {d.cadence} | {d.months[0]}～{d.months[-1]} | "
        f"{'、'.join(r['month'] for r in w.rows if r['unit_code'] == d.unit_code and r['missing']) or '—'} |"
        for d in w.due[:50]])
    return dg.MaterializeResult(metadata={
        "units_due": len(w.due), "unit_months": len(w.rows), "missing_months": sum(r["missing"] for r in w.rows),
        "late_months": sum(r["status"] == "逾期" for r in w.rows),
        "workbook": dg.MetadataValue.path(w.files[0]), "due": dg.MetadataValue.md(preview)})


AUDIT_ASSETS = [audit_worklist]
