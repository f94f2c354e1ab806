"""Warehouse tables. Analysts read `courses`, `attendance`, `uploads`, `findings`, `units`.

Teachers appear only as `teacher_key` (keyed pseudonym); no national ID or name is stored.
Keys are not enforced as constraints (a PRIMARY KEY makes DuckDB loads 4–8× slower, see
shared/notes/measured.md): the merge keeps them unique and an asset check proves it.
`testing` units load into the same tables under the schema `testing`.
"""

from __future__ import annotations

from dataclasses import dataclass

from inservice.validations import lights


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str


@dataclass(frozen=True)
class Table:
    name: str
    comment: str
    columns: tuple[Column, ...]
    per_area: bool = False  # one copy per area (production = main, testing = testing)
    view: str | None = None  # a view over the tables (its SELECT); its columns are declared for the comments


C = Column

COURSES = Table("courses", "研習課程（已通過檢核）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("title", "VARCHAR", "研習名稱"),
    C("organizer", "VARCHAR", "開課單位"),
    C("organizer_type", "VARCHAR", "開課單位類別（代碼表 3.5）"),
    C("county_code", "VARCHAR", "縣市代碼（代碼表 3.1，舊代碼已轉換）"),
    C("start_date", "DATE", "研習起日"),
    C("end_date", "DATE", "研習迄日"),
    C("hours", "DECIMAL(5,1)", "研習時數"),
    C("class_type", "VARCHAR", "班別性質（1 非學分班、2 學分班-學士、3 學分班-碩士）"),
    C("category", "VARCHAR", "課程類別（代碼表 3.4）"),
    C("delivery", "VARCHAR", "實施方式（代碼表 3.6）"),
    C("time_slot", "VARCHAR", "研習時段（代碼表 3.7）"),
    C("audience", "VARCHAR", "研習對象（代碼以 ; 分隔，依代碼表順序）"),
    C("tags", "VARCHAR", "屬性標籤（代碼以 ; 分隔）"),
    C("closed_date", "DATE", "結案日期"),
    C("modified_at", "TIMESTAMP", "異動時間（臺北時間）"),
    C("is_deleted", "BOOLEAN", "已撤回"),
    C("upload_id", "VARCHAR", "最後寫入此列的傳報編號"),
    C("loaded_at", "TIMESTAMPTZ", "最後寫入時間"),
    C("first_loaded_at", "TIMESTAMPTZ", "首次載入時間"),
), per_area=True)

ATTENDANCE = Table("attendance", "研習名單（教師以假名鍵表示）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("teacher_key", "VARCHAR", "教師假名鍵（身分證字號之 HMAC-SHA256）"),
    C("school_code", "VARCHAR", "服務學校代碼"),
    C("hours_granted", "DECIMAL(5,1)", "核發時數"),
    C("completed", "BOOLEAN", "完成"),
    C("modified_at", "TIMESTAMP", "異動時間（臺北時間）"),
    C("is_deleted", "BOOLEAN", "已撤回"),
    C("upload_id", "VARCHAR", "最後寫入此列的傳報編號"),
    C("loaded_at", "TIMESTAMPTZ", "最後寫入時間"),
    C("first_loaded_at", "TIMESTAMPTZ", "首次載入時間"),
), per_area=True)

