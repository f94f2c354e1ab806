"""What a correction row or workbook can be told, in Chinese and English: the refusal reasons and the
statuses. One place for the audit trail (apply.py) and the receipt (receipt.py)."""

from __future__ import annotations

REASONS: dict[str, tuple[str, str]] = {
    "missing": ("必填欄位未填", "a required column is empty"),
    "letter_date": ("核定日期無法解析或晚於收件日", "approval date unreadable or after the day received"),
    "unknown_unit": ("單位未登錄", "unknown unit"),
    "sealed_unit": ("單位已封存", "the unit is sealed"),
    "testing_unit": ("測試單位：課程僅在測試版資料庫，不受理更正", "testing unit: its courses are in the test area, "
                     "corrections apply to production only"),
    "unknown_course": ("正式版資料庫查無此課程", "no such course in the production area"),
    "open_course": ("課程尚未結案，請由單位重新傳報", "the course is not closed: the unit re-sends it instead"),
    "unknown_field": ("無此修改欄位", "unknown field"),
    "forbidden_field": ("此欄位不得更正", "this field may not be corrected"),
    "original_mismatch": ("原內容與現有內容不符", "原內容 (original) does not equal the current value"),
    "invalid_value": ("修改後內容不符規定", "the new value breaks the rules"),
    "no_change": ("修改後內容與現有內容相同", "the new value equals the current value"),
    "bad_format": ("名單更正內容格式不符", "attendance correction not in the documented format"),
    "id_mismatch": ("原內容與修改後內容的身分證字號不同", "原內容 and 修改後內容 name different IDs"),
    "unknown_teacher": ("名單查無此教師", "the teacher is not on the course's list"),
    "already_listed": ("該教師已在名單中", "the teacher is already on the course's list"),
    "control_character": ("欄位值含控制字元", "a value holds a control character"),
}
STATUS_ZH = {"applied": "已更正", "refused": "不予更正", "already_applied": "先前已更正（未重複套用）",
             "processed": "已處理", "duplicate": "重複收件（未再處理）", "refused_whole": "整份退件"}
