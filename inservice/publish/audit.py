"""The audit worklist (查核, spec §7): which units the staff check this month, and what each sent.

For audit month M (a data month; the worklist is made after its files were due, like the statistics):
- a production unit joined by the end of M is **due** when it is in its first 12 months (months since
  joining, by calendar month, 0–11: checked every month, the data month M), or when M is January,
  April, July or October (the three data months ending with M); in January every unit joined before
  that January is also checked for the whole previous year;
- per due unit and data month of its scope (never before it joined): files or feed days received,
  on time or late, whether the month is missing, uploads refused whole, rows accepted and refused by
  rule, the unit's not-closed light for that month, and the titles flagged W01/W02.

The lights are read from the monthly statistics published for that month (the latest revision of
`stat_monthly_not_closed`, per organizer within its unit): one definition of the light, wherever it is
computed. Per unit and month the worklist names its red and yellow organizers (with their not-closed
courses) and shows the unit's worst light; a unit with no organizer listed that month is green. A month
whose statistics were not published shows 「未發布」.

Read-only: the SQL is portable and runs on the warehouse itself (both backends); the workbook goes to
publish/audit/YYYY-MM/ and each run is kept under its time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from inservice.config import Settings
from inservice.publish.common import (
    LIGHT_GREEN,
    LIGHT_RED,
    LIGHT_YELLOW,
    SENT_COUNTS,
    Col,
    Month,
    Report,
    as_of_now,
)
from inservice.registers.units import VERSIONS_ON
from inservice.schemas.plans import owes_monthly
from inservice.warehouse.backend import Connection, month_text
from inservice.warehouse.store import Warehouse

QUARTER_MONTHS = (1, 4, 7, 10)
FIRST_YEAR = 12  # months after joining checked every month


@dataclass(frozen=True)
class Due:
    unit_code: str
    name: str
    channel: str
    joined: date
    cadence: str  # 每月（加入未滿 12 個月） | 每季
    months: tuple[str, ...]  # data months checked, YYYY-MM, ascending

    def as_dict(self) -> dict:
        return {"unit_code": self.unit_code, "name": self.name, "channel": self.channel,
                "joined": self.joined.isoformat(), "cadence": self.cadence, "months": list(self.months)}


@dataclass
class Worklist:
    month: str
    as_of: datetime
    due: list[Due]
    rows: list[dict]  # per unit and data month
    titles: list[dict]  # W01/W02 titles per unit and data month
    files: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"month": self.month, "as_of": self.as_of.isoformat(), "due": [d.as_dict() for d in self.due],
                "rows": self.rows, "titles": self.titles, "files": self.files}


def months_since(m: Month, joined: date) -> int:
    return m.year * 12 + m.month - (joined.year * 12 + joined.month)


def scope(m: Month, joined: date) -> tuple[str, tuple[str, ...]] | None:
    """(cadence, data months checked) for a unit joined on `joined`, or None when it is not due in M."""
    since = months_since(m, joined)
    if since < 0:
        return None
    if since < FIRST_YEAR:
        cadence, months = "每月（加入未滿 12 個月）", [m]
    elif m.month in QUARTER_MONTHS:
        cadence, months = "每季", [m.shift(-2), m.shift(-1), m]
    else:
        return None
    if m.month == 1 and since >= 1:  # the whole previous year, before the yearbook
        cadence += "＋前一年度全年"
        months += [Month(m.year - 1, i) for i in range(1, 13)]
    first = Month(joined.year, joined.month)
    return cadence, tuple(sorted({x.key for x in months if x >= first}))


def _rows(con: Connection, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


_RANK = {LIGHT_GREEN: 0, LIGHT_YELLOW: 1, LIGHT_RED: 2}


@dataclass(frozen=True)
class UnitLight:
    """A unit's lights in a month: its worst organizer's, its not-closed courses, its red/yellow organizers."""

    light: str = LIGHT_GREEN
    not_closed: int = 0
    organizers: tuple[str, ...] = ()


def _lights(con: Connection, units: list[str], months: list[str]) -> dict[tuple[str, str], UnitLight]:
    """(unit, month) → its lights from the latest publication of each month published (others: absent)."""
    published = con.execute("""SELECT count(*) FROM information_schema.tables
        WHERE table_schema = 'main' AND table_name = 'stat_monthly_not_closed'""").fetchall()[0][0]
    if not units or not months or not published:
        return {}
    marks = ", ".join("?" * len(months))
    latest = {r["month"]: r["as_of"] for r in _rows(con, f"""SELECT month, max(as_of) AS as_of
        FROM stat_publications WHERE month IN ({marks}) GROUP BY month""", months)}
    found = {(u, m): UnitLight() for m in latest for u in units}
    for r in _rows(con, f"""SELECT n.month, n.unit_code, n.organizer, n.light, n.not_closed
            FROM stat_monthly_not_closed n
            JOIN (SELECT month, max(as_of) AS as_of FROM stat_publications WHERE month IN ({marks})
                  GROUP BY month) l
            USING (month, as_of) ORDER BY n.unit_code, n.month, n.not_closed DESC, n.organizer""", months):
        key = (r["unit_code"], r["month"])
        if key not in found:
            continue
        was, n = found[key], int(r["not_closed"])
        light = r["light"] if _RANK.get(r["light"], 0) > _RANK[was.light] else was.light
        named = (*was.organizers, f"{r['organizer'] or '（未填）'} {r['light']} {n}") if r["light"] != LIGHT_GREEN \
            else was.organizers
        found[key] = UnitLight(light, was.not_closed + n, named)
    return found


def build(con: Connection, m: Month, as_of: datetime) -> Worklist:
    last_day = m.end - timedelta(days=1)
    units = _rows(con, f"""SELECT u.unit_code, coalesce(v.name, u.name) AS name,
            coalesce(v.channel, u.channel) AS channel, u.joined
        FROM units u LEFT JOIN ({VERSIONS_ON}) v ON v.unit_code = u.unit_code
        WHERE u.state = 'production' AND u.joined < ? AND {owes_monthly('u.unit_code')}
        ORDER BY u.unit_code""", [last_day, last_day, m.end])
    due = []
    for u in units:
        s = scope(m, u["joined"])
        if s is not None:
            due.append(Due(u["unit_code"], u["name"], u["channel"], u["joined"], *s))
    codes = [d.unit_code for d in due]
    months = sorted({x for d in due for x in d.months})
    if not due:
        return Worklist(m.key, as_of, [], [], [])
    marks = ", ".join("?" * len(codes))
    months_marks = ", ".join("?" * len(months))
    # uploads of the data month (a feed's: its received month), production area, duplicates aside
    received_month = month_text(con, "timezone('Asia/Taipei', p.received_at)")
    month_of = f"coalesce(p.data_month, {received_month})"
    uploads = f"""SELECT p.*, {month_of} AS dm FROM uploads p WHERE p.area = 'production' AND p.status <> 'duplicate'
        AND p.replay_of IS NULL AND p.unit_code IN ({marks})"""
    sent = {(r["unit_code"], r["dm"]): r for r in _rows(con, f"""SELECT unit_code, dm, {SENT_COUNTS}
        FROM ({uploads}) x WHERE dm IN ({months_marks}) GROUP BY unit_code, dm""", [*codes, *months])}
    refused: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for r in _rows(con, f"""SELECT x.unit_code, x.dm, f.rule, count(*) AS n FROM findings f
            JOIN ({uploads}) x ON x.upload_id = f.upload_id
            WHERE f.severity = 'error' AND x.dm IN ({months_marks}) GROUP BY x.unit_code, x.dm, f.rule""",
                   [*codes, *months]):
        refused[(r["unit_code"], r["dm"])][r["rule"]] = int(r["n"])
    titles = _rows(con, f"""SELECT x.unit_code, x.dm AS month, f.course_code, c.title,
            max(CASE WHEN f.rule = 'W02' THEN 'W02' ELSE 'W01' END) AS rule
        FROM findings f JOIN ({uploads}) x ON x.upload_id = f.upload_id
        LEFT JOIN courses c ON c.unit_code = x.unit_code AND c.course_code = f.course_code
        WHERE f.record = 'course' AND f.rule IN ('W01', 'W02') AND x.status = 'loaded' AND x.dm IN ({months_marks})
        GROUP BY x.unit_code, x.dm, f.course_code, c.title ORDER BY 1, 2, 3""", [*codes, *months])
    lights = _lights(con, codes, months)
    flagged = defaultdict(list)
    for t in titles:
        flagged[(t["unit_code"], t["month"])].append(f"{t['rule']} {t['course_code']} {t['title'] or ''}".strip())
    rows = []
    for d in due:
        for dm in d.months:
            got = sent.get((d.unit_code, dm), {})
            files, days = int(got.get("files", 0)), int(got.get("feed_days", 0))
            on_time, late = int(got.get("on_time_files", 0)), int(got.get("late_files", 0))
            if d.channel == "db":
                expected = (Month.parse(dm).end - Month.parse(dm).start).days
                status = "未傳" if days == 0 else "完整" if days >= expected else f"缺漏 {expected - days} 日"
            else:
                status = "未傳" if files == 0 else "準時" if on_time > 0 else "逾期"
            light = lights.get((d.unit_code, dm))
            rules = refused.get((d.unit_code, dm), {})
            rows.append({
                "unit_code": d.unit_code, "name": d.name, "month": dm, "channel": d.channel, "files": files,
                "feed_days": days, "on_time_files": on_time, "late_files": late,
                "refused_uploads": int(got.get("refused_uploads", 0)), "status": status,
                "missing": status == "未傳",
                "courses_accepted": int(got.get("courses_accepted", 0)),
                "courses_rejected": int(got.get("courses_rejected", 0)),
                "attendance_accepted": int(got.get("attendance_accepted", 0)),
                "attendance_rejected": int(got.get("attendance_rejected", 0)),
                "refused_rows": "、".join(f"{k}×{v}" for k, v in sorted(rules.items())),
                "light": light.light if light else "未發布", "not_closed": light.not_closed if light else None,
                "organizers": "；".join(light.organizers) if light else "",
                "meeting_titles": "；".join(flagged.get((d.unit_code, dm), [])),
            })
    return Worklist(m.key, as_of, due, rows, titles)


def _reports(w: Worklist) -> list[Report]:
    by_unit: dict[str, list[dict]] = defaultdict(list)
    for r in w.rows:
        by_unit[r["unit_code"]].append(r)
    summary = []
    for d in w.due:
        rs = by_unit[d.unit_code]
        summary.append((d.unit_code, d.name, "資料庫互傳" if d.channel == "db" else "檔案", d.joined, d.cadence,
                        f"{d.months[0]}～{d.months[-1]}（{len(d.months)} 個月）",
                        "、".join(r["month"] for r in rs if r["missing"]),
                        "、".join(r["month"] for r in rs if r["status"] == "逾期"),
                        sum(r["courses_rejected"] + r["attendance_rejected"] for r in rs),
                        "、".join(f"{r['month']} {r['light']}" for r in rs if r["light"] in ("紅燈", "黃燈")),
                        sum(1 for r in rs if r["meeting_titles"])))
    detail = [(r["unit_code"], r["name"], r["month"], r["status"], r["files"], r["feed_days"], r["on_time_files"],
               r["late_files"], r["refused_uploads"], r["courses_accepted"], r["courses_rejected"],
               r["attendance_accepted"], r["attendance_rejected"], r["refused_rows"], r["light"],
               r["not_closed"], r["organizers"], r["meeting_titles"]) for r in w.rows]
    titles = [(t["unit_code"], t["month"], t["rule"], t["course_code"], t["title"] or "") for t in w.titles]
    m = Month.parse(w.month)
    return [
        Report("audit_due", "查核名單", f"{m.roc}應查核單位", [
            Col("單位代碼", "text"), Col("單位名稱", "text"), Col("管道", "text"), Col("加入日期", "date"),
            Col("查核頻率", "text"), Col("查核月份", "text"), Col("未傳月份", "text"), Col("逾期月份", "text"),
            Col("退件筆數"), Col("紅黃燈月份", "text"), Col("會議名稱月數")], summary,
            notes=["加入後 12 個月內每月查核（當月資料）；其後 1、4、7、10 月查核（含當月之前三個月）；"
                   "1 月並查核前一年度全年。"]),
        Report("audit_months", "逐月明細", f"{m.roc}查核：各單位逐月傳報狀況", [
            Col("單位代碼", "text"), Col("單位名稱", "text"), Col("資料月份", "text"), Col("狀態", "text"),
            Col("檔案數", "int", "收件"), Col("互傳日數", "int", "收件"), Col("準時", "int", "收件"),
            Col("逾期", "int", "收件"), Col("整批退件", "int", "收件"), Col("通過", "int", "課程筆數"),
            Col("退件", "int", "課程筆數"), Col("通過", "int", "名單筆數"), Col("退件", "int", "名單筆數"),
            Col("退件規則（筆數）", "text"), Col("燈號", "light"), Col("逾期未結案", "int"),
            Col("紅黃燈開課單位（逾期未結案數）", "text"), Col("會議名稱（W01／W02）", "text")], detail,
            notes=["燈號取自該月份最新一版統計月報（表4，依開課單位）：單位欄為其開課單位中最差者，並列出紅燈、黃燈之"
                   "開課單位；尚未發布者為「未發布」。"]),
        Report("audit_titles", "會議名稱", f"{m.roc}查核：研習名稱為會議者", [
            Col("單位代碼", "text"), Col("資料月份", "text"), Col("規則", "text"), Col("研習代碼", "text"),
            Col("研習名稱", "text")], titles),
    ]


def audit_dir(settings: Settings, m: Month) -> Path:
    return settings.home / "publish" / "audit" / m.key


def audit_worklist(settings: Settings, month: str, as_of: datetime | str | None = None) -> Worklist:
    """Build month M's worklist and write it as a workbook (kept per run under its time)."""
    from inservice.publish.workbook import write_workbook

    m = Month.parse(month)
    at = as_of_now(as_of)
    with Warehouse(settings, read_only=True) as wh:
        w = build(wh.con, m, at)
    out = audit_dir(settings, m)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"audit-{m.key}-{at:%Y%m%dT%H%M%S}.xlsx"
    write_workbook(path, _reports(w), f"查核工作清單 {m.roc}", f"資料截至 {at:%Y-%m-%d %H:%M:%S}（臺北時間）",
                   [("查核月份", m.key), ("範圍", "正式資料；測試及封存單位不列入。"),
                    ("個資", "不含身分證字號與姓名。")])
    w.files = [str(path)]
    return w
