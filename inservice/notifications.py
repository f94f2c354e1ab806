"""E-mail to partners and staff, through an outbox table (`mail_outbox`) and a real SMTP server.

- a unit's contacts get its receipt (the summary in the body, the workbook attached) after each
  processed upload or feed run;
- on the 6th, each file unit with a month still missing since it joined (the last 24 at most) gets
  one reminder naming every such month;
- staff (INSERVICE_STAFF_EMAILS) get a daily digest of the day's refusals.

Queueing and sending are apart. Queueing writes one row per message under a key (`receipt:<upload>`,
`reminder:<unit>:<YYYY-MM>`, `digest:<YYYY-MM-DD>`) that is never queued twice, so a re-executed run
mails nothing again. Sending claims pending rows (`sending`), talks to the server with the warehouse
closed, and marks each `sent`; a server that cannot be reached leaves them pending with the error
and an attempt more (retried later, `failed` after Mail.max_attempts). Nothing here runs inside a
load, so mail can be late but never fail or roll back one. A process killed between the server's
acceptance and the mark may send a message again (the outbox is at-least-once); its Message-ID is
derived from its key, so mail clients show a repeat as the same message.

The SMTP password is read from the environment variable Mail.password_env when sending, and never
stored, logged or put in an error text.
"""

from __future__ import annotations

import hashlib
import logging
import os
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from inservice.config import TAIPEI, Settings
from inservice.partners import months_back
from inservice.schemas.messages import contact_lines, next_steps
from inservice.schemas.plans import owes_monthly
from inservice.warehouse.store import Warehouse

LOG = logging.getLogger("inservice.notifications")

STALE_CLAIM = timedelta(hours=1)  # a `sending` row older than this belongs to a killed sender
REMINDER_MONTHS = 24
XLSX = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
STATUS_ZH = {"loaded": "已載入", "refused": "整批退件", "duplicate": "重複傳報"}


@dataclass
class Outcome:
    queued: int = 0
    sent: int = 0
    pending: int = 0  # left for a later attempt (server unreachable, refused a recipient)
    failed: int = 0  # gave up after max attempts

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# --- queueing ------------------------------------------------------------------------------------
def _contacts(wh: Warehouse) -> dict[str, list[str]]:
    rows = wh.con.execute("""SELECT unit_code, email FROM unit_contacts WHERE removed_at IS NULL
        ORDER BY unit_code, added_at, email""").fetchall()
    out: dict[str, list[str]] = {}
    for unit, email in rows:
        out.setdefault(unit, []).append(email)
    return out


def _queue(wh: Warehouse, key: str, kind: str, unit: str | None, to: list[str], subject: str, body: str,
           attachment: str | None = None) -> bool:
    """One message under `key`, unless that key was ever queued. In the caller's transaction."""
    if wh.con.execute("SELECT 1 FROM mail_outbox WHERE message_key = ?", [key]).fetchall():
        return False
    wh.con.execute("""INSERT INTO mail_outbox VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, NULL, now(), NULL, NULL)""",
                   [key, kind, unit, ", ".join(to), subject, body, attachment])
    return True


def _footer(settings: Settings) -> str:
    lines = [f"{zh}\n{en}" for zh, en in contact_lines(settings.contact_phone, settings.contact_email)]
    auto = "（本信由系統寄出 This message was sent automatically.）"
    return "\n\n" + "\n".join(lines) + ("\n\n" if lines else "") + auto


def receipt_body(row: dict, errors_by_rule: dict[str, int], warnings: int, settings: Settings) -> str:
    """The receipt's summary as an e-mail body: what happened, what to do next."""
    errors = sum(errors_by_rule.values())
    receipt = {"file": row["file_name"] or "", "status": row["status"], "refusal": row["refusal"],
               "area": row["area"], "channel": row["channel"], "findings": [], "error_count": errors,
               "warning_count": warnings,
               "courses": {"accepted": row["courses_accepted"] or 0, "rejected": row["courses_rejected"] or 0},
               "attendance": {"accepted": row["attendance_accepted"] or 0,
                              "rejected": row["attendance_rejected"] or 0}}
    steps = next_steps(receipt)
    head = [
        f"單位 Unit: {row['unit_code']}",
        f"{'檔名 File' if row['channel'] == 'file' else '資料庫互傳 Feed'}: {row['file_name'] or row['upload_id']}",
        f"資料月份 Month: {row['data_month'] or '—'}",
        f"狀態 Status: {STATUS_ZH.get(row['status'], row['status'])} {row['status']}"
        + (f" ({row['refusal']})" if row["refusal"] else ""),
        f"課程 Courses: 收件 {row['courses_received'] or 0}、通過 {row['courses_accepted'] or 0}、"
        f"退件 {row['courses_rejected'] or 0}",
        f"研習名單 Attendance: 收件 {row['attendance_received'] or 0}、通過 {row['attendance_accepted'] or 0}、"
        f"退件 {row['attendance_rejected'] or 0}",
    ]
    if errors_by_rule:
        head.append("退件規則 Errors by rule: " + ", ".join(f"{r} × {n}" for r, n in errors_by_rule.items()))
    if warnings:
        head.append(f"警告 Warnings: {warnings}")
    body = "\n".join(head) + "\n\n" + "\n".join(f"{zh}\n{en}" for zh, en in steps)
    body += "\n\n完整回執（逐列說明）見附件 Excel。The full receipt, row by row, is attached."
    return body + _footer(settings)


