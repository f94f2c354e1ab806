"""The warehouse's tables, declared once: the registry `TABLES` at the end of this module.

Each table is one `Table(...)` declaration: its columns (name, SQL type, Chinese comment), its key,
whether analysts read it, its PostgreSQL look-up indexes, and whether the first publication creates
it (the stat_* and yearbook tables) rather than the warehouse's first open. Everything else is
derived from the registry, never typed again:

- the DDL of both backends (`statements`; the types used are valid in DuckDB and PostgreSQL) and
  the additive migration of an older warehouse (`missing_columns`: declared columns it lacks);
- PostgreSQL's indexes (`index_statements`): a unique index on every key, plus the declared ones;
- the key checks (warehouse/checks.py) and the merge's join keys (`Table.key`);
- the analysts' access (warehouse/analyst.py): the DuckDB copy, the PostgreSQL role's grants, the
  Parquet lake and its Spark/Trino definitions (`Table.analysts`);
- Dagster's column schemas (assets/shared.py `table_schema`).

The course and attendance columns that hold a record's fields take their type from the field's kind
(`KIND_TYPES`, over schemas/fields.py); personal fields never become columns.

To add a table: declare `NAME = Table("name", "中文說明", (Column(...), ...))` (with `per_area=True`
if testing units get their own copy, `key=`, `analysts=True` only if analysts may read every row of
it, `publication=True` if a publication fills it), then add it to `TABLES`. A warehouse opened
afterwards creates it (or its new columns); nothing else needs editing. (The Parquet lake names its
tables with their year/month partitioning in analyst.LAKE_QUERIES; a blocking check of a new key is
declared in checks.BLOCKING, which reads the key from here.)

Teachers appear only as `teacher_key` (keyed pseudonym); no national ID or name is stored.
Keys are not enforced as constraints on DuckDB (measured: a PRIMARY KEY makes DuckDB loads 4–8× slower
than a plain copy, and the file ~4× larger): the merge keeps them unique and an asset check proves it;
PostgreSQL enforces them with unique indexes. `testing` units load into the same tables under the schema
`testing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inservice.schemas.fields import ATTENDANCE as ATTENDANCE_RECORD
from inservice.schemas.fields import COURSE as COURSE_RECORD
from inservice.schemas.fields import Kind, RecordType
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
    key: tuple[str, ...] = ()  # the columns no two rows share (unique index on PostgreSQL, a check on DuckDB)
    analysts: bool = False  # analysts read it (production area): the DuckDB copy, the role's grants
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # PostgreSQL look-ups: (name suffix, columns)
    publication: bool = False  # created by the first publication that fills it, not when the warehouse opens
    view: str | None = None  # a view over the tables (its SELECT); its columns are declared for the comments

    @property
    def schemas(self) -> tuple[str, ...]:
        """The schemas holding a copy of the table."""
        return tuple(AREAS.values()) if self.per_area else ("main",)


# A field kind's column type (schemas/fields.py Kind): every record field stored is typed from it.
KIND_TYPES: dict[Kind, str] = {
    Kind.TEXT: "VARCHAR", Kind.CODE: "VARCHAR", Kind.CODES: "VARCHAR", Kind.DATE: "DATE",
    Kind.DATETIME: "TIMESTAMP", Kind.NUMBER: "DECIMAL(5,1)", Kind.YESNO: "BOOLEAN",
}


def record_columns(record: RecordType, comments: Mapping[str, str], pseudonym: Column | None = None
                   ) -> tuple[Column, ...]:
    """A record type's fields as columns, in the record's order: the type from the field's kind, the
    comment given (else the field's label). Personal fields are never stored: `pseudonym` (if any)
    stands where the first of them is."""
    out: list[Column] = []
    for f in record.fields:
        if f.personal:
            if pseudonym is not None and pseudonym not in out:
                out.append(pseudonym)
            continue
        out.append(Column(f.code, KIND_TYPES[f.kind], comments.get(f.code, f.label)))
    return tuple(out)


C = Column

_LOADED = (
    C("upload_id", "VARCHAR", "最後寫入此列的傳報編號"),
    C("loaded_at", "TIMESTAMPTZ", "最後寫入時間"),
    C("first_loaded_at", "TIMESTAMPTZ", "首次載入時間"),
)
_CHANGED = {"modified_at": "異動時間（臺北時間）", "is_deleted": "已撤回"}

COURSES = Table("courses", "研習課程（已通過檢核）", (
    *record_columns(COURSE_RECORD, {
        "organizer_type": "開課單位類別（代碼表 3.5）",
        "county_code": "縣市代碼（代碼表 3.1，舊代碼已轉換）",
        "class_type": "班別性質（1 非學分班、2 學分班-學士、3 學分班-碩士）",
        "category": "課程類別（代碼表 3.4）",
        "delivery": "實施方式（代碼表 3.6）",
        "time_slot": "研習時段（代碼表 3.7）",
        "audience": "研習對象（代碼以 ; 分隔，依代碼表順序）",
        "tags": "屬性標籤（代碼以 ; 分隔）",
        "closed_date": "結案日期",
        **_CHANGED,
    }),
    *_LOADED,
), per_area=True, key=("unit_code", "course_code"), analysts=True,
    indexes=(("session", ("organizer", "title")),))  # the rules' sessions (W05) look-up

ATTENDANCE = Table("attendance", "研習名單（教師以假名鍵表示）", (
    *record_columns(ATTENDANCE_RECORD, _CHANGED,
                    pseudonym=C("teacher_key", "VARCHAR", "教師假名鍵（身分證字號之 HMAC-SHA256）")),
    *_LOADED,
), per_area=True, key=("unit_code", "course_code", "teacher_key"), analysts=True)

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
), per_area=True, analysts=True, indexes=(("course", ("unit_code", "course_code")),))

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
), analysts=True, indexes=(("id", ("upload_id",)), ("hash", ("unit_code", "content_hash"))))

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
), analysts=True, indexes=(("upload", ("upload_id",)),))

UNITS = Table("units", "傳報單位名冊", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("name", "VARCHAR", "單位名稱"),
    C("channel", "VARCHAR", "管道（file、db）"),
    C("state", "VARCHAR", "狀態（testing 測試、production 正式、sealed 封存）"),
    C("joined", "DATE", "加入日期"),
    C("updated_at", "TIMESTAMPTZ", "最後異動時間"),
    C("county_code", "VARCHAR", "所屬縣市代碼（代碼表 3.1；縣市匯出依此）"),
    C("operator", "VARCHAR", "經營（承辦）機關"),
), analysts=True)

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
    C("reason", "VARCHAR", "事由（register 登錄、promote 轉正式、seal 封存、seal_dormant 久未交換資料封存、"
                           "reapply 重新申請、rename 更名、handover 移轉經營、channel 變更管道、county 變更縣市）"),
    C("changed_at", "TIMESTAMPTZ", "異動時間"),
    C("field", "VARCHAR", "異動欄位（state、name、operator、channel、county_code）"),
    C("old_value", "VARCHAR", "原內容"),
    C("new_value", "VARCHAR", "新內容"),
    C("effective_date", "DATE", "生效日期（公文所定；統計依此判斷各月份之名稱）"),
    C("changed_by", "VARCHAR", "異動人員"),
))

CORRECTION_TABLES: tuple[Table, ...] = (CORRECTION_WORKBOOKS, CORRECTIONS, UNIT_STATE_LOG)  # corrections, lifecycle

# --- registers (inservice/registers/): dated versions, so a past month is judged as it stood then ---------
UNIT_VERSIONS = Table("unit_versions", "單位名冊歷程：名稱、經營機關、管道、縣市之有效期間（過去月份統計依當時名稱）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("name", "VARCHAR", "單位名稱"),
    C("operator", "VARCHAR", "經營（承辦）機關"),
    C("channel", "VARCHAR", "管道（file、db）"),
    C("county_code", "VARCHAR", "所屬縣市代碼"),
    C("valid_from", "DATE", "生效日（空值：登錄起）"),
    C("valid_to", "DATE", "失效日（不含；空值：現行）"),
), analysts=True)

SCHOOL_REGISTER = Table("school_register", "學校名冊（教育部公布，含歷程）：教師學校之縣市及教育階段依研習起日判斷", (
    C("school_code", "VARCHAR", "學校代碼"),
    C("school_name", "VARCHAR", "學校名稱"),
    C("county_code", "VARCHAR", "縣市代碼"),
    C("level", "VARCHAR", "教育階段（K 幼兒園、E 國小、J 國中、S 高中、V 高職、X 特殊教育學校）"),
    C("ownership", "VARCHAR", "公私立別"),
    C("valid_from", "DATE", "生效日（空值：名冊起始即有）"),
    C("valid_to", "DATE", "失效日（不含；空值：現行）"),
), analysts=True)

SCHOOL_CHANGES = Table("school_changes", "學校名冊異動紀錄（設立、裁撤、更名、改制、縣市變更；含文號及匯入人員）", (
    C("school_code", "VARCHAR", "學校代碼"),
    C("change", "VARCHAR", "異動（open 設立、close 裁撤、rename 更名、level 改制、county 縣市變更、reopen 復校）"),
    C("old_value", "VARCHAR", "原內容"),
    C("new_value", "VARCHAR", "新內容"),
    C("effective_date", "DATE", "生效日期"),
    C("letter_no", "VARCHAR", "依據（公文文號或名冊公布文號）"),
    C("source_file", "VARCHAR", "匯入之名冊檔名"),
    C("changed_by", "VARCHAR", "匯入人員"),
    C("changed_at", "TIMESTAMPTZ", "匯入時間"),
))

REGISTER_TABLES: tuple[Table, ...] = (UNIT_VERSIONS, SCHOOL_REGISTER, SCHOOL_CHANGES)


# --- reference tables for analysts: the spec's code lists as tables (rows from schemas/, see
# warehouse/reference.py), so nobody hard-codes 63000 = 臺北市 -------------------------------------------
def _code_table(name: str, comment: str) -> Table:
    return Table(name, comment, (
        C("code", "VARCHAR", "代碼"),
        C("label", "VARCHAR", "中文名稱"),
        C("ord", "INTEGER", "排序（規格書順序）"),
    ), analysts=True)


REF_COUNTIES = Table("ref_counties", "代碼表 3.1 縣市（含英文名稱；舊代碼見 ref_county_legacy）", (
    C("code", "VARCHAR", "縣市代碼"),
    C("label", "VARCHAR", "縣市名稱"),
    C("label_en", "VARCHAR", "英文名稱"),
    C("full_name", "VARCHAR", "全銜"),
    C("ord", "INTEGER", "排序（規格書順序）"),
), analysts=True)
REF_COUNTY_LEGACY = Table("ref_county_legacy", "代碼表 3.1 舊縣市代碼及其承繼縣市（縣市合併、升格）", (
    C("legacy_code", "VARCHAR", "舊縣市代碼"),
    C("legacy_label", "VARCHAR", "舊縣市名稱"),
    C("code", "VARCHAR", "承繼縣市代碼"),
), analysts=True)
REF_LEVELS = _code_table("ref_levels", "代碼表 3.2 研習對象／學校教育階段")
REF_CLASS_TYPES = Table("ref_class_types", "代碼表 3.3 班別性質", (
    C("code", "VARCHAR", "代碼"),
    C("label", "VARCHAR", "中文名稱"),
    C("ord", "INTEGER", "排序（規格書順序）"),
    C("degree", "BOOLEAN", "學位學分班（不列入未結案燈號）"),
), analysts=True)
REF_CATEGORIES = _code_table("ref_categories", "代碼表 3.4 課程類別（2015 年分類）")
REF_ORGANIZER_TYPES = _code_table("ref_organizer_types", "代碼表 3.5 開課單位類別")
REF_DELIVERIES = _code_table("ref_deliveries", "代碼表 3.6 實施方式")
REF_TIME_SLOTS = _code_table("ref_time_slots", "代碼表 3.7 研習時段")
REF_RULES = Table("ref_rules", "規則代號（規格書第 5 節）及其中英文說明", (
    C("rule", "VARCHAR", "規則代號"),
    C("severity", "VARCHAR", "嚴重度（error 退件、warning 警告）"),
    C("message_zh", "VARCHAR", "中文說明"),
    C("message_en", "VARCHAR", "English"),
), analysts=True)
REF_TRAINING_INSTITUTIONS = Table("ref_training_institutions", "師資培育之大學及學科中心（未結案統計逐校列出）", (
    C("institution_id", "VARCHAR", "編號"),
    C("name", "VARCHAR", "名稱（與課程之開課單位比對）"),
    C("kind", "VARCHAR", "類別（university 師資培育之大學、subject_centre 學科中心）"),
    C("county_code", "VARCHAR", "所在縣市代碼"),
), analysts=True)
REFERENCE_TABLES: tuple[Table, ...] = (REF_COUNTIES, REF_COUNTY_LEGACY, REF_LEVELS, REF_CLASS_TYPES, REF_CATEGORIES,
                                       REF_ORGANIZER_TYPES, REF_DELIVERIES, REF_TIME_SLOTS, REF_RULES,
                                       REF_TRAINING_INSTITUTIONS)

# Bridge views (course × code) over courses' list fields: analysts count without splitting strings.
# Views in the warehouse (always current); tables in the analysts' copy and the lake.
COURSE_AUDIENCE = Table("course_audience", "課程 × 研習對象（每門課每個對象一列；未撤回之正式課程）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("level", "VARCHAR", "研習對象代碼（ref_levels）"),
))
COURSE_TAGS = Table("course_tags", "課程 × 屬性標籤（每門課每個標籤一列；未撤回之正式課程）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("tag", "VARCHAR", "屬性標籤代碼"),
))
BRIDGE_VIEWS: dict[Table, str] = {
    COURSE_AUDIENCE: "SELECT unit_code, course_code, unnest(string_to_array(audience, ';')) AS level "
                     "FROM main.courses WHERE NOT coalesce(is_deleted, false) AND coalesce(audience, '') <> ''",
    COURSE_TAGS: "SELECT unit_code, course_code, unnest(string_to_array(tags, ';')) AS tag "
                 "FROM main.courses WHERE NOT coalesce(is_deleted, false) AND coalesce(tags, '') <> ''",
}

# The legacy archive's migration (inservice backfill): one run per source, resumable chunk by chunk.
# Each chunk's checkpoint, counts and samples are written in the transaction of its rows. Not analyst tables.
BACKFILL_RUNS = Table("backfill_runs", "舊系統資料移轉執行紀錄（每個來源一筆；中斷後接續）", (
    C("run_id", "VARCHAR", "移轉編號（來源與封存基準日之雜湊）"),
    C("source", "VARCHAR", "來源（資料夾或連線字串，不含密碼）"),
    C("cutoff", "DATE", "封存基準日（其前開始之課程送冷封存）"),
    C("batch_rows", "INTEGER", "每段名單列數（決定分段，接續時沿用）"),
    C("started_at", "TIMESTAMPTZ", "開始時間（所載入資料列之載入時間）"),
    C("finished_at", "TIMESTAMPTZ", "完成時間（空值表示尚未完成）"),
))

BACKFILL_CHUNKS = Table("backfill_chunks", "舊系統資料移轉分段檢查點（與該段資料同一交易寫入）", (
    C("run_id", "VARCHAR", "移轉編號"),
    C("chunk", "INTEGER", "分段序號"),
    C("last_unit", "VARCHAR", "本段最後之單位代碼（原值）"),
    C("last_course", "VARCHAR", "本段最後之研習代碼（原值）"),
    C("rows_read", "BIGINT", "本段讀取列數（課程＋名單）"),
    C("committed_at", "TIMESTAMPTZ", "寫入時間"),
))

BACKFILL_COUNTS = Table("backfill_counts", "舊系統資料移轉對帳：各單位、年度之讀取、載入、冷封存、退件列數", (
    C("run_id", "VARCHAR", "移轉編號"),
    C("chunk", "INTEGER", "分段序號"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("year", "INTEGER", "研習起日年度（無法判定時為空）"),
    C("record", "VARCHAR", "資料類別（course、attendance）"),
    C("outcome", "VARCHAR", "結果（loaded 載入、archived 冷封存、refused 退件）"),
    C("rule", "VARCHAR", "退件規則（該列之第一個錯誤規則）"),
    C("rows", "BIGINT", "列數"),
))

BACKFILL_SAMPLES = Table("backfill_samples", "舊系統資料移轉退件樣本（每段每規則數筆；身分證字號已遮蔽）", (
    C("run_id", "VARCHAR", "移轉編號"),
    C("chunk", "INTEGER", "分段序號"),
    C("record", "VARCHAR", "資料類別"),
    C("row", "BIGINT", "來源列序（依單位、研習代碼排序後之位置）"),
    C("rule", "VARCHAR", "規則代號"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("course_code", "VARCHAR", "研習代碼"),
    C("id_masked", "VARCHAR", "遮蔽之身分證字號（名單）"),
    C("message_zh", "VARCHAR", "說明"),
    C("message_en", "VARCHAR", "Message"),
))

BACKFILL_UNITS = Table("backfill_units", "舊系統資料移轉時登錄之單位（名冊原無者）", (
    C("run_id", "VARCHAR", "移轉編號"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("joined", "DATE", "加入日期（其最早之研習起日）"),
))

BACKFILL_TABLES: tuple[Table, ...] = (BACKFILL_RUNS, BACKFILL_CHUNKS, BACKFILL_COUNTS, BACKFILL_SAMPLES,
                                      BACKFILL_UNITS)

# The receipt as sent, written in the upload's own transaction: a receipt lost after the commit (a
# kill, a full or read-only outbox) is rewritten from it when the unit sends the file again. The
# partner's document (masked IDs, its own values quoted): not an analyst table.
UPLOAD_RECEIPTS = Table("upload_receipts", "回執原文（JSON；回執檔遺失時據以重建，不提供分析人員）", (
    C("upload_id", "VARCHAR", "傳報編號"),
    C("receipt", "VARCHAR", "回執 JSON 全文（身分證字號已遮蔽）"),
    C("written_at", "TIMESTAMPTZ", "寫入時間"),
), indexes=(("id", ("upload_id",)),))

# Partners: who at a unit hears from the network, and what was mailed (neither is an analyst table).
UNIT_CONTACTS = Table("unit_contacts", "單位聯絡人電子郵件（含歷程：移除者保留移除時間）", (
    C("unit_code", "VARCHAR", "單位代碼"),
    C("email", "VARCHAR", "電子郵件（小寫）"),
    C("added_at", "TIMESTAMPTZ", "加入時間"),
    C("added_by", "VARCHAR", "加入者（作業系統帳號）"),
    C("removed_at", "TIMESTAMPTZ", "移除時間（空值表示現行聯絡人）"),
    C("removed_by", "VARCHAR", "移除者"),
))

MAIL_OUTBOX = Table("mail_outbox", "寄件匣：每封通知一列（回執、缺件提醒、退件日報）；已寄者不再寄", (
    C("message_key", "VARCHAR", "通知鍵（receipt:傳報編號、reminder:單位:月份、digest:日期）；同鍵只寄一次"),
    C("kind", "VARCHAR", "類別（receipt 回執、reminder 缺件提醒、digest 退件日報）"),
    C("unit_code", "VARCHAR", "單位代碼（日報為空）"),
    C("recipients", "VARCHAR", "收件人（以逗號分隔）"),
    C("subject", "VARCHAR", "主旨"),
    C("body", "VARCHAR", "內文"),
    C("attachment", "VARCHAR", "附件路徑（回執 Excel）"),
    C("status", "VARCHAR", "狀態（pending 待寄、sending 寄送中、sent 已寄、failed 多次失敗）"),
    C("attempts", "INTEGER", "嘗試次數"),
    C("last_error", "VARCHAR", "最近一次錯誤（不含密碼）"),
    C("created_at", "TIMESTAMPTZ", "建立時間"),
    C("claimed_at", "TIMESTAMPTZ", "開始寄送時間"),
    C("sent_at", "TIMESTAMPTZ", "寄出時間"),
), key=("message_key",))  # queued once per key (PostgreSQL enforces it)

NOTIFICATION_TABLES: tuple[Table, ...] = (UNIT_CONTACTS, MAIL_OUTBOX)

# Not for analysts (never in their copy, never granted): what the loader keeps about the warehouse itself.
WAREHOUSE_META = Table("warehouse_meta", "倉儲自身紀錄（假名金鑰指紋、寫入序號；不含金鑰本身）", (
    C("name", "VARCHAR", "項目（pseudonym_key_fingerprint 假名金鑰指紋、commit_seq 寫入序號）"),
    C("value", "VARCHAR", "內容"),
    C("updated_at", "TIMESTAMPTZ", "最後寫入時間"),
))

# Not for analysts: the publishing gate's record of what it last verified (warehouse/checks.py), so it
# checks again only the rows written since. Per table and writing upload: a signature of its rows; and
# the course keys that existed (as hashes), so a course removed since is noticed.
GATE_VERIFIED = Table("gate_verified", "發布檢核已驗證紀錄（各表各寫入批次及各儲存區塊之簽章；變動者重新檢核）", (
    C("table_name", "VARCHAR", "資料表（schema.table）"),
    C("kind", "VARCHAR", "upload 寫入批次、row_group 儲存區塊（DuckDB）"),
    C("part", "VARCHAR", "寫入批次代碼（傳報、更正、回填）或區塊起訖列號"),
    C("n_rows", "BIGINT", "列數"),
    C("first_loaded", "TIMESTAMPTZ", "最早寫入時間"),
    C("last_loaded", "TIMESTAMPTZ", "最後寫入時間"),
    C("mark", "BIGINT", "簽章（列號或寫入交易號之和；區塊之儲存位置與統計值雜湊）"),
))
GATE_ATTENDANCE_KEYS = Table("gate_attendance_keys", "發布檢核已驗證之名單鍵（DuckDB；列號及雜湊，只比對新寫入之列）", (
    C("table_name", "VARCHAR", "資料表（schema.attendance）"),
    C("row_id", "BIGINT", "列號（DuckDB rowid）"),
    C("key_hash", "BIGINT", "單位代碼＋研習代碼＋教師代碼之雜湊"),
))
GATE_COURSE_KEYS = Table("gate_course_keys", "發布檢核已驗證之課程鍵（雜湊；用以察覺其後被移除之課程）", (
    C("table_name", "VARCHAR", "資料表（schema.courses）"),
    C("key_hash", "BIGINT", "單位代碼＋研習代碼之雜湊"),
))
# DuckDB: what changed since the analysts' Parquet parts were last written (warehouse/analyst.py), written in
# the transaction of the change, cleared once a refresh has published it. Not for analysts.
ANALYST_PENDING = Table("analyst_pending", "分析副本待更新之單位（與異動同一交易寫入；副本更新後清除）", (
    C("tbl", "VARCHAR", "資料表（courses、attendance、history、uploads）"),
    C("unit_code", "VARCHAR", "單位代碼"),
    C("since", "TIMESTAMPTZ", "異動列之寫入時間（loaded_at、changed_at、processed_at）下限"),
    C("course_code", "VARCHAR", "刪除之研習代碼（撤回、更正刪除；其餘為空）"),
    C("teacher_key", "VARCHAR", "刪除之名單列教師假名鍵"),
    C("replaces", "BOOLEAN", "異動更新或刪除既有列（否：僅新增列，分析檔可僅附加）"),
))

# Publication tables (stat_* of the monthly statistics, the yearbook's snapshot register): analysts
# read them; the first publication creates them (inservice.publish.common.ensure_tables).
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
), key=("code",), analysts=True)

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
    ), analysts=True, view=lights.spans_sql("main.courses"))  # in the DuckDB copy: a table as of the refresh

VIEWS: tuple[Table, ...] = (ORGANIZER_LIGHT_COURSES,)


_MONTH_COLS = (C("month", "VARCHAR", "統計月份 YYYY-MM"), C("as_of", "TIMESTAMPTZ", "發布時點（資料截至）"))


def _published(name: str, comment: str, columns: tuple[Column, ...]) -> Table:
    return Table(name, comment, columns, analysts=True, publication=True)


PUBLICATION_TABLES: tuple[Table, ...] = (
    _published("stat_publications", "統計月報發布紀錄（每次發布一筆；同月份最新者為現行版）", (
        *_MONTH_COLS,
        C("revision", "INTEGER", "版次（同月份第幾次發布）"),
        C("report_date", "DATE", "報表日期（未結案課程計算基準日）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
        C("person_times", "BIGINT", "研習人次（已完成）"),
        C("teachers", "BIGINT", "研習教師數（不重複）"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
        C("files", "VARCHAR", "輸出檔案（JSON 陣列）"),
    )),
    _published("stat_monthly_course_county_level", "表1 課程數及時數：課程縣市 × 研習對象（* 為合計）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼（* 全國）"),
        C("level", "VARCHAR", "研習對象代碼（* 全部對象，每門課計一次）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
    )),
    _published("stat_monthly_teacher_county_level", "表2 研習人次、教師數、核發時數：教師服務學校縣市 × 教育階段", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "學校縣市代碼（未知：學校不在名冊；* 全國）"),
        C("level", "VARCHAR", "學校教育階段（未知；* 全部）"),
        C("person_times", "BIGINT", "研習人次（已完成）"),
        C("teachers", "BIGINT", "教師數（不重複 teacher_key）"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
        C("not_completed", "BIGINT", "未完成人次"),
    )),
    _published("stat_monthly_organizer", "表3 開課單位類別（師資培育之大學逐校列出）", (
        *_MONTH_COLS,
        C("organizer_type", "VARCHAR", "開課單位類別代碼（* 合計）"),
        C("organizer", "VARCHAR", "開課單位名稱（僅類別 3 逐校；* 該類別合計）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
        C("person_times", "BIGINT", "研習人次"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
    )),
    _published("stat_monthly_not_closed",
               "表4 各開課單位（所屬傳報單位內）燈號：逾期未結案課程（非學分班，研習迄日後逾 7 日未結案）", (
        *_MONTH_COLS,
        C("report_date", "DATE", "燈號判定日（報表日期；12 月報表為 12 月 31 日）"),
        C("unit_code", "VARCHAR", "單位代碼"),
        C("unit_name", "VARCHAR", "單位名稱"),
        C("organizer", "VARCHAR", "開課單位"),
        C("county_code", "VARCHAR", "開課單位縣市（其本年度課程最多之縣市代碼）"),
        C("not_closed", "BIGINT", "逾期未結案課程數"),
        C("light", "VARCHAR", "燈號（綠燈 0、黃燈 1–4、紅燈 5 以上）"),
        C("blocked", "BOOLEAN", "停止登錄新課程（紅燈，且判定日在 C11 施行日以後）"),
    )),
    _published("stat_monthly_lights_county",
               "表4 燈號縣市別：各縣市開課單位數（依燈號）及逾期未結案課程數（* 全國）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "縣市代碼（* 全國）"),
        C("organizers", "BIGINT", "開課單位數"),
        C("green", "BIGINT", "綠燈開課單位數"),
        C("yellow", "BIGINT", "黃燈開課單位數"),
        C("red", "BIGINT", "紅燈開課單位數"),
        C("not_closed", "BIGINT", "逾期未結案課程數"),
    )),
    _published("stat_monthly_not_closed_courses", "表4 明細：逾期未結案課程", (
        *_MONTH_COLS,
        C("unit_code", "VARCHAR", "單位代碼"),
        C("organizer", "VARCHAR", "開課單位"),
        C("county_code", "VARCHAR", "課程縣市代碼"),
        C("course_code", "VARCHAR", "研習代碼"),
        C("title", "VARCHAR", "研習名稱"),
        C("end_date", "DATE", "研習迄日"),
        C("days_since_end", "INTEGER", "迄日後日數（至報表日期）"),
    )),
    _published("stat_monthly_tags", "表5 屬性標籤課程數，全國及各縣市（tag * 為有任一標籤之課程，不重複）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼（* 全國）"),
        C("tag", "VARCHAR", "屬性標籤代碼（依標籤登錄）"),
        C("courses", "BIGINT", "課程數"),
        C("course_hours", "DECIMAL(18,1)", "課程時數"),
        C("person_times", "BIGINT", "研習人次"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數"),
    )),
    _published("stat_monthly_meeting_flags", "表5 會議名稱課程（W01 含會議名稱、W02 僅為會議名稱）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼"),
        C("unit_code", "VARCHAR", "單位代碼"),
        C("course_code", "VARCHAR", "研習代碼"),
        C("title", "VARCHAR", "研習名稱"),
        C("w01", "BOOLEAN", "W01 名稱含校務會議、學年會議或行政會議"),
        C("w02", "BOOLEAN", "W02 名稱僅為會議名稱"),
    )),
    _published("stat_monthly_transmission", "表6 各單位傳報狀況與查核", (
        *_MONTH_COLS,
        C("unit_code", "VARCHAR", "單位代碼"),
        C("unit_name", "VARCHAR", "單位名稱"),
        C("channel", "VARCHAR", "管道（file、db）"),
        C("files", "BIGINT", "收件檔案數（本資料月份）"),
        C("feed_days", "BIGINT", "資料庫互傳收件日數"),
        C("expected_days", "BIGINT", "應傳日數（資料庫互傳）"),
        C("on_time_files", "BIGINT", "準時檔案數"),
        C("late_files", "BIGINT", "逾期檔案數"),
        C("refused_uploads", "BIGINT", "整批退件數"),
        C("status", "VARCHAR", "狀態（準時、逾期、未傳；完整、缺漏）"),
        C("courses_accepted", "BIGINT", "課程通過筆數"),
        C("courses_rejected", "BIGINT", "課程退件筆數"),
        C("attendance_accepted", "BIGINT", "名單通過筆數"),
        C("attendance_rejected", "BIGINT", "名單退件筆數"),
        C("refusals", "VARCHAR", "退件規則及筆數"),
        C("audit_due", "BOOLEAN", "本月應查核"),
        C("audit_scope", "VARCHAR", "查核範圍"),
    )),
    _published("stat_monthly_refusals", "表6 明細：各單位退件規則筆數", (
        *_MONTH_COLS,
        C("unit_code", "VARCHAR", "單位代碼"),
        C("rule", "VARCHAR", "規則代號"),
        C("rows", "BIGINT", "筆數"),
    )),
    _published("stat_monthly_series", "表7 近 36 個月課程數與研習人次", (
        *_MONTH_COLS,
        C("series_month", "VARCHAR", "月份 YYYY-MM"),
        C("courses", "BIGINT", "課程數"),
        C("person_times", "BIGINT", "研習人次"),
    )),
    _published("stat_monthly_not_closed_county_level", "表4 逾期未結案課程：課程縣市 × 研習對象（* 為合計）", (
        *_MONTH_COLS,
        C("county_code", "VARCHAR", "課程縣市代碼（* 全國）"),
        C("level", "VARCHAR", "研習對象代碼（* 全部對象，每門課計一次）"),
        C("not_closed", "BIGINT", "逾期未結案課程數"),
    )),
    _published("stat_monthly_not_closed_institution", "表4 逾期未結案：師資培育之大學及學科中心（逐一列出）", (
        *_MONTH_COLS,
        C("institution_id", "VARCHAR", "編號（ref_training_institutions）"),
        C("name", "VARCHAR", "名稱"),
        C("kind", "VARCHAR", "類別（university 師資培育之大學、subject_centre 學科中心）"),
        C("not_closed", "BIGINT", "逾期未結案課程數（開課單位為該校或中心）"),
    )),
    _published("yearbook_snapshots", "年報凍結快照（Parquet 檔，內容不再變動）", (
        C("snapshot_id", "VARCHAR", "快照編號"),
        C("year", "INTEGER", "年度"),
        C("taken_at", "TIMESTAMPTZ", "快照時間"),
        C("courses", "BIGINT", "課程筆數"),
        C("attendance", "BIGINT", "名單筆數"),
        C("path", "VARCHAR", "快照資料夾"),
        C("courses_sha256", "VARCHAR", "courses.parquet 雜湊"),
        C("attendance_sha256", "VARCHAR", "attendance.parquet 雜湊"),
    )),
)


# Planning survey (planning-survey.md): the plans in force (the latest revision of each school year and
# kind), the rows of replaced revisions, and the register of revisions. An older as-of is reproduced from
# loaded_at/replaced_at: rows loaded by then and not yet replaced (warehouse/plans.py).
_PLAN_CHOICES = (
    C("modes", "VARCHAR", "進修方式（代碼以 ; 分隔：1 非學分班、2 學分班-學士、3 學分班-碩士）"),
    C("times", "VARCHAR", "進修時間（代碼以 ; 分隔，代碼表 3.7）"),
    C("places", "VARCHAR", "進修地點（代碼以 ; 分隔：P1 服務學校 … P7 社教機構或民間團體）"),
    C("tiers", "VARCHAR", "進修階層（代碼以 ; 分隔：1 基礎、2 進階、3 領導、4 研發）"),
    C("deliveries", "VARCHAR", "實施方式（代碼以 ; 分隔，代碼表 3.6）"),
    C("submitted_at", "TIMESTAMP", "填報時間（臺北時間）"),
)
_PLAN_LOAD = (
    C("upload_id", "VARCHAR", "首次載入此列之傳報編號（後來的匯出內容相同者，沿用不變）"),
    C("loaded_at", "TIMESTAMPTZ", "此列內容生效時間（首次載入時）"),
)
_SCHOOL_PLAN_COLUMNS = (
    C("school_year", "INTEGER", "學年度（民國，例 106 = 2017-08-01 至 2018-07-31）"),
    C("school_code", "VARCHAR", "學校代碼"),
    C("school_level", "VARCHAR", "學校教育階段（E 國小、J 國中、S 高中、V 高職、X 特殊教育學校）"),
    C("students", "INTEGER", "學生總數"),
    C("teachers", "INTEGER", "教師人數"),
    C("domain", "VARCHAR", "研習範疇（代碼表 3.4，A–F）"),
    C("planned_hours", "DECIMAL(5,1)", "規劃時數"),
    *_PLAN_CHOICES, *_PLAN_LOAD,
)
_TEACHER_PLAN_COLUMNS = (
    C("school_year", "INTEGER", "學年度（民國）"),
    C("teacher_key", "VARCHAR", "教師假名鍵（身分證字號之 HMAC-SHA256，與研習名單相同金鑰）"),
    C("school_code", "VARCHAR", "服務學校代碼"),
    C("domain", "VARCHAR", "研習範疇（代碼表 3.4，A–F）"),
    C("planned_hours", "DECIMAL(5,1)", "規劃時數"),
    *_PLAN_CHOICES, *_PLAN_LOAD,
)
_REPLACED = (
    C("replaced_at", "TIMESTAMPTZ", "被取代時間（此版失效）"),
    C("replaced_by", "VARCHAR", "取代此版之傳報編號"),
)
SCHOOL_PLANS = Table("school_plans", "學校本位教師進修研習規劃（現行版；每校每研習範疇一列）",
                     _SCHOOL_PLAN_COLUMNS, per_area=True, key=("school_year", "school_code", "domain"),
                     analysts=True)
TEACHER_PLANS = Table("teacher_plans", "教師自我專業進修研習規劃（現行版；每位教師每研習範疇一列，教師以假名鍵表示）",
                      _TEACHER_PLAN_COLUMNS, per_area=True, key=("school_year", "teacher_key", "domain"),
                      analysts=True)
SCHOOL_PLANS_HISTORY = Table("school_plans_history", "學校規劃被取代之舊版（重現較早資料截至時點之發布）",
                             (*_SCHOOL_PLAN_COLUMNS, *_REPLACED), per_area=True, analysts=True)
TEACHER_PLANS_HISTORY = Table("teacher_plans_history", "教師規劃被取代之舊版（重現較早資料截至時點之發布）",
                              (*_TEACHER_PLAN_COLUMNS, *_REPLACED), per_area=True, analysts=True)
PLAN_REVISIONS = Table("plan_revisions", "規劃匯出檔版次（同學年度同類別之新匯出整批取代前版）", (
    C("school_year", "INTEGER", "學年度（民國）"),
    C("kind", "VARCHAR", "類別（school 學校規劃、teacher 教師規劃）"),
    C("revision", "INTEGER", "版次（同學年度同類別第幾版）"),
    C("upload_id", "VARCHAR", "傳報編號"),
    C("file_name", "VARCHAR", "檔名"),
    C("content_hash", "VARCHAR", "內容雜湊（SHA-256）"),
    C("rows_received", "INTEGER", "收件列數"),
    C("rows_accepted", "INTEGER", "通過列數"),
    C("rows_rejected", "INTEGER", "退件列數"),
    C("loaded_at", "TIMESTAMPTZ", "載入時間（此版生效）"),
    C("replaced_at", "TIMESTAMPTZ", "被取代時間（空值：現行版）"),
), per_area=True, key=("school_year", "kind", "revision"), analysts=True)

PLAN_TABLES: tuple[Table, ...] = (SCHOOL_PLANS, TEACHER_PLANS, SCHOOL_PLANS_HISTORY, TEACHER_PLANS_HISTORY,
                                  PLAN_REVISIONS)  # the planning survey

# The planning survey's publications (created by their first publication, like the monthly stat_*):
# long tables keyed by (school_year, as_of); '*' marks a total.
_PLAN_KEY = (C("school_year", "INTEGER", "發布學年度（民國）"), C("as_of", "TIMESTAMPTZ", "發布時點（資料截至）"))
STAT_PLAN_TABLES: tuple[Table, ...] = (
    _published("stat_plan_publications", "規劃統計發布紀錄（每次發布一筆；同學年度最新者為現行版）", (
        *_PLAN_KEY,
        C("revision", "INTEGER", "版次（同學年度第幾次發布）"),
        C("school_upload_id", "VARCHAR", "所用學校規劃版之傳報編號"),
        C("teacher_upload_id", "VARCHAR", "所用教師規劃版之傳報編號"),
        C("schools", "BIGINT", "填報學校數"),
        C("teachers", "BIGINT", "填報教師數（不重複）"),
        C("planned_hours", "DECIMAL(18,1)", "教師規劃時數合計"),
        C("granted_hours", "DECIMAL(18,1)", "該學年度核發時數合計（已完成）"),
        C("coverage_ratio", "DOUBLE PRECISION", "涵蓋率（核發時數 ÷ 規劃時數）"),
        C("files", "VARCHAR", "輸出檔案（JSON 陣列）"),
    )),
    _published("stat_plan_participation", "各學年度參與縣市資料：縣市 × 學年度之填報學校數與教師數（* 為合計）", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（學校所在縣市；未知：不在學校名冊；* 全國）"),
        C("plan_year", "INTEGER", "填報學年度"),
        C("schools", "BIGINT", "參與學校數（所）"),
        C("teachers", "BIGINT", "參與教師數（人，不重複）"),
    )),
    _published("stat_plan_demand",
               "填報需求報告：縣市 × 學校教育階段之填報學校數、教師數、每位教師規劃時數（* 為合計）", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（* 全國）"),
        C("school_level", "VARCHAR", "學校教育階段（* 全部）"),
        C("schools", "BIGINT", "填報學校數"),
        C("teachers", "BIGINT", "填報教師數（不重複）"),
        C("planned_hours", "DECIMAL(18,1)", "教師規劃時數合計"),
        C("hours_per_teacher", "DOUBLE PRECISION", "每位教師規劃時數"),
    )),
    _published("stat_plan_demand_domains", "填報需求報告：各研習範疇之填報教師比率", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（* 全國）"),
        C("school_level", "VARCHAR", "學校教育階段（* 全部）"),
        C("domain", "VARCHAR", "研習範疇（A–F）"),
        C("teachers", "BIGINT", "選填此範疇之教師數"),
        C("share", "DOUBLE PRECISION", "占填報教師數之比率"),
    )),
    _published("stat_plan_demand_choices", "填報需求報告：進修方式、時間、地點、階層、實施方式之分布（學校與教師）", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（* 全國）"),
        C("school_level", "VARCHAR", "學校教育階段（* 全部）"),
        C("who", "VARCHAR", "填報者（school 學校、teacher 教師）"),
        C("dimension", "VARCHAR", "項目（modes、times、places、tiers、deliveries）"),
        C("code", "VARCHAR", "代碼"),
        C("mentions", "BIGINT", "勾選次數（每列每代碼一次）"),
        C("share", "DOUBLE PRECISION", "占該項目勾選總次數之比率"),
    )),
    _published("stat_plan_supply", "供需對照：縣市 × 研習範疇之需求（規劃）與供給（研習）；缺口大者在前", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（教師服務學校縣市；* 全國）"),
        C("domain", "VARCHAR", "研習範疇（A–F；* 全部）"),
        C("teachers", "BIGINT", "規劃此範疇之教師數"),
        C("planned_hours", "DECIMAL(18,1)", "規劃時數（需求）"),
        C("courses", "BIGINT", "該縣市教師完成之此範疇課程數（不重複）"),
        C("course_hours", "DECIMAL(18,1)", "上述課程之時數合計"),
        C("person_times", "BIGINT", "該縣市教師研習人次（已完成）"),
        C("granted_hours", "DECIMAL(18,1)", "核發時數（供給）"),
        C("coverage_ratio", "DOUBLE PRECISION", "涵蓋率（核發時數 ÷ 規劃時數；無規劃為空）"),
        C("gap_hours", "DECIMAL(18,1)", "缺口時數（規劃時數 − 核發時數）"),
    )),
    _published("stat_plan_supply_mix", "供需對照：研習時段與實施方式之需求比率與供給比率", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（* 全國）"),
        C("domain", "VARCHAR", "研習範疇（* 全部）"),
        C("dimension", "VARCHAR", "項目（time_slot 研習時段、delivery 實施方式）"),
        C("code", "VARCHAR", "代碼"),
        C("demand_share", "DOUBLE PRECISION", "需求比率（教師規劃勾選次數占比）"),
        C("supply_share", "DOUBLE PRECISION", "供給比率（研習人次占比）"),
    )),
    _published("stat_plan_fulfilment", "規劃落實：規劃某範疇之教師中，於該學年度完成至少一門該範疇課程之比率", (
        *_PLAN_KEY,
        C("county_code", "VARCHAR", "縣市代碼（教師規劃所填服務學校之縣市；* 全國）"),
        C("domain", "VARCHAR", "研習範疇（* 任一範疇）"),
        C("planned_teachers", "BIGINT", "規劃此範疇之教師數"),
        C("attended_teachers", "BIGINT", "其中完成至少一門此範疇課程之教師數"),
        C("share", "DOUBLE PRECISION", "落實比率"),
    )),
)


# --- the registry: every warehouse table, once ----------------------------------------------------------
TABLES: tuple[Table, ...] = (UNITS, UPLOADS, FINDINGS, COURSES, ATTENDANCE, HISTORY, ARCHIVE_EXCEPTIONS,
                             *FEED_TABLES, *CORRECTION_TABLES, *BACKFILL_TABLES, *TAG_TABLES, UPLOAD_RECEIPTS,
                             *NOTIFICATION_TABLES, WAREHOUSE_META, GATE_VERIFIED, GATE_COURSE_KEYS,
                             GATE_ATTENDANCE_KEYS, ANALYST_PENDING,
                             *REGISTER_TABLES, *REFERENCE_TABLES, *PLAN_TABLES, *VIEWS,
                             *PUBLICATION_TABLES, *STAT_PLAN_TABLES)
AREAS = {"production": "main", "testing": "testing"}


def table(name: str) -> Table:
    """The declared table named `name`."""
    for t in TABLES:
        if t.name == name:
            return t
    raise KeyError(name)


def analyst_tables() -> tuple[Table, ...]:
    """What analysts may read (production area), in the registry's order."""
    return tuple(t for t in TABLES if t.analysts)


def sql_text(text: str) -> str:
    """A text constant in SQL (comments, paths, codes named as constants where a parameter would not
    reach the zone maps)."""
    return "'" + text.replace("'", "''") + "'"


def missing_columns(existing: set[tuple[str, str, str]], tables: Iterable[Table] = TABLES) -> list[str]:
    """Additive migration: ALTER statements for declared columns an older warehouse lacks.

    `existing` holds (schema, table, column) of the open warehouse. Tables it lacks are left to
    `statements` (created whole)."""
    present = {(s, t) for s, t, _ in existing}
    out = []
    for t in tables:
        for schema in t.schemas:
            if (schema, t.name) not in present or t.view:
                continue  # created whole by CREATE TABLE (a view has no columns of its own)
            out += [f'ALTER TABLE {schema}.{t.name} ADD COLUMN "{c.name}" {c.type}'
                    for c in t.columns if (schema, t.name, c.name) not in existing]
    return out


def statements(existing: set[tuple[str, str]] | None = None, tables: Iterable[Table] | None = None) -> list[str]:
    """CREATE SCHEMA / TABLE (with comments) for the declared tables that are not in `existing`
    ((schema, table) pairs); nothing when all exist. `tables`: default every table the warehouse's
    first open creates (all but the publication tables)."""
    existing = existing or set()
    chosen = [t for t in TABLES if not t.publication] if tables is None else list(tables)
    out: list[str] = []
    schemas_used: set[str] = set()
    for t in chosen:
        for schema in t.schemas:
            if (schema, t.name) in existing:
                continue
            schemas_used.add(schema)
            cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in t.columns)
            if t.view:
                out.append(f"CREATE OR REPLACE VIEW {schema}.{t.name} AS {t.view}")
                out.append(f"COMMENT ON VIEW {schema}.{t.name} IS {sql_text(t.comment)}")
            else:
                out.append(f"CREATE TABLE IF NOT EXISTS {schema}.{t.name} (\n  {cols}\n)")
                out.append(f"COMMENT ON TABLE {schema}.{t.name} IS {sql_text(t.comment)}")
            out += [f'COMMENT ON COLUMN {schema}.{t.name}."{c.name}" IS {sql_text(c.comment)}'
                    for c in t.columns]
    for view, select in BRIDGE_VIEWS.items() if tables is None else ():  # with the warehouse's own tables
        if ("main", view.name) in existing:
            continue
        out.append(f"CREATE OR REPLACE VIEW main.{view.name} AS {select}")
        out.append(f"COMMENT ON VIEW main.{view.name} IS {sql_text(view.comment)}")
        out += [f'COMMENT ON COLUMN main.{view.name}."{c.name}" IS {sql_text(c.comment)}' for c in view.columns]
    return [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in sorted(schemas_used)] + out


