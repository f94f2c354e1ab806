# ruff: noqa: E501  (one text per line reads best)
"""What each rule expected, in words a school clerk can act on (spec §2.3, §5), beside RULES.

A finding's message is the rule's text, the offending value, then what was expected: the accepted
forms of a date or number, the range and its reason, the allowed codes, the row kept. Receipts,
the template's hints and the e-mails all take their words from here; nothing else words a rule.
No 「」 in these texts: that bracket quotes a partner's value, which the analysts' copy hides.
"""

from __future__ import annotations

import re

from inservice.schemas import codelists
from inservice.schemas.fields import Field, Kind
from inservice.schemas.filenames import FILE_EXTENSIONS

Text = tuple[str, str]  # (zh, en)

SHORT_LIST = 8  # a code list this long or shorter is quoted whole; a longer one by reference

DATE_FORMS: Text = (
    "日期請填西元 2017-05-31，或民國 106/05/31、106-05-31、106.05.31、1060531（民國 100 年以前可 6 碼，如 990105），或 Excel／Access 日期格式",
    "a date is ISO 2017-05-31, or ROC 106/05/31, 106-05-31, 106.05.31, 1060531 (6 digits before ROC year 100, e.g. 990105), or a native Excel/Access date",
)
DATETIME_FORMS: Text = (
    "日期時間請填日期後加 HH:MM[:SS]（臺北時間）；" + DATE_FORMS[0],
    "a date-time is a date followed by HH:MM[:SS] (Asia/Taipei); " + DATE_FORMS[1],
)
NUMBER_FORMS: Text = (
    "數字以半形 . 為小數點，小數最多一位（如 3 或 3.5；3.25 不可），不可有千分位逗號",
    "a number uses . as decimal point, one decimal at most (3 or 3.5, not 3.25), no thousands separators",
)
YESNO_FORMS: Text = ("是否欄請填 Y／N、是／否、1／0 或 true／false", "yes/no is Y/N, 是/否, 1/0 or true/false")
ID_FORMS: Text = (
    "10 碼：英文字母加 9 碼數字（第 2 碼為 1、2、8 或 9），或英文字母加 A–D 再加 8 碼數字（舊式居留證），且檢查碼須正確",
    "10 characters: a letter and nine digits (second 1, 2, 8 or 9), or a letter, a letter A–D and eight digits (old resident certificate), with a valid check digit",
)
# Text fields with a shape: what the shape is, in words (the regex lives in fields.py).
TEXT_SHAPES: dict[str, Text] = {
    "unit_code": ("大寫英文字母開頭，共 4–10 碼英數字（即檔名開頭的單位代碼）", "an upper-case letter then 3–9 letters or digits (the unit code the file name starts with)"),
    "course_code": ("1–20 碼英文字母、數字、_ 或 -", "1–20 letters, digits, _ or -"),
    "school_code": ("6 碼數字或大寫英文字母（教育部學校代碼）", "6 digits or upper-case letters (the MOE school code)"),
}
HOURS_RANGE: Text = ("研習時數須大於 0 且不超過 999", "hours must be more than 0 and at most 999")


def codes_text(listname: str) -> Text:
    """The allowed codes with their labels (a short list whole; a long one by reference to the template)."""
    codes = codelists.codelist(listname)
    if len(codes) <= SHORT_LIST:
        listed = "、".join(f"{c.code} {c.label}" for c in codes)
        return f"可用代碼：{listed}（代碼或名稱皆可）", f"allowed codes: {'; '.join(f'{c.code} {c.label}' for c in codes)} (code or label)"
    return (f"可用代碼共 {len(codes)} 個，見傳報範本的代碼表工作表（代碼或名稱皆可，如 {codes[0].code} 或 {codes[0].label}）",
            f"{len(codes)} codes allowed: see the template's code-list sheet (code or label, e.g. {codes[0].code} or {codes[0].label})")


def value_forms(field: Field) -> Text:
    """How a value of this field is written (C02/A02, C03/A03, the template's input hints)."""
    if field.kind is Kind.DATE:
        return DATE_FORMS
    if field.kind is Kind.DATETIME:
        return DATETIME_FORMS
    if field.kind is Kind.NUMBER:
        return NUMBER_FORMS
    if field.kind is Kind.YESNO:
        return YESNO_FORMS
    if field.kind is Kind.NATIONAL_ID:
        return ID_FORMS
    if field.kind is Kind.CODE:
        return codes_text(field.list_name)
    if field.kind is Kind.CODES:
        zh, en = codes_text(field.list_name)
        return f"一或多個代碼，以 ; 分隔；{zh}", f"one or more codes separated by ';'; {en}"
    if field.code in TEXT_SHAPES:
        return TEXT_SHAPES[field.code]
    if field.max_len:
        return f"文字，最多 {field.max_len} 字，不可含身分證字號或控制字元", f"text of at most {field.max_len} characters, without a national ID or control characters"
    return "文字", "text"


