"""E-mail through a real SMTP server the test starts (aiosmtpd on 127.0.0.1): receipts to a unit's
contacts, missing-month reminders, the staff digest; each sent once; an unreachable server delays
mail but never fails or rolls back a load; the password comes from the environment only."""

from __future__ import annotations

import email
import io
import logging
import socket
from dataclasses import replace
from datetime import date, datetime
from email.message import EmailMessage
from pathlib import Path

import openpyxl
import pytest

from inservice.config import TAIPEI, Mail
from inservice.ingest import ingest_paths
from inservice.notifications import mail_digest, mail_receipts, mail_reminders, missing_months, send_pending
from inservice.registers import contacts
from inservice.warehouse.store import Warehouse, WarehouseError
from tests.conftest import FIXTURES, RECEIVED, drop, load_expected, table_snapshot
from tests.test_feeds import fhome, pg  # noqa: F401 (fixtures: a partner's PostgreSQL, a feed unit's home)

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends
PASSWORD = "s3cret-smtp-pw"


class Inbox:
    """aiosmtpd handler: keeps every message received, with its envelope."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp() -> Controller:
    handler = Inbox()
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == PASSWORD
        logins.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok)

    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    controller.inbox, controller.logins = handler, logins
    yield controller
    controller.stop()


def _mail_settings(settings, port: int, **over):
    mail = Mail(host="127.0.0.1", port=port, tls="none", user="inservice", sender="inservice@example.org",
                staff=("staff@example.org",), timeout=5, **over)
    return replace(settings, mail=mail, contact_phone="02-7736-7890", contact_email="help@example.org")


def _outbox(settings) -> list[tuple]:
    with Warehouse(settings, read_only=True) as wh:
        return wh.con.execute("""SELECT message_key, status, attempts, last_error, recipients FROM mail_outbox
            ORDER BY message_key""").fetchall()


def test_contacts_register_keeps_history(settings) -> None:
    with Warehouse(settings) as wh:
        assert contacts.change(wh, "T001", add=["Clerk@School.edu.tw", "b@x.org"]) == ["b@x.org", "clerk@school.edu.tw"]
        assert contacts.change(wh, "T001", add=["clerk@school.edu.tw"], remove=["b@x.org"]) == ["clerk@school.edu.tw"]
        history = contacts.history(wh, "T001")
        assert [(c.email, c.removed_at is None) for c in history] == [("b@x.org", False), ("clerk@school.edu.tw", True)]
        assert all(c.added_by for c in history)
        with pytest.raises(WarehouseError):
            contacts.change(wh, "T001", add=["not an address"])
        with pytest.raises(WarehouseError):
            contacts.change(wh, "NOPE1", add=["a@b.org"])


@pytest.mark.slow
def test_receipt_mailed_once_with_its_workbook(settings, smtp, monkeypatch, caplog) -> None:
    monkeypatch.setenv("INSERVICE_SMTP_PASSWORD", PASSWORD)
    s = _mail_settings(settings, smtp.port)
    with Warehouse(s) as wh:
        contacts.change(wh, "T003", add=["clerk@t003.edu.tw", "head@t003.edu.tw"])
    exp, src = load_expected(FIXTURES / "defects-xlsx")
    [r] = ingest_paths([drop(s, src)], s, RECEIVED)
    with caplog.at_level(logging.DEBUG):
        out = mail_receipts(s)
    assert (out.queued, out.sent, out.pending) == (1, 1, 0)
    [(rcpt, msg)] = smtp.inbox.messages
    assert sorted(rcpt) == ["clerk@t003.edu.tw", "head@t003.edu.tw"]
    assert "T003_201705.xlsx" in msg["Subject"] and msg["From"] == "inservice@example.org"
    body = msg.get_body(("plain",)).get_content()
    assert f"通過 {exp['courses_accepted']}" in body and f"通過 {exp['attendance_accepted']}" in body
    assert "T003_201705_2.xlsx" in body and "02-7736-7890" in body  # what to do next, whom to call
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == Path(r["receipt_files"][1]).name
    wb = openpyxl.load_workbook(io.BytesIO(attachment.get_content()))
    assert wb.sheetnames[:2] == ["摘要 Summary", "檢核結果 Findings"]
    assert smtp.logins == [("inservice", True)]
    # a re-executed run mails nothing again
    again = mail_receipts(s)
    assert (again.queued, again.sent) == (0, 0) and len(smtp.inbox.messages) == 1
    [(key, status, attempts, error, recipients)] = _outbox(s)
    assert (key, status, attempts, error) == (f"receipt:{r['upload_id']}", "sent", 1, None)
    # the password is never stored nor logged
    with Warehouse(s, read_only=True) as wh:
        stored = " ".join(str(v) for row in wh.con.execute("SELECT * FROM mail_outbox").fetchall() for v in row)
    assert PASSWORD not in stored and PASSWORD not in caplog.text and PASSWORD not in repr(s)


@pytest.mark.slow
def test_unreachable_server_delays_mail_but_never_fails_a_load(settings, smtp, monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_SMTP_PASSWORD", PASSWORD)
    down = _mail_settings(settings, _free_port())  # nobody listens there
    with Warehouse(down) as wh:
        contacts.change(wh, "T002", add=["clerk@t002.edu.tw"])
    exp, src = load_expected(FIXTURES / "clean-xlsx")
    [r] = ingest_paths([drop(down, src)], down, RECEIVED)
    assert r["status"] == "loaded"
    out = mail_receipts(down)  # no exception
    assert (out.queued, out.sent, out.pending) == (1, 0, 1)
    [(_, status, attempts, error, _)] = _outbox(down)
    assert (status, attempts) == ("pending", 1) and "Connection refused" in error and PASSWORD not in error
    assert len(table_snapshot(down)["courses"]) == exp["courses_accepted"]  # the load stands
    # the server is back: the pending mail goes, once
    up = _mail_settings(settings, smtp.port)
    assert send_pending(up).sent == 1 and send_pending(up).sent == 0
    assert [sorted(rcpt) for rcpt, _ in smtp.inbox.messages] == [["clerk@t002.edu.tw"]]
    assert [row[1:3] for row in _outbox(up)] == [("sent", 2)]


@pytest.mark.slow
def test_wrong_password_leaves_mail_pending_then_failed(settings, smtp, monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_SMTP_PASSWORD", "wrong-pw")
    s = _mail_settings(settings, smtp.port, max_attempts=2)
    with Warehouse(s) as wh:
        with wh.transaction():
            wh.con.execute("""INSERT INTO mail_outbox VALUES ('digest:2017-06-03', 'digest', NULL, 'a@b.org', 's', 'b',
                NULL, 'pending', 0, NULL, now(), NULL, NULL)""")
    assert send_pending(s).pending == 1
    assert send_pending(s).failed == 1 and send_pending(s).sent == 0  # given up after max_attempts
    assert smtp.inbox.messages == [] and [r[1] for r in _outbox(s)] == ["failed"]
    assert all("wrong-pw" not in (r[3] or "") for r in _outbox(s))


@pytest.mark.slow
def test_reminders_on_the_6th_name_every_missing_month_once(settings, smtp, monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_SMTP_PASSWORD", PASSWORD)
    s = _mail_settings(settings, smtp.port)
    with Warehouse(s) as wh:
        contacts.change(wh, "T003", add=["clerk@t003.edu.tw"])
        contacts.change(wh, "T002", add=["clerk@t002.edu.tw"])
        wh.con.execute("UPDATE units SET joined = DATE '2017-03-01' WHERE unit_code = 'T003'")
        wh.add_unit("PLAN", "規劃填報系統", "file", "production", date(2016, 1, 1))  # yearly exports
        contacts.change(wh, "PLAN", add=["plans@moe.edu.tw"])
    _, src = load_expected(FIXTURES / "defects-xlsx")
    ingest_paths([drop(s, src)], s, RECEIVED)  # T003 sends May
    today = date(2017, 6, 6)
    with Warehouse(s) as wh:
        missing = missing_months(wh, today)
    assert missing["T003"] == ["2017-03", "2017-04"]  # since it joined; May arrived; June not yet due
    assert "PLAN" not in missing  # the planning service owes no monthly file
    assert missing["T002"][0] == "2016-01" and missing["T002"][-1] == "2017-05" and len(missing["T002"]) == 17
    out = mail_reminders(s, today)
    assert (out.queued, out.sent) == (2, 2)
    reminders = {rcpt[0]: msg for rcpt, msg in smtp.inbox.messages if "缺件提醒" in msg["Subject"]}
    assert set(reminders) == {"clerk@t003.edu.tw", "clerk@t002.edu.tw"}  # T001 has no contact
    text = reminders["clerk@t003.edu.tw"].get_body(("plain",)).get_content()
    assert "2017-03、2017-04" in text and "T003_201704.xlsx" in text and "2017-05" not in text.split("\n\n")[0]
    before = len(smtp.inbox.messages)
    again = mail_reminders(s, today)
    assert (again.queued, again.sent) == (0, 0) and len(smtp.inbox.messages) == before
    assert mail_reminders(s, date(2017, 7, 6)).queued == 2  # next month: reminded again


@pytest.mark.slow
def test_daily_digest_of_refusals_for_staff(settings, smtp, monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_SMTP_PASSWORD", PASSWORD)
    s = _mail_settings(settings, smtp.port)
    _, src = load_expected(FIXTURES / "defects-xlsx")
    ingest_paths([drop(s, src), drop(s, src, name="T003-201705.xlsx")], s, RECEIVED)  # rows refused; F03
    today = datetime.now(TAIPEI).date()  # processed today, whatever the receipt date
    out = mail_digest(s, today)
    assert (out.queued, out.sent) == (1, 1)
    [(rcpt, msg)] = smtp.inbox.messages
    assert rcpt == ["staff@example.org"] and today.isoformat() in msg["Subject"]
    text = msg.get_body(("plain",)).get_content()
    assert "T003-201705.xlsx  F03" in text and "T003  C01" in text and "T003  A05" in text
    assert mail_digest(s, today).queued == 0 and len(smtp.inbox.messages) == 1
    assert mail_digest(s, date(2017, 1, 1)).queued == 0  # a day without refusals sends nothing


@pytest.mark.slow
def test_a_feed_runs_receipt_is_mailed(pg, fhome, smtp, monkeypatch) -> None:  # noqa: F811
    """A database feed run is processed like an upload: its receipt goes to the unit's contacts."""
    from tests.test_feeds import UNIT, partner_with_day1, run_json, setup_unit

    monkeypatch.setenv("INSERVICE_SMTP_PASSWORD", PASSWORD)
    db, courses, attendance = partner_with_day1(pg, True)
    setup_unit(fhome, pg, monkeypatch)
    s = _mail_settings(fhome, smtp.port)
    with Warehouse(s) as wh:
        contacts.change(wh, UNIT, add=["db@unit.example.org"])
    r = run_json("--day", "2017-06-02")
    out = mail_receipts(s)
    assert (out.queued, out.sent) == (1, 1)
    [(rcpt, msg)] = smtp.inbox.messages
    assert rcpt == ["db@unit.example.org"] and r["file"] in msg["Subject"]
    body = msg.get_body(("plain",)).get_content()
    assert "資料庫互傳" in body and "modified_at" in body and f"退件 {r['courses']['rejected']}" in body
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == Path(r["receipt_files"][1]).name
    assert mail_receipts(s).queued == 0 and len(smtp.inbox.messages) == 1


