"""Settings, from the environment, with the defaults a newcomer needs (DuckDB under ./data)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from inservice.schemas.rules import C11_FROM

TAIPEI = ZoneInfo("Asia/Taipei")
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
class Settings:
    home: Path
    archive_cutoff: date = date(2012, 12, 31)
    limits: Limits = field(default_factory=Limits)
    warehouse: str | None = None  # INSERVICE_WAREHOUSE_URL; None: DuckDB under the home
    analyst_role: str = "inservice_analyst"  # INSERVICE_ANALYST_ROLE (PostgreSQL read-only role)
    analyst_copy: bool = True  # INSERVICE_ANALYST_COPY=0: no read-only copy after each write (DuckDB)
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
                   analyst_copy=os.environ.get("INSERVICE_ANALYST_COPY", "1") != "0")

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