HISTORY = Table("history", "異動歷程：課程與名單首次載入後的每一次變更（更新、撤回、更正）", (
    C("record", "VARCHAR", "資料類別（course、attendance）"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("teacher_key", "VARCHAR", "教師假名鍵（名單列）"),
    C("action", "VARCHAR", "異動（update 更新、withdraw 撤回、correction 更正、add 更正新增、"
                           "remove 更正刪除、replay 重新檢核後載入）"),
    C("before_json", "VARCHAR", "異動前內容（JSON；新增時為空）"),
    C("after_json", "VARCHAR", "異動後內容（JSON；撤回或刪除時為空）"),
    C("source", "VARCHAR", "來源（upload 檔案傳報、feed 資料庫互傳、correction 更正申請、replay 依現行規則重新檢核）"),
    C("source_id", "VARCHAR", "來源編號（傳報編號、互傳日、更正列）"),
    C("letter_no", "VARCHAR", "核定文號（更正）"),
    C("changed_at", "TIMESTAMPTZ", "異動時間"),
), per_area=True)

UPLOADS = Table("uploads", "傳報紀錄（每個檔案或每日資料庫互傳一筆）", (
    C("upload_id", "VARCHAR", "傳報編號"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("channel", "VARCHAR", "管道（file 檔案、db 資料庫互傳）"),
    C("file_name", "VARCHAR", "檔名"),
    C("data_month", "VARCHAR", "資料月份 YYYY-MM"),
    C("content_hash", "VARCHAR", "內容雜湊（SHA-256）"),
    C("received_at", "TIMESTAMPTZ", "收件時間"),
    C("on_time", "BOOLEAN", "準時（次月 5 日 23:59:59 前）"),
    C("area", "VARCHAR", "資料區（production 正式、testing 測試；未登錄單位為空）"),
    C("status", "VARCHAR", "狀態（loaded 已載入、refused 退件、duplicate 重複傳報未再載入）"),
    C("refusal", "VARCHAR", "整批退件規則"),
    C("courses_received", "INTEGER", "課程收件筆數"),
    C("courses_accepted", "INTEGER", "課程通過筆數"),
    C("courses_rejected", "INTEGER", "課程退件筆數"),
    C("courses_inserted", "INTEGER", "課程新增筆數"),
    C("courses_updated", "INTEGER", "課程更新筆數"),
    C("attendance_received", "INTEGER", "名單收件筆數"),
    C("attendance_accepted", "INTEGER", "名單通過筆數"),
    C("attendance_rejected", "INTEGER", "名單退件筆數"),
    C("attendance_inserted", "INTEGER", "名單新增筆數"),
    C("attendance_updated", "INTEGER", "名單更新筆數"),
    C("courses_withdrawn", "INTEGER", "課程撤回筆數"),
    C("attendance_withdrawn", "INTEGER", "名單撤回筆數"),
    C("receipt_json", "VARCHAR", "回執 JSON 路徑"),
    C("receipt_xlsx", "VARCHAR", "回執 Excel 路徑"),
    C("processed_at", "TIMESTAMPTZ", "處理時間"),
    C("replay_of", "VARCHAR", "依現行規則重新檢核（replay）之原傳報編號；一般傳報為空"),
))

FINDINGS = Table("findings", "檢核結果（退件與警告，逐列）", (
    C("upload_id", "VARCHAR", "傳報編號"),
    C("record", "VARCHAR", "資料類別（file、course、attendance）"),
    C("row", "BIGINT", "列號（Excel 工作表列、XML 元素序、Access 紀錄序）"),
    C("field", "VARCHAR", "欄位代碼"),
    C("rule", "VARCHAR", "規則代號（F/C/A/W）"),
    C("severity", "VARCHAR", "嚴重度（error 退件、warning 警告）"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("message_zh", "VARCHAR", "說明"),
    C("message_en", "VARCHAR", "Message"),
))

UNITS = Table("units", "傳報單位名冊", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("name", "VARCHAR", "單位名稱"),
    C("channel", "VARCHAR", "管道（file、db）"),
    C("state", "VARCHAR", "狀態（testing 測試、production 正式、sealed 封存）"),
    C("joined", "DATE", "加入日期"),
    C("updated_at", "TIMESTAMPTZ", "最後異動時間"),
))

ARCHIVE_EXCEPTIONS = Table("archive_exceptions", "封存年度例外核准（公文）", (
    C("exception_id", "INTEGER", "編號"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼（NULL 表示全部課程）"),
    C("letter_no", "VARCHAR", "核准文號"),
    C("letter_date", "DATE", "核准日期"),
    C("valid_until", "DATE", "有效期限"),
    C("created_at", "TIMESTAMPTZ", "登錄時間"),
))

# Feature tables (each feature owns its block below; add your Table objects to your tuple).
FEEDS = Table("feeds", "資料庫互傳登錄（連線字串存於環境變數，不存密碼）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("url_env", "VARCHAR", "存放 SQLAlchemy 連線字串的環境變數名稱"),
    C("courses_table", "VARCHAR", "課程資料表或檢視（可含 schema.）"),
    C("attendance_table", "VARCHAR", "研習名單資料表或檢視（可含 schema.）"),
    C("overlap_minutes", "INTEGER", "重疊讀取分鐘數（水位線往前回讀，補遲交易）"),
    C("added_at", "TIMESTAMPTZ", "登錄時間"),
))

FEED_WATERMARKS = Table("feed_watermarks", "資料庫互傳水位線：已讀取之最大異動時間，與其涵蓋的資料同一交易寫入", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("area", "VARCHAR", "資料區（production 正式、testing 測試）"),
    C("watermark", "TIMESTAMP", "已讀取之最大異動時間（臺北時間；空值表示尚未讀取任何列）"),
    C("rows_taken", "BIGINT", "設定此水位線之讀取所讀列數（課程＋名單）"),
    C("upload_id", "VARCHAR", "設定此水位線之傳報編號"),
    C("complete", "BOOLEAN", "該次讀取已完成全部批次（否：中斷，下次接續）"),
    C("pull_started_at", "TIMESTAMPTZ", "該次讀取（含中斷後接續）開始時間；其後結案之課程不視為已鎖定"),
    C("updated_at", "TIMESTAMPTZ", "最後寫入時間"),
))

FEED_TABLES: tuple[Table, ...] = (FEEDS, FEED_WATERMARKS)  # daily database feeds

CORRECTION_WORKBOOKS = Table("correction_workbooks", "更正申請表收件登記（內容雜湊；同一份申請表不重複處理）", (
    C("content_hash", "VARCHAR", "內容雜湊（SHA-256）"),
    C("file_name", "VARCHAR", "檔名"),
    C("received_at", "TIMESTAMPTZ", "收件時間"),
    C("status", "VARCHAR", "狀態（processed 已處理、refused 整份退件）"),
    C("refusal", "VARCHAR", "整份退件原因"),
    C("rows_received", "INTEGER", "申請列數"),
    C("rows_applied", "INTEGER", "已更正列數"),
    C("rows_refused", "INTEGER", "不予更正列數"),
    C("rows_already_applied", "INTEGER", "先前已更正列數"),
    C("receipt_json", "VARCHAR", "回執 JSON 路徑"),
    C("receipt_xlsx", "VARCHAR", "回執 Excel 路徑"),
    C("processed_at", "TIMESTAMPTZ", "處理時間"),
))

CORRECTIONS = Table("corrections", "更正申請逐列處理結果（已更正或不予更正，皆留存稽核）", (
    C("correction_id", "VARCHAR", "更正編號（申請表雜湊:列號）"),
    C("content_hash", "VARCHAR", "申請表內容雜湊"),
    C("row", "BIGINT", "申請表列號"),
    C("row_key", "VARCHAR", "更正內容鍵（HMAC；同一更正不重複套用）"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("record", "VARCHAR", "資料類別（course、attendance）"),
    C("field", "VARCHAR", "修改欄位（欄位代碼；名單為 attendance:add／remove／欄位）"),
    C("teacher_key", "VARCHAR", "教師假名鍵（名單更正）"),
    C("original", "VARCHAR", "原內容（身分證字號已遮蔽）"),
    C("new_value", "VARCHAR", "修改後內容（身分證字號已遮蔽）"),
    C("authority", "VARCHAR", "核定機關"),
    C("letter_no", "VARCHAR", "核定文號"),
    C("letter_date", "DATE", "核定日期"),
    C("status", "VARCHAR", "結果（applied 已更正、refused 不予更正、already_applied 先前已更正）"),
    C("reason", "VARCHAR", "不予更正原因代碼"),
    C("message_zh", "VARCHAR", "說明"),
    C("message_en", "VARCHAR", "Message"),
    C("decided_at", "TIMESTAMPTZ", "處理時間"),
))

UNIT_STATE_LOG = Table("unit_state_log", "單位狀態異動紀錄（測試、正式、封存；含核定文號）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("from_state", "VARCHAR", "原狀態"),
    C("to_state", "VARCHAR", "新狀態"),
    C("letter_no", "VARCHAR", "核定文號"),
    C("reason", "VARCHAR", "事由（promote 轉正式、seal 封存、seal_dormant 久未交換資料封存、reapply 重新申請）"),
    C("changed_at", "TIMESTAMPTZ", "異動時間"),
))

CORRECTION_TABLES: tuple[Table, ...] = (CORRECTION_WORKBOOKS, CORRECTIONS, UNIT_STATE_LOG)  # corrections, lifecycle

# The attribute-tag register (spec 1.1 §3.8, registers/tags.py): the eight tags of the spec are
# seeded when the table is created; every change is logged with who and when.
TAGS = Table("tags", "屬性標籤登錄（規格 3.8；課程標籤依研習起日判斷是否有效，無效者 W06 刪除）", (
    C("code", "VARCHAR", "標籤代碼"),
    C("short_label", "VARCHAR", "簡稱"),
    C("full_name", "VARCHAR", "全名"),
    C("legal_basis", "VARCHAR", "法源依據"),
    C("valid_from", "DATE", "生效日"),
    C("valid_to", "DATE", "失效日（含當日；空值表示無期限）"),
    C("position", "INTEGER", "排列順序（課程標籤依此順序記錄）"),
    C("updated_at", "TIMESTAMPTZ", "最後異動時間"),
))

TAG_LOG = Table("tag_log", "屬性標籤登錄異動紀錄（seed 規格內建、add 新增、retire 停用；異動者及時間）", (
    C("code", "VARCHAR", "標籤代碼"),
    C("action", "VARCHAR", "異動（seed、add、retire）"),
    C("short_label", "VARCHAR", "簡稱"),
    C("full_name", "VARCHAR", "全名"),
    C("legal_basis", "VARCHAR", "法源依據"),
    C("valid_from", "DATE", "生效日"),
    C("valid_to", "DATE", "失效日（含當日）"),
    C("changed_by", "VARCHAR", "異動者"),
    C("changed_at", "TIMESTAMPTZ", "異動時間"),
))

TAG_TABLES: tuple[Table, ...] = (TAGS, TAG_LOG)

# Lights per organizer (spec §7) as of any day: each course's span of days in which it counts toward
# its organizer's light; the light on day D counts the spans holding D (validations/lights.py).
ORGANIZER_LIGHT_COURSES = Table(
    "organizer_light_courses",
    "燈號計入課程：逾期未結案課程計入其開課單位（所屬傳報單位內）燈號之期間；"
    "某日之燈號 = 該日落在 counts_from 至 counts_until 之課程數（0 綠燈、1–4 黃燈、5 以上紅燈）", (
        C("unit_code", "VARCHAR", "單位代碼"),
        C("organizer", "VARCHAR", "開課單位"),
        C("course_code", "VARCHAR", "研習代碼"),
        C("class_type", "VARCHAR", "班別性質（學分班不計）"),
        C("start_date", "DATE", "研習起日（所屬年度）"),
        C("end_date", "DATE", "研習迄日"),
        C("closed_date", "DATE", "結案日期"),
        C("counts_from", "DATE", "開始計入日（研習迄日後第 8 日）"),
        C("counts_until", "DATE", "最後計入日（結案前一日或研習起日年度之 12 月 31 日，取早者）"),
    ), view=lights.spans_sql("main.courses"))

VIEWS: tuple[Table, ...] = (ORGANIZER_LIGHT_COURSES,)

# The receipt as sent, written in the upload's own transaction: a receipt lost after the commit (a
# kill, a full or read-only outbox) is rewritten from it when the unit sends the file again. The
# partner's document (masked IDs, its own values quoted): not an analyst table.
UPLOAD_RECEIPTS = Table("upload_receipts", "回執原文（JSON；回執檔遺失時據以重建，不提供分析人員）", (
    C("upload_id", "VARCHAR", "傳報編號"),
    C("receipt", "VARCHAR", "回執 JSON 全文（身分證字號已遮蔽）"),
    C("written_at", "TIMESTAMPTZ", "寫入時間"),
))


# Not for analysts (never in their copy, never granted): what the loader keeps about the warehouse itself.
WAREHOUSE_META = Table("warehouse_meta", "倉儲自身紀錄（假名金鑰指紋、寫入序號；不含金鑰本身）", (
    C("name", "VARCHAR", "項目（pseudonym_key_fingerprint 假名金鑰指紋、commit_seq 寫入序號）"),
    C("value", "VARCHAR", "內容"),
    C("updated_at", "TIMESTAMPTZ", "最後寫入時間"),
))

TABLES = (UNITS, UPLOADS, FINDINGS, COURSES, ATTENDANCE, HISTORY, ARCHIVE_EXCEPTIONS, *FEED_TABLES,
          *CORRECTION_TABLES, *TAG_TABLES, UPLOAD_RECEIPTS, WAREHOUSE_META, *VIEWS)
AREAS = {"production": "main", "testing": "testing"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def missing_columns(existing: set[tuple[str, str, str]]) -> list[str]:
    """Additive migration: ALTER statements for declared columns an older warehouse lacks.

    `existing` holds (schema, table, column) of the open warehouse."""
    tables = {(s, t) for s, t, _ in existing}
    out = []
    for table in TABLES:
        for schema in (AREAS.values() if table.per_area else ("main",)):
            if (schema, table.name) not in tables or table.view:
                continue  # created whole by CREATE TABLE
            out += [f'ALTER TABLE {schema}.{table.name} ADD COLUMN "{c.name}" {c.type}'
                    for c in table.columns if (schema, table.name, c.name) not in existing]
    return out


def statements(existing: set[tuple[str, str]] | None = None) -> list[str]:
    """CREATE SCHEMA / TABLE (with comments) for the declared tables that are not in `existing`
    ((schema, table) pairs); nothing when all exist."""
    existing = existing or set()
    out: list[str] = []
    schemas_used: set[str] = set()
    for table in TABLES:
        schemas = AREAS.values() if table.per_area else ("main",)
        for schema in schemas:
            if (schema, table.name) in existing:
                continue
            schemas_used.add(schema)
            cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in table.columns)
            if table.view:
                out.append(f"CREATE OR REPLACE VIEW {schema}.{table.name} AS {table.view}")
                out.append(f"COMMENT ON VIEW {schema}.{table.name} IS {_quote(table.comment)}")
            else:
                out.append(f"CREATE TABLE IF NOT EXISTS {schema}.{table.name} (\n  {cols}\n)")
                out.append(f"COMMENT ON TABLE {schema}.{table.name} IS {_quote(table.comment)}")
            out += [f'COMMENT ON COLUMN {schema}.{table.name}."{c.name}" IS {_quote(c.comment)}'
                    for c in table.columns]
    return [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in sorted(schemas_used)] + out