def index_statements(tables: Iterable[Table] | None = None) -> list[str]:
    """PostgreSQL's indexes (DuckDB scans with zone maps, and a PRIMARY KEY there makes loads 4–8×
    slower): a unique index on each key, so PostgreSQL enforces it, and the declared look-ups the
    rules and the merge use instead of scanning tens of millions of rows per upload. Named
    `<schema>_<table>_<suffix>` for tables in both areas, `<table>_<suffix>` otherwise."""
    out = []
    for t in TABLES if tables is None else tables:
        for schema in t.schemas:
            prefix = f"{schema}_{t.name}" if t.per_area else t.name
            if t.key:
                out.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {prefix}_key ON {schema}.{t.name} "
                           f"({', '.join(t.key)})")
            out += [f"CREATE INDEX IF NOT EXISTS {prefix}_{suffix} ON {schema}.{t.name} ({', '.join(cols)})"
                    for suffix, cols in t.indexes]
    return out


def ensure(con: Any, tables: Iterable[Table]) -> None:
    """Create `tables` where missing and add the declared columns an older copy lacks, on any
    connection (the warehouse, or the statistics' in-memory DuckDB): one catalog query when all is there."""
    chosen = list(tables)
    existing = set(con.execute("""SELECT table_schema, table_name, column_name FROM information_schema.columns
        WHERE table_schema IN ('main', 'testing')""").fetchall())
    for stmt in missing_columns(existing, chosen) + statements({(s, t) for s, t, _ in existing}, chosen):
        con.execute(stmt)
