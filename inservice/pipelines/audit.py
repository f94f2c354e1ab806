"""The audit worklist's job and schedule: on the 7th at 06:00 Asia/Taipei (the day after the monthly
statistics, whose lights it reads), for the month just ended."""

# No `from __future__ import annotations`: Dagster reads annotations at runtime.

import dagster as dg

from inservice.assets.audit import audit_worklist
from inservice.config import TAIPEI

audit_job = dg.define_asset_job(
    "publish_audit_worklist", selection=dg.AssetSelection.assets(audit_worklist),
    description="查核工作清單: the units due in the chosen month and what each sent (workbook for the staff who "
                "write the audit letters).")


@dg.schedule(job=audit_job, cron_schedule="0 6 7 * *", execution_timezone="Asia/Taipei",
             name="audit_worklist_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="On the 7th at 06:00 Asia/Taipei: the audit worklist of the month just ended.")
def audit_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    t = context.scheduled_execution_time.astimezone(TAIPEI)
    year, month = (t.year, t.month - 1) if t.month > 1 else (t.year - 1, 12)
    return dg.RunRequest(partition_key=f"{year:04d}-{month:02d}")


AUDIT_JOBS = [audit_job]
AUDIT_SCHEDULES = [audit_schedule]
