"""The feed register (`feeds`) and the watermarks (`feed_watermarks`) in the warehouse.

The register names an environment variable, never a URL: the URL carries the partner's password,
which must not sit in any table or file of ours.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime

from inservice.config import TAIPEI
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.warehouse.backend import Connection
from inservice.warehouse.store import Warehouse, WarehouseError

DEFAULT_OVERLAP_MINUTES = int(os.environ.get("INSERVICE_FEED_OVERLAP_MINUTES", "10"))
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# a table or view, optionally schema-qualified; quoting is the dialect's job, so keep names plain
TABLE_NAME = re.compile(r"^[^\s.\"`\[\];]+(\.[^\s.\"`\[\];]+)?$")


@dataclass(frozen=True)
class FeedSpec:
    unit_code: str
    url_env: str
    courses_table: str = COURSE.feed_table
    attendance_table: str = ATTENDANCE.feed_table
    overlap_minutes: int = DEFAULT_OVERLAP_MINUTES


@dataclass(frozen=True)
class Watermark:
    watermark: datetime | None  # naive Asia/Taipei wall time, like modified_at
    rows_taken: int
    upload_id: str | None
    complete: bool | None  # False: the pull that set it was interrupted; the next run continues it
    pull_started_at: datetime | None
    updated_at: datetime | None


def add_feed(wh: Warehouse, spec: FeedSpec) -> None:
    if not ENV_NAME.match(spec.url_env):
        # catches the commonest slip: pasting the URL (and its password) instead of a variable name
        raise WarehouseError("--url-env takes the NAME of an environment variable that holds the URL "
                             "(e.g. FEED_T001_URL), not the URL itself")
    for table in (spec.courses_table, spec.attendance_table):
        if not TABLE_NAME.match(table):
            raise WarehouseError(f"table name {table!r}: give table or schema.table, unquoted")
    if spec.overlap_minutes < 0:
        raise WarehouseError("the overlap window cannot be negative")
    with wh.transaction():
        wh.con.execute("DELETE FROM feeds WHERE unit_code = ?", [spec.unit_code])
        wh.con.execute("INSERT INTO feeds VALUES (?, ?, ?, ?, ?, ?)",
                       [spec.unit_code, spec.url_env, spec.courses_table, spec.attendance_table,
                        spec.overlap_minutes, datetime.now(TAIPEI)])


def feed(wh: Warehouse, unit: str) -> FeedSpec | None:
    # fetchall: DuckDB keeps a half-read result open, which blocks a later register() on the connection
    rows = wh.con.execute("""SELECT unit_code, url_env, courses_table, attendance_table, overlap_minutes
        FROM feeds WHERE unit_code = ?""", [unit]).fetchall()
    return FeedSpec(*rows[0]) if rows else None


def feeds(wh: Warehouse) -> list[FeedSpec]:
    rows = wh.con.execute("""SELECT unit_code, url_env, courses_table, attendance_table, overlap_minutes
        FROM feeds ORDER BY unit_code""").fetchall()
    return [FeedSpec(*r) for r in rows]


def watermark(con: Connection, unit: str, area: str) -> Watermark:
    rows = con.execute("""SELECT watermark, rows_taken, upload_id, complete, pull_started_at, updated_at
        FROM feed_watermarks WHERE unit_code = ? AND area = ?""", [unit, area]).fetchall()
    return Watermark(*rows[0]) if rows else Watermark(None, 0, None, None, None, None)


def save_watermark(con: Connection, unit: str, area: str, value: datetime | None,
                   rows_taken: int, upload_id: str, complete: bool, pull_started_at: datetime,
                   now: datetime) -> None:
    """Called inside the batch's transaction (Warehouse.record_upload's `in_transaction`)."""
    con.execute("DELETE FROM feed_watermarks WHERE unit_code = ? AND area = ?", [unit, area])
    con.execute("INSERT INTO feed_watermarks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [unit, area, value, rows_taken, upload_id, complete, pull_started_at, now])
