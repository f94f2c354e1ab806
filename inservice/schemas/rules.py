# ruff: noqa: E501  (one rule per line reads best)
"""Rule identifiers of spec §5 with their bilingual descriptions. Receipts quote these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # "error" | "warning"
    zh: str
    en: str


_RULES = [
    # whole-upload refusals
    Rule("F01", "error", "檔案無法讀取或已損毀", "unreadable or corrupt file"),
    Rule("F02", "error", "不支援的檔案格式", "unknown file format"),
    Rule("F03", "error", "檔名不符規定", "bad file name"),
    Rule("F04", "error", "傳報單位不符", "the data is not the sending unit's"),
    Rule("F05", "error", "未登錄的傳報單位", "unknown unit"),
    Rule("F06", "error", "單位已封存", "the unit is sealed"),
    Rule("F07", "error", "檔案結構不符（缺少工作表、資料表或欄位）", "structure: sheet, table or column missing"),
    Rule("F08", "error", "相同內容已傳報（重複傳報）", "the same content was already loaded (duplicate)"),
    Rule("F09", "error", "超過大小限制或含 DTD／實體宣告", "over the size limits, or XML with a DTD or entities"),
    # course rows
    Rule("C01", "error", "必填欄位未填", "required field missing"),
    Rule("C02", "error", "欄位值無法解析或過長", "unparseable value or text too long"),
    Rule("C03", "error", "代碼不在代碼表中", "code not in its list"),
    Rule("C04", "error", "研習迄日早於研習起日", "end date before start date"),
    Rule("C05", "error", "研習時數超出範圍", "hours out of range"),
    Rule("C06", "error", "研習代碼於本次傳報重複（保留第一筆）", "course code repeated in the upload (first kept)"),
    Rule("C07", "error", "已封存年度：研習起日在封存基準日（含）以前", "archived: start date on or before the archive cutoff"),
    Rule("C08", "error", "課程已結案鎖定，內容不同；須經核定更正", "locked: course already closed with different content; needs an approved correction"),
    Rule("C09", "error", "結案日期早於研習迄日或晚於收件日", "closed date before end date or after the day received"),
    Rule("C10", "error", "檔案傳報之課程未填結案日期", "a file upload's course without closed date"),
    Rule("C11", "error", "停止登錄新課程：開課單位紅燈（逾期未結案 5 門以上）", "registration closed: the organizer's light is red (5 or more courses not closed)"),
    # attendance rows
    Rule("A01", "error", "必填欄位未填", "required field missing"),
    Rule("A02", "error", "欄位值無法解析", "unparseable value"),
    Rule("A03", "error", "身分證字號或居留證號無效", "invalid national ID or resident certificate number"),
    Rule("A04", "error", "查無此研習課程", "unknown course"),
    Rule("A05", "error", "所屬課程已被退件", "its course row was rejected"),
    Rule("A06", "error", "核發時數超出範圍", "hours granted out of range"),
    Rule("A07", "error", "同一教師同一課程重複（保留第一筆）", "the same teacher repeated on the course in the upload (first kept)"),
    Rule("A08", "error", "課程已結案鎖定，名單新增或不同", "the course is locked and the row is new or differs"),
    # warnings
    Rule("W01", "warning", "研習名稱含會議名稱（校務會議、學年會議、行政會議）", "title contains a meeting name"),
    Rule("W02", "warning", "研習名稱僅為會議名稱", "title is only a meeting name"),
    Rule("W03", "warning", "結案日期晚於研習迄日 7 日以上", "closed more than 7 days after end date"),
    Rule("W04", "warning", "服務學校代碼不在教育部學校名錄", "school code not in the MOE school list"),
    Rule("W05", "warning", "該教師亦參加同一課程之其他梯次（日期重疊）", "the teacher also attends another, overlapping session of the same course"),
    Rule("W06", "warning", "屬性標籤於研習起日不在標籤登錄中，已刪除該標籤", "attribute tag not in the register on the start date: the tag is dropped"),
    # planning survey rows (planning-survey.md §4): school plans and teacher plans
    Rule("P01", "error", "必填欄位未填", "required field missing"),
    Rule("P02", "error", "欄位值無法解析", "unparseable value"),
    Rule("P03", "error", "代碼不在代碼表中", "code not in its list"),
    Rule("P04", "error", "學年度與檔名不符", "school_year differs from the file name's"),
    Rule("P05", "error", "規劃時數超出範圍（須大於 0 且不超過 200）", "planned_hours out of range (> 0 and ≤ 200)"),
    Rule("P06", "error", "身分證字號或居留證號無效", "invalid national ID or resident certificate number"),
    Rule("P07", "error", "同一學校（或教師）同一研習範疇於本檔重複（保留第一筆）", "the same (school, domain) or (teacher, domain) repeated in the file (the first is kept)"),
    Rule("P08", "error", "同一學校各列之學校資料（教育階段、學生數、教師數）不一致（該校各列皆退件）", "a school's attributes disagree between its rows (all its rows refused)"),
    Rule("PW1", "warning", "學校代碼不在教育部學校名錄", "school_code not in the MOE school list"),
    Rule("PW2", "warning", "逾填報期限（學校 8/31、教師 9/29 後）填報", "filed after the window (school after 8/31, teacher after 9/29)"),
    Rule("PW3", "warning", "教師之服務學校該學年度未填學校規劃", "the teacher's school filed no school plan that year"),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}

# Lights (業務帳號燈號, §7) per organizer within its sending unit: its courses of the calendar year
# (by start date) that ended more than LIGHT_GRACE_DAYS days ago and are still not closed, degree
# programmes excluded. 0 green, 1–4 yellow, LIGHT_RED_AT or more red; from C11_FROM (a setting,
# INSERVICE_C11_FROM) a red organizer cannot register new courses (C11).
LIGHT_GRACE_DAYS = 7
LIGHT_RED_AT = 5
C11_FROM = date(2017, 11, 1)
LIGHTS = {"green": "綠燈", "yellow": "黃燈", "red": "紅燈"}