# Per rule: what was expected when it says nothing more specific (per row, see the functions below).
# (F01 is worded per format by its reader, with what to do.)
_EXPECTED: dict[str, Text] = {
    "F02": (f"可接受的副檔名：{' '.join(FILE_EXTENSIONS)}（大小寫皆可）", f"accepted extensions: {' '.join(FILE_EXTENSIONS)} (any case)"),
    "F03": ("檔名須為 <單位代碼>_<YYYYMM>[_<n>].<副檔名>，如 T001_201705.xlsx、T001_201705_2.xml；YYYYMM 為西元資料月份，不得晚於收件月份",
            "the name must be <unit_code>_<YYYYMM>[_<n>].<ext>, e.g. T001_201705.xlsx or T001_201705_2.xml; YYYYMM is the data month, not after the month sent"),
    "F04": ("每列的單位代碼須為傳報單位自己的代碼（檔名開頭者），檔案須放在該單位的收件匣", "every row's unit_code must be the sending unit's own (the one the file name starts with), and the file must be in that unit's inbox"),
    "F05": ("此單位代碼尚未登錄：請先向網路中心申請", "this unit code is not registered: apply to the network first"),
    "F06": ("單位已封存：請向網路中心重新申請後再傳", "the unit is sealed: re-apply to the network before sending"),
    "F07": ("須有工作表（或資料表）課程與研習名單（或 courses、attendance），第 1 列為欄位名稱（中文名稱或代碼），見傳報範本", "sheets (or tables) 課程 and 研習名單 (or courses, attendance) are required, with field labels or codes in row 1: see the template"),
    "F08": ("不需再傳：此內容已載入", "nothing to do: this content is already loaded"),
    "F09": ("請將資料分成數個檔案（檔名加 _2、_3）；XML 不可含 DOCTYPE 或實體宣告", "split the data into several files (names ending _2, _3); an XML file may not declare a DOCTYPE or entities"),
    "C01": ("此欄必填", "this field is required"),
    "A01": ("此欄必填", "this field is required"),
    "C04": ("研習迄日須同於或晚於研習起日", "the end date must be on or after the start date"),
    "C05": ("研習時數須大於 0 且不超過 999；班別性質 1（非學分班）另不得超過 12 小時 × 研習天數（起迄日首尾皆計）", "hours must be more than 0 and at most 999; for class type 1 also at most 12 × the days from start to end, inclusive"),
    "C06": ("同一研習代碼在一個檔案只能出現一次：保留第一列，請刪除或更正其餘各列", "a course code appears once per upload: the first row is kept; delete or fix the others"),
    "C07": ("此課程不再收件；如確需補傳，請函報申請封存年度例外", "such courses are no longer accepted; to send one, apply for an archive exception by letter"),
    "C08": ("已結案課程之內容不能以重傳變更，請以修改已結案課程內容申請表報核定機關更正", "a closed course cannot be changed by resending: send a correction form (修改已結案課程內容申請表) through the approving authority"),
    "C09": ("結案日期須同於或晚於研習迄日，且不晚於收件日", "the closed date must be on or after the end date and not after the day received"),
    "C10": ("檔案傳報只收已結案（已核發時數）的課程：請填結案日期；尚未結案者請於結案後隨該月檔案傳送", "file uploads carry closed courses only: fill in the closed date; send an open course with the month it is closed"),
    "C11": ("開課單位燈號為紅燈（逾期未結案課程 5 門以上）：請先將逾期課程結案，再登錄新課程", "the organizer's light is red (5 or more overdue unclosed courses): close them before registering new courses"),
    "A03": ID_FORMS,
    "A04": ("研習代碼須為同一檔案課程工作表中的課程，或本單位先前已傳報的課程", "the course code must be a course in this upload's course sheet, or one this unit sent before"),
    "A05": ("請先修正課程工作表中該課程的錯誤，再連同名單一起重傳", "fix the course's row in the course sheet and resend it with its attendance"),
    "A06": ("完成＝是：核發時數須大於 0 且不超過課程研習時數；完成＝否：須為 0", "completed = yes: more than 0 and at most the course's hours; completed = no: 0"),
    "A07": ("同一教師在同一課程只能出現一次：保留第一列", "a teacher appears once per course: the first row is kept"),
    "A08": ("已結案課程之名單不能以重傳變更，請以更正申請表報核定機關更正", "a closed course's attendance cannot be changed by resending: send a correction form"),
    "W01": ("研習名稱請寫實際研習主題，不用會議名稱；資料已載入", "give the topic actually taught, not a meeting name; the row is loaded"),
    "W02": ("研習名稱請寫實際研習主題，不用會議名稱；資料已載入", "give the topic actually taught, not a meeting name; the row is loaded"),
    "W03": ("請於研習結束後 7 日內結案；資料已載入", "close a course within 7 days of its end; the row is loaded"),
    "W04": ("請依教育部學校名錄填寫學校代碼；資料已載入", "use the MOE school list's code; the row is loaded"),
    "W05": ("請確認該教師未重複登錄；資料已載入", "check the teacher is not registered twice; the row is loaded"),
    "W06": ("屬性標籤依研習起日當天的標籤登錄表判斷，該標籤已略去；課程與名單已載入", "tags are judged against the tag register on the course's start date; the tag is dropped, the course and attendance are loaded"),
}


