"""The correction inbox, inbox/_corrections/, through the unit inbox's own machinery
(inservice.inbox): the same stability rule, cursor, hash cache and archive/quarantine moves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from inservice.config import TAIPEI, Settings
from inservice.corrections.apply import FOLDER
from inservice.inbox import InboxFile, _is_temp, settle


def folder(settings: Settings) -> Path:
    return settings.inbox / FOLDER


def scan_corrections(settings: Settings) -> Iterator[InboxFile]:
    """Every file in inbox/_corrections/ (one level, temporary files skipped), as the unit inbox
    scan yields them, with `_corrections` in place of the unit."""
    try:
        entries = list(os.scandir(folder(settings)))
    except FileNotFoundError:
        return
    for entry in entries:
        if _is_temp(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # moved away between listing and stat
            continue
        yield InboxFile(FOLDER, entry.name, Path(entry.path), st.st_size, st.st_mtime_ns, st.st_ctime)


def settle_workbook(settings: Settings, path: Path, receipt: dict) -> Path:
    """Processed or duplicate → archive/_corrections/<YYYYMM received>/; refused whole →
    quarantine/_corrections/ (never overwriting, as for uploads)."""
    month = datetime.fromisoformat(receipt["received_at"]).astimezone(TAIPEI).strftime("%Y-%m")
    status = "refused" if receipt["status"] == "refused" else "loaded"
    return settle(settings, FOLDER, path, {"status": status, "month": month, "received_at": receipt["received_at"]})
