"""Watched inboxes, in plain Python: scan, stable-file detection, and where originals go afterwards.

Dagster's inbox sensor and assets call these functions; nothing here imports Dagster, so the
rules are testable (and usable from a cron job) on their own.

Layout under $INSERVICE_HOME:
    inbox/<UNIT>/<file>                      a partner drops files here
    archive/<UNIT>/<YYYYMM>/<file>           processed (loaded or duplicate), by data month
    quarantine/<UNIT>/<file>                 refused as a whole
Folders starting with `_` (e.g. `inbox/_corrections`) belong to other features and are skipped, and so
is `inbox/PLAN/` (the planning survey's exports, archived under archive/PLAN/<school year>/).
Originals are never deleted or overwritten: a name already taken in archive/quarantine puts the
newcomer in a sub-folder named after its receipt time, under its own name (a re-run parses it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from inservice.channel import sha256_file
from inservice.config import TAIPEI, Settings
from inservice.errors import RetryLater
from inservice.receipts import stamp
from inservice.schemas.fields import UNIT_CODE
from inservice.schemas.filenames import parse_file_name
from inservice.schemas.plans import PLAN_UNIT

# A unit inbox folder: the spec's unit code. Anything else is not an inbox (and would not make a
# valid partition key), so it is reported, not processed.
UNIT_FOLDER = re.compile(f"^{UNIT_CODE}$")
# Files that are never uploads: editors' lock files and transfer tools' partial files.
_TEMP_PREFIXES = (".", "~$")
_TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", ".crdownload")

CURSOR_VERSION = 1


@dataclass(frozen=True)
class InboxFile:
    unit: str
    name: str
    path: Path
    size: int
    mtime_ns: int
    ctime: float  # when the file last changed *here*: its arrival, which copy tools cannot back-date

    @property
    def rel(self) -> str:
        return f"{self.unit}/{self.name}"


@dataclass(frozen=True)
class NewUpload:
    """A stable file to process once: its run key is unit + file name + content hash."""

    file: InboxFile
    content_hash: str

    @property
    def run_key(self) -> str:
        return f"{self.file.unit}/{self.file.name}/{self.content_hash}"

    @property
    def resend_key(self) -> str:
        """The key of the same bytes dropped again after an earlier drop was processed: the arrival
        makes it a new upload, answered (F08, with its receipt) and moved out of the inbox."""
        return f"{self.run_key}@{int(self.file.ctime * 1_000_000)}"

    @property
    def received_at(self) -> str:
        return arrival(self.file.ctime)


def arrival(ctime: float) -> str:
    """A file's arrival in the inbox (its ctime: copy tools cannot back-date it), ISO-8601 in Taipei."""
    return datetime.fromtimestamp(ctime, TAIPEI).isoformat(timespec="seconds")


@dataclass
class InboxCursor:
    """What the sensor remembers between ticks (stored by Dagster as JSON).

    files: "UNIT/name" -> [size, mtime_ns, hash]; hash "" = seen, not yet handed on; otherwise the
    content hash it was handed on with (the hash cache: unchanged size+mtime are never re-hashed).
    Entries disappear with their files, so the cursor stays as small as the inbox.
    """

    files: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "files": self.files}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> InboxCursor:
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("v") != CURSOR_VERSION:  # unknown layout: start afresh (run keys still dedupe)
            return cls()
        return cls(files=data.get("files", {}))


@dataclass
class TickPlan:
    uploads: list[NewUpload]
    cursor: InboxCursor
    waiting: int = 0  # new or still changing: looked at again next tick
    deferred: int = 0  # stable but over this tick's cap
    ignored_folders: list[str] = field(default_factory=list)


def _is_temp(name: str) -> bool:
    return name.startswith(_TEMP_PREFIXES) or name.lower().endswith(_TEMP_SUFFIXES)