def expected_of(rule: str) -> Text:
    """What a rule with a fixed wording expected (instructions, per-row hints)."""
    return _EXPECTED[rule]


def expected(rule: str, field: Field | None) -> Text | None:
    """What the rule expected, for a finding that carries no per-row wording of its own."""
    if rule in ("C02", "A02", "C03") and field is not None:  # C02/A02/C03: the field's forms
        return value_forms(field)
    return _EXPECTED.get(rule)


# --- per-row wording (the engine fills in the row's own figures) ------------------------------
def hours_range(days: int | None, class_type: str | None) -> Text:
    """C05: the range, and for class type 1 the daily cap with this course's days."""
    zh, en = HOURS_RANGE
    if class_type == "1" and days and days > 0:
        return (f"{zh}；班別性質 1（非學分班）每日至多 12 小時，本課程 {days} 天，上限 {12 * days} 小時",
                f"{en}; class type 1 (非學分班) allows 12 hours a day: {days} day(s), at most {12 * days} hours")
    return zh, en


def hours_granted_range(course_hours: float | None) -> Text:
    """A06: completed = yes → (0, course hours]; completed = no → 0."""
    h = "課程研習時數" if course_hours is None else f"課程研習時數 {course_hours:g}"
    he = "the course's hours" if course_hours is None else f"the course's hours, {course_hours:g}"
    return (f"完成＝是：核發時數須大於 0 且不超過{h}；完成＝否：須為 0",
            f"completed = yes: more than 0 and at most {he}; completed = no: 0")


def kept_row(rule: str, row: int) -> Text:
    """C06/A07: which row was kept."""
    if rule == "C06":
        return (f"保留第 {row} 列；同一研習代碼只能出現一次，請刪除或更正重複列",
                f"row {row} was kept; a course code may appear once: delete or fix the repeated row")
    return (f"保留第 {row} 列；同一教師在同一課程只能出現一次", f"row {row} was kept; a teacher appears once per course")


def closed_between(end: str | None, received: str) -> Text:
    """C09: the window the closed date must fall in."""
    if end is None:
        return f"結案日期須同於或晚於研習迄日，且不晚於收件日 {received}", f"the closed date must be on or after the end date and not after the day received, {received}"
    return (f"結案日期須介於研習迄日 {end} 與收件日 {received} 之間", f"the closed date must be between the end date {end} and the day received, {received}")


def bad_items(items: list[str], listname: str) -> Text:
    """C03 on a list field: the offending items, and what is allowed."""
    zh, en = codes_text(listname)
    return (f"不在代碼表的項目：{'、'.join(items)}；{zh}", f"item(s) not in the list: {', '.join(items)}; {en}")


# --- the receipt's first sheet: what happened, what to do next ---------------------------------
def resend_name(receipt: dict) -> str | None:
    """The name to resend under, when something is to be resent: a refused file again under its own
    name; the rejected rows of a loaded file under the month's next `_n` (the loaded file's name is
    taken). None when nothing is to be resent."""
    m = re.match(r"^(?P<stem>[A-Z][A-Z0-9]{3,9}_[0-9]{6})(?:_(?P<n>[0-9]+))?\.(?P<ext>\w+)$", receipt["file"])
    if "plans" in receipt:  # a plan export replaces the year's plans as a whole: the whole file again
        fixable = receipt["status"] == "refused" or (receipt["status"] == "loaded" and receipt["plans"]["rejected"])
        return receipt["file"] if fixable else None
    if not m:
        return None
    if receipt["status"] == "refused":
        return receipt["file"]
    rejected = receipt["courses"]["rejected"] or receipt["attendance"]["rejected"]
    if receipt["status"] != "loaded" or not rejected:
        return None
    return f"{m['stem']}_{int(m['n'] or 1) + 1}.{m['ext']}"