@pytest.mark.slow
def test_dagster_partner_assets_mail_history_and_contract(settings, smtp, monkeypatch) -> None:
    """The partners group materialized through Dagster: the receipt mailed, each unit's history as
    metadata, the template and contract written under the home."""
    import dagster as dg

    from inservice.assets.notifications import partner_contract, partner_history, receipt_mail
    from inservice.assets.shared import InserviceResource

    for name, value in {"INSERVICE_SMTP_HOST": "127.0.0.1", "INSERVICE_SMTP_PORT": str(smtp.port),
                        "INSERVICE_SMTP_TLS": "none", "INSERVICE_SMTP_USER": "inservice",
                        "INSERVICE_SMTP_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(name, value)
    with Warehouse(settings) as wh:
        contacts.change(wh, "T003", add=["clerk@t003.edu.tw"])
    _, src = load_expected(FIXTURES / "defects-xml-big5")
    ingest_paths([drop(settings, src)], settings, RECEIVED)
    result = dg.materialize([receipt_mail, partner_history, partner_contract],
                            resources={"inservice": InserviceResource(home=str(settings.home))})
    assert result.success
    meta = {e.asset_key.path[-1]: e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["receipt_mail"]["sent"].value == 1 and len(smtp.inbox.messages) == 1
    t003 = meta["partner_history"]["T003"].value
    assert "| 2017-05 | 1 | 1 | 0 |" in t003 and "準時 on time" in t003 and "A05×" in t003
    assert Path(meta["partner_contract"]["xlsx"].value).is_file()
    assert (settings.home / "contract" / "datapackage.json").is_file()