def queue_receipts(wh: Warehouse, settings: Settings) -> int:
    """A receipt mail for every upload or feed run of a unit processed since one of its contacts was
    added (to those contacts): a new contact is not sent the unit's past."""
    added = wh.con.execute("""SELECT unit_code, email, added_at FROM unit_contacts WHERE removed_at IS NULL
        ORDER BY unit_code, added_at, email""").fetchall()
    if not added:
        return 0
    cur = wh.con.execute("""SELECT u.* FROM uploads u WHERE u.processed_at >= (
            SELECT min(c.added_at) FROM unit_contacts c WHERE c.unit_code = u.unit_code AND c.removed_at IS NULL)
        AND NOT EXISTS (SELECT 1 FROM mail_outbox m WHERE m.message_key = 'receipt:' || u.upload_id)
        ORDER BY u.processed_at""")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    queued = 0
    for row in rows:
        to = [email for unit, email, at in added if unit == row["unit_code"] and at <= row["processed_at"]]
        counts = wh.con.execute("""SELECT rule, severity, count(*) FROM findings WHERE upload_id = ?
            GROUP BY rule, severity ORDER BY rule""", [row["upload_id"]]).fetchall()
        errors = {r: int(n) for r, sev, n in counts if sev == "error"}
        warnings = sum(int(n) for _, sev, n in counts if sev == "warning")
        what = row["file_name"] or row["upload_id"]
        subject = (f"[在職進修資訊網] 回執 {row['unit_code']} {what}：{STATUS_ZH.get(row['status'], row['status'])}"
                   f" / receipt: {row['status']}")
        with wh.transaction():
            queued += _queue(wh, f"receipt:{row['upload_id']}", "receipt", row["unit_code"], to, subject,
                             receipt_body(row, errors, warnings, settings), row["receipt_xlsx"])
    return queued


def missing_months(wh: Warehouse, today: date) -> dict[str, list[str]]:
    """File units (not sealed) and the data months, from their joining (the last 24 at most) to the
    month before `today`'s, with nothing loaded (a refused file does not count; a duplicate does)."""
    last = f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"
    window = months_back(last, REMINDER_MONTHS)
    units = wh.con.execute(f"""SELECT unit_code, joined FROM units WHERE channel = 'file' AND state <> 'sealed'
        AND {owes_monthly()} ORDER BY unit_code""").fetchall()
    have = {(u, m) for u, m in wh.con.execute("""SELECT DISTINCT unit_code, data_month FROM uploads
        WHERE channel = 'file' AND status IN ('loaded', 'duplicate') AND data_month BETWEEN ? AND ?""",
                                              [window[0], window[-1]]).fetchall()}
    out: dict[str, list[str]] = {}
    for unit, joined in units:
        months = [m for m in window if m >= f"{joined:%Y-%m}" and (unit, m) not in have]
        if months:
            out[unit] = months
    return out


def queue_reminders(wh: Warehouse, settings: Settings, today: date) -> int:
    """One reminder per unit with contacts and missing months, once per month it is run in."""
    contacts = _contacts(wh)
    queued = 0
    for unit, months in missing_months(wh, today).items():
        if unit not in contacts:
            continue
        listed = "、".join(months)
        example = f"{unit}_{months[-1].replace('-', '')}.xlsx"
        body = (f"單位 {unit} 下列資料月份尚未收到檔案（每月 5 日前應傳送上個月結案的課程）：\n{listed}\n\n"
                f"The network has not received a file from {unit} for these data months (each is due by the "
                f"5th of the next month):\n{', '.join(months)}\n\n"
                f"檔名請用 {unit}_YYYYMM.<副檔名>（.xlsx .xls .xml .mdb .accdb），例：{example}。\n"
                f"Name the file {unit}_YYYYMM.<ext>, e.g. {example}.")
        subject = f"[在職進修資訊網] 缺件提醒 {unit}：{len(months)} 個月未傳 / missing months: {len(months)}"
        with wh.transaction():
            queued += _queue(wh, f"reminder:{unit}:{today:%Y-%m}", "reminder", unit, contacts[unit], subject,
                             body + _footer(settings))
    return queued