def next_steps(receipt: dict) -> list[Text]:
    """Plain words for the receipt's first sheet and the e-mail body."""
    status, refusal = receipt["status"], receipt.get("refusal")
    # counts given (an e-mail composed from the warehouse's rows), else counted from the findings
    errors = receipt.get("error_count", sum(1 for f in receipt["findings"] if f.get("severity") == "error"))
    warnings = receipt.get("warning_count", sum(1 for f in receipt["findings"] if f.get("severity") == "warning"))
    name = resend_name(receipt)
    out: list[Text] = []
    if status == "duplicate":
        out.append(("此檔內容先前已載入，本次未再載入；不需任何處理。", "This content was loaded before and was not loaded again; nothing to do."))
    elif status == "refused":
        out.append((f"整批退件（{refusal}）：本檔沒有任何資料載入。", f"Refused whole ({refusal}): nothing from this file was loaded."))
        hint = expected(refusal, None) if refusal else None
        if hint:
            out.append((f"怎麼改：{hint[0]}。", f"What to do: {hint[1]}."))
        if name:
            out.append((f"修正後請以同一檔名 {name} 重新傳送整份檔案。", f"Fix it and send the whole file again under the same name, {name}."))
    elif status == "checked":
        out.append(("自我檢核：本檔未傳送、未載入；下列結果即正式傳送時會得到的結果。",
                    "Self-check: the file was not sent nor loaded; the findings below are what sending it would give."))
        if errors:
            out.append((f"有 {errors} 項退件，請修正後再檢核或傳送。", f"{errors} error(s): fix them, then check again or send."))
    elif "plans" in receipt:  # a planning-survey export (plans/intake.py)
        p = receipt["plans"]
        out.append((f"已載入：規劃 {p['accepted']} 筆通過。", f"Loaded: {p['accepted']} plan row(s) accepted."))
        if p["rejected"]:
            out.append((f"退件：規劃 {p['rejected']} 筆，原因見《檢核結果》工作表（每列附正確寫法）。",
                        f"Rejected: {p['rejected']} plan row(s); see the Findings sheet (each says what is expected)."))
            out.append((f"同一學年度之新匯出會整批取代本次載入之規劃：請修正退件列後，以同一檔名 {name} 重新匯出並傳送整份檔案"
                        "（已通過的列也要保留在檔案中）。",
                        f"A new export of the school year replaces this one as a whole: fix the rejected rows and send the "
                        f"whole export again under the same name, {name} (keep the accepted rows in it)."))
        else:
            out.append(("沒有退件，不需任何處理。", "Nothing was rejected; nothing to do."))
    else:
        c, a = receipt["courses"], receipt["attendance"]
        out.append((f"已載入：課程 {c['accepted']} 筆、研習名單 {a['accepted']} 筆通過。",
                    f"Loaded: {c['accepted']} course(s) and {a['accepted']} attendance row(s) accepted."))
        if c["rejected"] or a["rejected"]:
            out.append((f"退件：課程 {c['rejected']} 筆、研習名單 {a['rejected']} 筆，原因見《檢核結果》工作表（每列附正確寫法）。",
                        f"Rejected: {c['rejected']} course(s) and {a['rejected']} attendance row(s); see the Findings sheet (each says what is expected)."))
            if receipt.get("channel") == "db":
                out.append(("請在貴單位資料庫修正退件列並更新其異動時間（modified_at），下次互傳即重新讀取。",
                            "Fix the rejected rows in your database and update their modified_at: the next feed run reads them again."))
            elif name:
                out.append((f"只需將退件的課程與其名單修正後，以新檔名 {name} 傳送（已通過的列不必重傳）。",
                            f"Send only the rejected courses and their attendance, fixed, in a new file named {name} (accepted rows need not be sent again)."))
        else:
            out.append(("沒有退件，不需任何處理。", "Nothing was rejected; nothing to do."))
    if warnings and status in ("loaded", "checked"):
        out.append((f"警告 {warnings} 項：資料已載入，請於日後傳報時改善。", f"{warnings} warning(s): the rows are loaded; please improve future files."))
    if receipt.get("area") == "testing":
        out.append(("測試單位：資料只載入測試版資料庫。", "Testing unit: loaded into the test area only."))
    return out


def contact_lines(phone: str | None, email: str | None) -> list[Text]:
    """The network's contact, as the receipt and the e-mails give it."""
    parts_zh = [p for p in (phone and f"電話 {phone}", email and f"電子郵件 {email}") if p]
    parts_en = [p for p in (phone and f"phone {phone}", email and f"e-mail {email}") if p]
    if not parts_zh:
        return []
    return [(f"有疑問請洽全國教師在職進修資訊網：{'，'.join(parts_zh)}", f"Questions: the network, {', '.join(parts_en)}")]
