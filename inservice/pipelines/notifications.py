"""Partners' mail: the receipt mail after every successful ingest or feed run (a run-status sensor)
and every 15 minutes for what is still pending; the reminders on the 6th; the staff digest daily;
the partners' history and contract by hand (or after a release)."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg

from inservice.assets.notifications import (
    missing_month_reminders,
    partner_contract,
    partner_history,
    receipt_mail,
    refusal_digest,
)
from inservice.config import TAIPEI, Mail
from inservice.pipelines.feeds import feed_job
from inservice.pipelines.uploads import ingest_unsorted_job, ingest_upload_job

receipt_mail_job = dg.define_asset_job(
    "mail_receipts", selection=dg.AssetSelection.assets(receipt_mail),
    description="Queue a receipt mail for each processed upload or feed run not yet mailed, and send what is pending.")
reminder_job = dg.define_asset_job(
    "mail_reminders", selection=dg.AssetSelection.assets(missing_month_reminders),
    description="缺件提醒: one mail per file unit naming its missing data months (the schedule runs it on the 6th).")
digest_job = dg.define_asset_job(
    "mail_refusal_digest", selection=dg.AssetSelection.assets(refusal_digest),
    description="退件日報 for staff: the refusals of one day (the schedule takes yesterday).")
partners_job = dg.define_asset_job(
    "partner_reports", selection=dg.AssetSelection.assets(partner_history, partner_contract),
    description="Each unit's 24-month history as metadata, and the template/contract files under contract/.")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="receipt_mail_sensor",
                      monitored_jobs=[ingest_upload_job, ingest_unsorted_job, feed_job], request_job=receipt_mail_job,
                      default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
                      description="After each successful ingest or feed run: mail its receipt to the unit's contacts.")
def receipt_mail_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    if not Mail.from_env().host:  # nothing could be sent; a later run queues every receipt not yet mailed
        return dg.SkipReason("no SMTP server configured (INSERVICE_SMTP_HOST)")
    # keyed by the finished run: a sensor restart requests nothing twice (the outbox would send nothing twice anyway)
    return dg.RunRequest(run_key=f"mail:{context.dagster_run.run_id}")


@dg.schedule(job=receipt_mail_job, cron_schedule="*/15 * * * *", execution_timezone="Asia/Taipei",
             name="mail_retry_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every 15 minutes: mail left pending (server unreachable, a run the sensor missed).")
def mail_retry_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if not Mail.from_env().host:
        return dg.SkipReason("no SMTP server configured (INSERVICE_SMTP_HOST)")
    return dg.RunRequest()


@dg.schedule(job=reminder_job, cron_schedule="0 9 6 * *", execution_timezone="Asia/Taipei",
             name="mail_reminders_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="On the 6th at 09:00 Asia/Taipei (files were due by the 5th): the missing-month reminders.")
def reminder_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    today = context.scheduled_execution_time.astimezone(TAIPEI).date()
    return dg.RunRequest(run_config={"ops": {"missing_month_reminders": {"config": {"today": today.isoformat()}}}})


@dg.schedule(job=digest_job, cron_schedule="0 7 * * *", execution_timezone="Asia/Taipei",
             name="mail_refusal_digest_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Daily at 07:00 Asia/Taipei: staff's digest of yesterday's refusals.")
def digest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    from datetime import timedelta

    day = context.scheduled_execution_time.astimezone(TAIPEI).date() - timedelta(days=1)
    return dg.RunRequest(run_config={"ops": {"refusal_digest": {"config": {"day": day.isoformat()}}}})


NOTIFICATION_JOBS = [receipt_mail_job, reminder_job, digest_job, partners_job]
NOTIFICATION_SCHEDULES = [mail_retry_schedule, reminder_schedule, digest_schedule]
NOTIFICATION_SENSORS = [receipt_mail_sensor]
