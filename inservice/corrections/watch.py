"""The correction inbox, inbox/_corrections/, through the unit inbox's own machinery
(inservice.inbox): the same stability rule, cursor, hash cache and archive/quarantine moves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from inservice.config import TAIPEI, Settings
from inservice.corrections.apply import FOLDER
from inservice.inbox import InboxFile, scan_folder, settle


def folder(settings: Settings) -> Path:
    return settings.inbox / FOLDER


def scan_corrections(settings: Settings) -> Iterator[InboxFile]:
    """Every file in inbox/_corrections/, as the unit inbox scan yields them, with `_corrections`
    in place of the unit."""
    yield from scan_folder(FOLDER, folder(settings))


def settle_workbook(settings: Settings, path: Path, receipt: dict) -> Path:
    """Processed or duplicate → archive/_corrections/<YYYYMM received>/; refused whole →
    quarantine/_corrections/ (never overwriting, as for uploads)."""
    month = datetime.fromisoformat(receipt["received_at"]).astimezone(TAIPEI).strftime("%Y-%m")
    status = "refused" if receipt["status"] == "refused" else "loaded"
    return settle(settings, FOLDER, path, {"status": status, "month": month, "received_at": receipt["received_at"]})