def queue_digest(wh: Warehouse, settings: Settings, day: date) -> int:
    """Staff's digest of `day`'s refusals (Asia/Taipei): uploads refused whole, and rows refused by rule."""
    if not settings.mail.staff:
        return 0
    start = datetime.combine(day, datetime.min.time(), TAIPEI)
    end = start + timedelta(days=1)
    whole = wh.con.execute("""SELECT unit_code, coalesce(file_name, upload_id), refusal FROM uploads
        WHERE status = 'refused' AND processed_at >= ? AND processed_at < ? ORDER BY unit_code, processed_at""",
                           [start, end]).fetchall()
    rows = wh.con.execute("""SELECT u.unit_code, f.rule, count(*) FROM findings f JOIN uploads u USING (upload_id)
        WHERE u.status = 'loaded' AND f.severity = 'error' AND f.record <> 'file'
          AND u.processed_at >= ? AND u.processed_at < ?
        GROUP BY u.unit_code, f.rule ORDER BY u.unit_code, f.rule""", [start, end]).fetchall()
    if not whole and not rows:
        return 0
    lines = [f"{day:%Y-%m-%d} 退件日報 Refusals of the day", ""]
    if whole:
        lines += ["整批退件 Uploads refused whole:"] + [f"  {u}  {f}  {r}" for u, f, r in whole] + [""]
    if rows:
        lines += ["退件列（依規則）Rows refused, by rule:"] + [f"  {u}  {r}  {n}" for u, r, n in rows]
    subject = f"[在職進修資訊網] 退件日報 {day:%Y-%m-%d}：整批 {len(whole)} 件 / refusals digest"
    with wh.transaction():
        return int(_queue(wh, f"digest:{day:%Y-%m-%d}", "digest", None, list(settings.mail.staff), subject,
                          "\n".join(lines) + _footer(settings)))


# --- sending -------------------------------------------------------------------------------------
def _claim(wh: Warehouse, max_attempts: int, limit: int) -> list[dict]:
    """Pending messages (and ones a killed sender left `sending`) become `sending`, in one transaction."""
    stale = datetime.now(TAIPEI) - STALE_CLAIM
    with wh.transaction():
        cur = wh.con.execute("""SELECT message_key, recipients, subject, body, attachment, attempts FROM mail_outbox
            WHERE (status = 'pending' OR (status = 'sending' AND claimed_at < ?)) AND attempts < ?
            ORDER BY created_at, message_key LIMIT ?""", [stale, max_attempts, limit])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            wh.con.execute("UPDATE mail_outbox SET status = 'sending', claimed_at = now() WHERE message_key = ?",
                           [r["message_key"]])
    return rows