def scan(inbox: Path, ignored: list[str] | None = None) -> Iterator[InboxFile]:
    """Every file in inbox/<UNIT>/ (one level), with one stat each; parses nothing."""
    try:
        units = list(os.scandir(inbox))
    except FileNotFoundError:
        return
    for unit_entry in units:
        if unit_entry.name.startswith(("_", ".")) or not unit_entry.is_dir(follow_symlinks=False):
            continue
        if unit_entry.name == PLAN_UNIT:  # the planning survey's exports: plans_sensor's
            continue
        if not UNIT_FOLDER.match(unit_entry.name):
            if ignored is not None:
                ignored.append(unit_entry.name)
            continue
        yield from scan_folder(unit_entry.name, Path(unit_entry.path))


def scan_folder(label: str, path: Path) -> Iterator[InboxFile]:
    """The files of one inbox folder (one level, temporary files skipped), labelled with its unit."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if _is_temp(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # moved away between listing and stat
            continue
        yield InboxFile(label, entry.name, Path(entry.path), st.st_size, st.st_mtime_ns, st.st_ctime)


def plan_tick(inbox: Path, cursor: InboxCursor, max_uploads: int = 20, max_hash_bytes: int = 1 << 30,
              hasher: Callable[[Path], str] = sha256_file,
              already_done: Callable[[NewUpload], bool] | None = None,
              files: Iterator[InboxFile] | None = None) -> TickPlan:
    """Decide which files to hand on this tick.

    A file is stable when its size and mtime are what the previous tick saw; only stable files
    not yet handed on are hashed, oldest first, at most `max_uploads` (and about `max_hash_bytes`)
    per tick. `already_done(upload)` lets the caller drop a re-copy of bytes already processed.
    `files` replaces the scan of the unit folders (e.g. the files of inbox/_corrections/).
    """
    ignored: list[str] = []
    seen = {f.rel: f for f in (scan(inbox, ignored) if files is None else files)}
    entries: dict[str, list] = {}
    candidates: list[InboxFile] = []
    waiting = 0
    for rel, f in seen.items():
        before = cursor.files.get(rel)
        if before is not None and before[0] == f.size and before[1] == f.mtime_ns:
            entries[rel] = before
            if not before[2]:
                candidates.append(f)
        else:  # new, or changed since the last tick: wait until it holds still
            entries[rel] = [f.size, f.mtime_ns, ""]
            waiting += 1
    candidates.sort(key=lambda f: (f.mtime_ns, f.rel))
    uploads: list[NewUpload] = []
    hashed_bytes = 0
    deferred = 0
    for f in candidates:
        if len(uploads) >= max_uploads or (uploads and hashed_bytes + f.size > max_hash_bytes):
            deferred += 1
            continue
        try:
            digest = hasher(f.path)
        except FileNotFoundError:  # taken away meanwhile
            entries.pop(f.rel, None)
            continue
        hashed_bytes += f.size
        entries[f.rel][2] = digest
        upload = NewUpload(f, digest)
        if already_done is not None and already_done(upload):
            continue
        uploads.append(upload)
    new_cursor = InboxCursor(files=entries)
    return TickPlan(uploads, new_cursor, waiting=waiting, deferred=deferred, ignored_folders=sorted(ignored))


def registered_units(settings: Settings) -> set[str] | None:
    """The unit register's codes, or None when the warehouse cannot be read right now (DuckDB: a writer
    holds the file; PostgreSQL: the server unreachable): the caller looks again on its next tick rather
    than wait. Any other failure (a damaged file, a wrong URL) is raised: it needs a person."""
    from inservice.warehouse.store import Warehouse

    try:
        if not Warehouse.exists(settings):
            return set()
        with Warehouse(settings, read_only=True, wait=0) as wh:
            return {u.unit_code for u in wh.units()}
    except RetryLater:  # WarehouseBusy, WarehouseUnreachable: the warehouse's own word for "not now"
        return None


def original_received_at(settings: Settings, unit: str, path: Path) -> str | None:
    """When an upload kept in archive/ or quarantine/ first arrived (its earliest record in `uploads`),
    so a re-run judges on time/late (and the register) as of then, not as of the re-run."""
    from inservice.warehouse.store import Warehouse

    if not Warehouse.exists(settings):
        return None
    with Warehouse(settings, read_only=True) as wh:
        row = wh.con.execute(
            "SELECT min(received_at) FROM main.uploads WHERE unit_code = ? AND file_name = ? "
            "AND (content_hash = ? OR content_hash IS NULL)", [unit, path.name, sha256_file(path)]).fetchone()
    if not row or row[0] is None:
        return None
    value = row[0]
    return (value if value.tzinfo else value.replace(tzinfo=TAIPEI)).astimezone(TAIPEI).isoformat()


def data_month(name: str) -> str | None:
    """The data month ("YYYY-MM") a file name claims, by the spec's grammar; None if it names none."""
    parsed = parse_file_name(name)
    return parsed.month if parsed else None


