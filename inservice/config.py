"""Settings, from the environment, with the defaults a newcomer needs (DuckDB under ./data)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from inservice.schemas.rules import C11_FROM
from inservice.schemas.timezone import TAIPEI  # noqa: F401 (the settings' clock, imported from here)

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """F09: refuse before parsing, so nothing hangs or exhausts memory."""

    max_upload_bytes: int = 100 * MiB
    max_xlsx_inflated_bytes: int = 512 * MiB
    max_xlsx_ratio: float = 100.0
    # a workbook is read in a child process with these (loaders/isolated.py): a native reader asked
    # for more would abort the whole process, or spin for minutes
    reader_memory_bytes: int = 2048 * MiB
    reader_seconds: int = 60  # ~10x a 100 MiB workbook's read here


@dataclass(frozen=True)
class Mail:
    """Outgoing mail (SMTP). The password is never a setting: it is read from the environment
    variable named by `password_env` at the moment of sending, and never stored or logged."""

    host: str | None = None  # INSERVICE_SMTP_HOST; None: mail waits in the outbox table
    port: int = 587  # INSERVICE_SMTP_PORT
    tls: str = "starttls"  # INSERVICE_SMTP_TLS: starttls | ssl | none
    user: str | None = None  # INSERVICE_SMTP_USER
    password_env: str = "INSERVICE_SMTP_PASSWORD"
    sender: str = "inservice@localhost"  # INSERVICE_MAIL_FROM
    staff: tuple[str, ...] = ()  # INSERVICE_STAFF_EMAILS (comma-separated): the daily digest of refusals
    timeout: float = 20.0  # seconds per SMTP conversation
    max_attempts: int = 96  # a day of 15-minute retries; then `failed` in the outbox, for staff to look at

    @classmethod
    def from_env(cls) -> Mail:
        env = os.environ.get
        return cls(host=env("INSERVICE_SMTP_HOST") or None, port=int(env("INSERVICE_SMTP_PORT", "587")),
                   tls=env("INSERVICE_SMTP_TLS", "starttls").lower(), user=env("INSERVICE_SMTP_USER") or None,
                   sender=env("INSERVICE_MAIL_FROM", cls.sender),
                   staff=tuple(a.strip() for a in env("INSERVICE_STAFF_EMAILS", "").split(",") if a.strip()))


@dataclass(frozen=True)
class Settings:
    home: Path
    archive_cutoff: date = date(2012, 12, 31)
    limits: Limits = field(default_factory=Limits)
    warehouse: str | None = None  # INSERVICE_WAREHOUSE_URL; None: DuckDB under the home
    analyst_role: str = "inservice_analyst"  # INSERVICE_ANALYST_ROLE (PostgreSQL read-only role)
    analyst_copy: bool = True  # INSERVICE_ANALYST_COPY=0: no read-only copy after each write (DuckDB)
    contact_phone: str | None = None  # INSERVICE_CONTACT_PHONE: the network's, on every receipt and e-mail
    contact_email: str | None = None  # INSERVICE_CONTACT_EMAIL
    mail: Mail = field(default_factory=Mail)
    c11_from: date = C11_FROM  # INSERVICE_C11_FROM: from it a red organizer registers no new course (C11)

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        home_path = Path(home or os.environ.get("INSERVICE_HOME", "./data")).resolve()
        cutoff = os.environ.get("INSERVICE_ARCHIVE_CUTOFF")
        c11 = os.environ.get("INSERVICE_C11_FROM")
        return cls(home=home_path, archive_cutoff=date.fromisoformat(cutoff) if cutoff else date(2012, 12, 31),
                   c11_from=date.fromisoformat(c11) if c11 else cls.c11_from,
                   warehouse=os.environ.get("INSERVICE_WAREHOUSE_URL") or None,
                   analyst_role=os.environ.get("INSERVICE_ANALYST_ROLE", cls.analyst_role),
                   analyst_copy=os.environ.get("INSERVICE_ANALYST_COPY", "1") != "0",
                   contact_phone=os.environ.get("INSERVICE_CONTACT_PHONE") or None,
                   contact_email=os.environ.get("INSERVICE_CONTACT_EMAIL") or None,
                   mail=Mail.from_env())

    @property
    def warehouse_path(self) -> Path:
        """The embedded default's file (used only when INSERVICE_WAREHOUSE_URL is not set)."""
        return self.home / "warehouse.duckdb"

    @property
    def warehouse_url(self) -> str:
        """INSERVICE_WAREHOUSE_URL (duckdb:///path or postgresql://...), else DuckDB under the home."""
        return self.warehouse or f"duckdb://{self.warehouse_path}"

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"