def compose(row: dict, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row["recipients"]
    msg["Subject"] = row["subject"]
    msg["Date"] = formatdate(localtime=True)
    digest = hashlib.sha256(row["message_key"].encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@inservice>"  # the same for a repeat: clients show it once
    msg["X-Inservice-Key"] = row["message_key"]
    msg.set_content(row["body"])
    path = Path(row["attachment"]) if row.get("attachment") else None
    if path is not None and path.is_file():
        msg.add_attachment(path.read_bytes(), maintype=XLSX[0], subtype=XLSX[1], filename=path.name)
    return msg


def _connect(settings: Settings) -> smtplib.SMTP:
    m = settings.mail
    if m.host is None:  # callers send only with a host set
        raise OSError("no SMTP host set (INSERVICE_SMTP_HOST)")
    if m.tls == "ssl":
        server: smtplib.SMTP = smtplib.SMTP_SSL(m.host, m.port, timeout=m.timeout,
                                                context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(m.host, m.port, timeout=m.timeout)
        if m.tls == "starttls":
            server.starttls(context=ssl.create_default_context())
    if m.user:
        password = os.environ.get(m.password_env)
        if password is None:
            server.close()
            raise smtplib.SMTPAuthenticationError(530, f"no password in ${m.password_env}".encode())
        server.login(m.user, password)
    return server


def _error_text(exc: BaseException, settings: Settings) -> str:
    text = f"{type(exc).__name__}: {exc}"
    password = os.environ.get(settings.mail.password_env)
    return text.replace(password, "***") if password else text


def send_pending(settings: Settings, limit: int = 200) -> Outcome:
    """Send what is pending. The warehouse is open only to claim and to mark, never while the server
    is talked to. Never raises for a mail problem: the outcome says what is left."""
    m = settings.mail
    out = Outcome()
    if not m.host:
        with Warehouse(settings) as wh:
            out.pending = _count(wh, "pending")
        return out
    with Warehouse(settings) as wh:
        rows = _claim(wh, m.max_attempts, limit)
    results: dict[str, str | None] = {}  # key -> None sent, or the error
    server: smtplib.SMTP | None = None
    try:
        for row in rows:
            try:
                if server is None:
                    server = _connect(settings)
                server.send_message(compose(row, m.sender))
                results[row["message_key"]] = None
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
                results[row["message_key"]] = _error_text(exc, settings)  # this message; go on with the next
            except (OSError, smtplib.SMTPException) as exc:  # the server: leave the rest for later
                error = _error_text(exc, settings)
                LOG.warning("mail not sent, will be retried: %s", error)
                for r in rows:
                    results.setdefault(r["message_key"], error)
                server = None
                break
    finally:
        if server is not None:
            try:
                server.quit()
            except (OSError, smtplib.SMTPException):
                pass
    with Warehouse(settings) as wh:
        with wh.transaction():
            for row in rows:
                outcome = results.get(row["message_key"], "not attempted")
                if outcome is None:
                    wh.con.execute("""UPDATE mail_outbox SET status = 'sent', sent_at = now(),
                        attempts = attempts + 1, last_error = NULL WHERE message_key = ?""", [row["message_key"]])
                    out.sent += 1
                    continue
                given_up = row["attempts"] + 1 >= m.max_attempts
                wh.con.execute("""UPDATE mail_outbox SET status = ?, attempts = attempts + 1, last_error = ?
                    WHERE message_key = ?""", ["failed" if given_up else "pending", outcome[:500], row["message_key"]])
        out.pending, out.failed = _count(wh, "pending"), _count(wh, "failed")
    return out


def _count(wh: Warehouse, status: str) -> int:
    return int(wh.con.execute("SELECT count(*) FROM mail_outbox WHERE status = ?", [status]).fetchone()[0])


# --- what the Dagster assets and the CLI run -------------------------------------------------------
def _queue_and_send(settings: Settings, queue: Callable[[Warehouse], int]) -> Outcome:
    """Queue (the warehouse open only for that), then send what is pending, this and any earlier."""
    with Warehouse(settings) as wh:
        queued = queue(wh)
    out = send_pending(settings)
    out.queued = queued
    return out


def mail_receipts(settings: Settings) -> Outcome:
    return _queue_and_send(settings, lambda wh: queue_receipts(wh, settings))


def mail_reminders(settings: Settings, today: date) -> Outcome:
    return _queue_and_send(settings, lambda wh: queue_reminders(wh, settings, today))


def mail_digest(settings: Settings, day: date) -> Outcome:
    return _queue_and_send(settings, lambda wh: queue_digest(wh, settings, day))


def _cmd_mail(args, settings: Settings) -> int:
    today = datetime.now(TAIPEI).date()
    if args.mail_cmd == "reminders":
        out = mail_reminders(settings, date.fromisoformat(args.today) if args.today else today)
    elif args.mail_cmd == "digest":
        out = mail_digest(settings, date.fromisoformat(args.day) if args.day else today - timedelta(days=1))
    else:
        out = mail_receipts(settings)
    print(" ".join(f"{k}={v}" for k, v in out.as_dict().items()))
    return 0


def arguments(command: str, p) -> None:
    """`inservice mail receipts | reminders [--today D] | digest [--day D]` (what the Dagster jobs run)."""
    msub = p.add_subparsers(dest="mail_cmd", required=True)
    msub.add_parser("receipts", help="receipts of uploads and feed runs not yet mailed; then send what is pending")
    r = msub.add_parser("reminders", help="missing-month reminders (the schedule runs it on the 6th)")
    r.add_argument("--today", help="YYYY-MM-DD (default today, Asia/Taipei)")
    d = msub.add_parser("digest", help="staff's digest of one day's refusals")
    d.add_argument("--day", help="YYYY-MM-DD (default yesterday, Asia/Taipei)")
    p.set_defaults(func=_cmd_mail)
