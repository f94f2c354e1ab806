"""A partner's history: per unit, month by month over the last 24 data months, its uploads (files or
feed runs), what was refused by rule, and whether the month arrived on time — so a partner sees
whether it is improving. In the receipt workbook (a sheet) and as Dagster asset metadata.

Plain SQL over `uploads` and `findings` (both backends).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from inservice.receipts import rules_text
from inservice.warehouse.backend import Connection

HISTORY_MONTHS = 24

_UPLOADS_SQL = """
SELECT data_month, count(*),
       count(*) FILTER (WHERE status = 'loaded'),
       count(*) FILTER (WHERE status = 'refused'),
       count(*) FILTER (WHERE status = 'duplicate'),
       count(*) FILTER (WHERE status = 'loaded' AND coalesce(on_time, false)),
       count(*) FILTER (WHERE status = 'loaded' AND NOT coalesce(on_time, false)),
       coalesce(sum(courses_rejected + attendance_rejected) FILTER (WHERE status = 'loaded'), 0)
FROM main.uploads WHERE unit_code = ? AND data_month BETWEEN ? AND ? AND replay_of IS NULL  -- a replay is no new file
GROUP BY data_month"""

_RULES_SQL = """
SELECT u.data_month, f.rule, count(*)
FROM main.findings f JOIN main.uploads u ON u.upload_id = f.upload_id
WHERE u.unit_code = ? AND u.data_month BETWEEN ? AND ? AND f.severity = 'error'
GROUP BY u.data_month, f.rule"""


@dataclass
class Month:
    month: str  # YYYY-MM
    uploads: int = 0  # files or feed runs processed
    loaded: int = 0
    refused: int = 0  # refused whole (F-rules)
    duplicate: int = 0
    on_time: int = 0  # loaded by the 5th of the next month
    late: int = 0
    rows_rejected: int = 0  # course + attendance rows refused in loaded uploads
    rules: dict[str, int] = field(default_factory=dict)  # errors by rule (F, C, A)

    @property
    def arrival(self) -> str:
        """準時／逾期／僅退件／未傳 (on time, late, refused only, missing)."""
        if self.on_time:
            return "準時 on time"
        if self.late:
            return "逾期 late"
        if self.refused:
            return "僅退件 refused only"
        return "未傳 missing" if not self.duplicate else "僅重複 duplicate only"

    def as_dict(self) -> dict:
        return {**asdict(self), "arrival": self.arrival}


def months_back(until: str, n: int = HISTORY_MONTHS) -> list[str]:
    """The `n` months ending with `until` (YYYY-MM), oldest first."""
    y, m = (int(x) for x in until.split("-"))
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return out[::-1]


def partner_history(con: Connection, unit: str, until: str, n: int = HISTORY_MONTHS) -> list[Month]:
    """The unit's last `n` data months up to `until`, every month listed (a month without an upload too)."""
    months = months_back(until, n)
    by_month = {m: Month(m) for m in months}
    for row in con.execute(_UPLOADS_SQL, [unit, months[0], months[-1]]).fetchall():
        uploads, loaded, refused, duplicate, on_time, late, rejected = (int(v or 0) for v in row[1:8])
        by_month[row[0]] = Month(row[0], uploads, loaded, refused, duplicate, on_time, late, rejected)
    for month, rule, count in con.execute(_RULES_SQL, [unit, months[0], months[-1]]).fetchall():
        by_month[month].rules[rule] = int(count)
    for m in by_month.values():
        m.rules = dict(sorted(m.rules.items()))
    return [by_month[m] for m in months]


def with_receipt(history: list[Month], receipt: dict) -> list[Month]:
    """The history as it stands once this receipt's upload is recorded (it is computed before the
    upload's own transaction commits)."""
    status, month = receipt["status"], receipt.get("month")
    if status not in ("loaded", "refused", "duplicate") or not month:
        return history
    for m in history:
        if m.month != month:
            continue
        m.uploads += 1
        setattr(m, status, getattr(m, status) + 1)
        if status == "loaded":
            m.on_time += bool(receipt["on_time"])
            m.late += not receipt["on_time"]
            m.rows_rejected += receipt["courses"]["rejected"] + receipt["attendance"]["rejected"]
        for f in receipt["findings"]:
            if f.get("severity") == "error":
                m.rules[f["rule"]] = m.rules.get(f["rule"], 0) + 1
        m.rules = dict(sorted(m.rules.items()))
    return history


def history_markdown(unit: str, history: list[Month]) -> str:
    """A Markdown table for Dagster's asset metadata (newest month first)."""
    lines = [f"**{unit}**", "", "| 月份 | 傳報 | 載入 | 退件(整批) | 退件列 | 到件 | 規則 |",
             "|---|---|---|---|---|---|---|"]
    for m in reversed(history):
        lines.append(f"| {m.month} | {m.uploads} | {m.loaded} | {m.refused} | {m.rows_rejected} | {m.arrival} | "
                     f"{rules_text(m.rules)} |")
    return "\n".join(lines)