# --- after processing -------------------------------------------------------------------------
def archive_dir(settings: Settings, unit: str, month: str) -> Path:
    return settings.home / "archive" / unit / month.replace("-", "")


def quarantine_dir(settings: Settings, unit: str) -> Path:
    return settings.home / "quarantine" / unit


def destination(settings: Settings, unit: str, receipt: dict) -> Path | None:
    """Where the original belongs after its receipt: archive when processed (by data month; a planning
    survey export by school year), quarantine when refused."""
    folder = receipt.get("month") or receipt.get("school_year")
    if receipt["status"] in ("loaded", "duplicate") and folder:
        return archive_dir(settings, unit, folder)
    if receipt["status"] == "refused":
        return quarantine_dir(settings, unit)
    return None  # "checked" (self-check) moves nothing


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def settle(settings: Settings, unit: str, path: Path, receipt: dict) -> Path:
    """Move the original out of the inbox (or out of quarantine once processed), never overwriting.

    An archived original stays in the archive whatever a re-run says. Returns where it now is.
    """
    target = destination(settings, unit, receipt)
    if target is None or _within(path, settings.home / "archive"):
        return path
    if _within(path, target):
        return path
    dest = target / path.name
    if dest.exists():  # name taken (a corrected re-send, or a re-copy): keep both, name unchanged
        when = stamp(datetime.fromisoformat(receipt["received_at"]))
        n, sub = 1, when
        while (target / sub / path.name).exists():
            n += 1
            sub = f"{when}-{n}"
        dest = target / sub / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(dest))
    return dest


def copies(settings: Settings, unit: str, name: str) -> list[Path]:
    """Every copy of `name` for a unit: inbox first, then quarantine and archive (newest first)."""
    found: list[Path] = []
    inbox_copy = settings.inbox / unit / name
    if inbox_copy.is_file():
        found.append(inbox_copy)
    kept: list[Path] = []
    for root in (quarantine_dir(settings, unit), settings.home / "archive" / unit):
        if root.is_dir():
            kept += [p for p in root.rglob(name) if p.is_file() and p.name == name]
    kept.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return found + kept


def find_upload(settings: Settings, unit: str, name: str, content_hash: str = "") -> Path | None:
    """The copy to (re)process: the one with `content_hash` if given, else the inbox copy, else the
    newest kept copy."""
    for path in copies(settings, unit, name):
        if not content_hash or sha256_file(path) == content_hash:
            return path
    return None


def waiting_or_refused(settings: Settings, unit: str, month: str) -> list[Path]:
    """A unit-month's files not yet loaded, one copy per name: the inbox copy, else the newest
    quarantined one."""
    names: set[str] = set()
    for root, deep in ((settings.inbox / unit, False), (quarantine_dir(settings, unit), True)):
        if root.is_dir():
            names |= {p.name for p in (root.rglob("*") if deep else root.iterdir())
                      if p.is_file() and not _is_temp(p.name) and data_month(p.name) == month}
    archive = settings.home / "archive"
    out = []
    for name in sorted(names):
        pending = [p for p in copies(settings, unit, name) if not _within(p, archive)]
        if pending:
            out.append(pending[0])
    return out
