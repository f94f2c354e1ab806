"""The month at a glance for staff: each registered unit's files (or feed days) of a data month —
loaded, refused (by rule), duplicate, late — and who is missing once the 5th has passed.

Plain SQL over the warehouse's `units` and `uploads` (both backends); Dagster shows it as the `upload_overview` asset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from inservice.schemas.filenames import deadline
from inservice.schemas.plans import owes_monthly
from inservice.warehouse.backend import Connection

OVERVIEW_SQL = f"""
WITH m AS (
    SELECT unit_code,
        count(*) FILTER (WHERE channel = 'file' AND status = 'loaded') AS loaded,
        count(*) FILTER (WHERE channel = 'file' AND status = 'refused') AS refused,
        count(*) FILTER (WHERE channel = 'file' AND status = 'duplicate') AS duplicate,
        count(*) FILTER (WHERE channel = 'file' AND status = 'loaded' AND NOT coalesce(on_time, false)) AS late,
        count(DISTINCT CAST(timezone('Asia/Taipei', received_at) AS DATE))
            FILTER (WHERE channel = 'db' AND status = 'loaded') AS feed_days,
        string_agg(DISTINCT refusal, ',') FILTER (WHERE status = 'refused') AS rules
    FROM main.uploads WHERE data_month = ? AND {owes_monthly()}
        AND replay_of IS NULL GROUP BY unit_code)  -- a replay is no new file
SELECT u.unit_code, u.name, u.state, u.channel,
       coalesce(m.loaded, 0), coalesce(m.refused, 0), coalesce(m.rules, ''), coalesce(m.duplicate, 0),
       coalesce(m.late, 0), coalesce(m.feed_days, 0)
FROM main.units u LEFT JOIN m ON m.unit_code = u.unit_code
WHERE u.joined < ? AND {owes_monthly('u.unit_code')}
UNION ALL  -- uploads of codes not (or no longer) in the register, e.g. refused F05
SELECT m.unit_code, NULL, NULL, 'file', m.loaded, m.refused, coalesce(m.rules, ''), m.duplicate, m.late, m.feed_days
FROM m WHERE m.unit_code NOT IN (SELECT unit_code FROM main.units)
ORDER BY 1"""


@dataclass(frozen=True)
class UnitMonth:
    unit_code: str
    name: str | None
    state: str | None  # None: not registered
    channel: str
    loaded: int
    refused: int
    rules: str  # the refusals' rules, e.g. "F03,F07"
    duplicate: int
    late: int
    feed_days: int
    # in Chinese, for staff: 已載入／逾期載入／僅退件／未傳（逾期）／尚未到期／未登錄 …
    status: str = ""  # set once every count is known


def _status(r: UnitMonth, overdue: bool) -> str:
    if r.state is None:
        return "未登錄單位（F05）"
    if r.state == "sealed":
        return "已封存"
    if r.channel == "db":
        return f"資料庫互傳 {r.feed_days} 日" if r.feed_days else ("未傳（逾期）" if overdue else "尚無互傳")
    if r.loaded:
        return "已載入（含逾期）" if r.late else "已載入"
    if r.refused:
        return f"僅退件（{r.rules}）" + ("，逾期未補" if overdue else "，待重傳")
    if r.duplicate:
        return "僅重複傳報"
    return "未傳（逾期）" if overdue else "尚未到期"


def month_overview(con: Connection, month: str, now: datetime) -> list[UnitMonth]:
    """Every registered unit (joined by the month's end) and every unit code with an upload of `month`."""
    due = deadline(month)  # the spec's: the 5th of the next month, 23:59:59 Asia/Taipei
    next_month = due.date().replace(day=1)
    rows = con.execute(OVERVIEW_SQL, [month, next_month]).fetchall()
    drafts = [UnitMonth(*row) for row in rows]
    return [replace(r, status=_status(r, now > due)) for r in drafts]
