# ruff: noqa: E501  (Chinese instructions read best one per line)
"""The partners' template and the machine-readable contract, generated from the field declarations
(fields.py), the code lists (codelists.py) and the rules' words (messages.py), so they cannot drift:

- `傳報範本.xlsx`: the two sheets with label headers, input hints (a comment on each header and a
  prompt on each column), data-validation lists for the codes, a code-list sheet and an instructions
  sheet in Chinese;
- `datapackage.json`: a Frictionless Data Package with a Table Schema per record type (the canonical
  form: ISO dates, codes; the other accepted forms of §2.3 are named in each field's description);
- `transmission.xsd`: the XML shape, as shipped.

`inservice template --out DIR` writes all three.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from inservice.schemas import codelists, messages
from inservice.schemas.fields import ATTENDANCE, COURSE, RECORD_TYPES, Field, Kind, RecordType, Required
from inservice.schemas.rules import RULES

CONTRACT_FOLDER = "contract"  # under $INSERVICE_HOME, where the partner_contract asset writes them
TEMPLATE_NAME = "傳報範本.xlsx"
PACKAGE_NAME = "datapackage.json"
XSD_NAME = "transmission.xsd"
INSTRUCTIONS_SHEET = "填寫說明"
CODES_SHEET = "代碼表"
DATA_ROWS = 2000  # rows the validations cover (a workbook may hold more; they are checked on receipt)
SPEC_VERSION = "1.1"

_REQUIRED_ZH = {Required.YES: "必填", Required.NO: "選填", Required.FEEDS: "檔案選填（資料庫互傳必填）"}
_REQUIRED_EN = {Required.YES: "required", Required.NO: "optional", Required.FEEDS: "optional in files, required in feeds"}


def file_fields(rt: RecordType) -> list[Field]:
    """The columns of a file upload's sheet (is_deleted belongs to feeds only, §2.1)."""
    return [f for f in rt.fields if f.code != "is_deleted"]


def field_hint(f: Field) -> tuple[str, str]:
    """The input hint of a column: required or not, and how a value is written."""
    zh, en = messages.value_forms(f)
    return f"{_REQUIRED_ZH[f.required]}。{zh}", f"{_REQUIRED_EN[f.required]}. {en}"


# --- the code-list sheet ------------------------------------------------------------------------
def code_list_columns() -> dict[str, str]:
    """Code list name → the code column's letter on the code-list sheet (the label beside it)."""
    names = sorted({f.codelist for rt in RECORD_TYPES for f in rt.fields if f.codelist},
                   key=lambda n: ["county", "organizer_type", "class_type", "category", "delivery", "time_slot",
                                  "level", "tag"].index(n))
    return {name: get_column_letter(1 + 3 * i) for i, name in enumerate(names)}


def code_list_range(name: str) -> str:
    """The validation formula of a code column: the codes on the code-list sheet."""
    col = code_list_columns()[name]
    return f"'{CODES_SHEET}'!${col}$3:${col}${2 + len(codelists.codelist(name))}"


_LIST_TITLES = {"county": "縣市代碼", "organizer_type": "開課單位類別", "class_type": "班別性質", "category": "課程類別",
                "delivery": "實施方式", "time_slot": "研習時段", "level": "研習對象（學校教育階段）", "tag": "屬性標籤"}


def _codes_sheet(wb: Workbook, bold: Font) -> None:
    ws = wb.create_sheet(CODES_SHEET)
    for name, col in code_list_columns().items():
        c = ws[f"{col}1"]
        c.value, c.font = _LIST_TITLES[name], bold
        label_col = get_column_letter(ws[f"{col}1"].column + 1)
        ws[f"{col}2"], ws[f"{label_col}2"] = "代碼", "名稱"
        ws.column_dimensions[col].width = 8
        ws.column_dimensions[label_col].width = 24
        for i, code in enumerate(codelists.codelist(name), start=3):
            ws[f"{col}{i}"].value = code.code
            ws[f"{col}{i}"].number_format = "@"  # "1" stays the text 1, "09020" keeps its zero
            ws[f"{label_col}{i}"].value = code.label
    ws["A" + str(4 + max(len(codelists.codelist(n)) for n in code_list_columns()))].value = (
        "代碼或名稱皆可填寫；縣市舊代碼（如 10001 臺北縣）仍可接受並轉為新代碼。研習對象與屬性標籤可填多個，以 ; 分隔。")


# --- the data sheets ----------------------------------------------------------------------------
def _validation(f: Field) -> DataValidation | None:
    """The Excel validation of a column: a list for a code, yes/no, a range for a number, a length for text."""
    zh, _ = field_hint(f)
    prompt = dict(promptTitle=f.label[:32], prompt=zh[:255], showInputMessage=True)
    if f.kind is Kind.CODE:
        return DataValidation(type="list", formula1=code_list_range(f.list_name), allow_blank=True,
                              showErrorMessage=True, errorTitle="代碼不在代碼表中",
                              error="請由下拉清單選擇代碼（或填寫代碼表中的名稱）", errorStyle="warning", **prompt)
    if f.kind is Kind.YESNO:
        return DataValidation(type="list", formula1='"是,否"', allow_blank=True, showErrorMessage=True,
                              error="請填 是 或 否（Y／N、1／0 亦可）", errorStyle="warning", **prompt)
    if f.kind is Kind.NUMBER:
        return DataValidation(type="decimal", operator="between", formula1="0", formula2="999", allow_blank=True,
                              showErrorMessage=True, error=messages.NUMBER_FORMS[0][:255], errorStyle="warning",
                              **prompt)
    if f.kind is Kind.TEXT and f.max_len and not f.personal:
        return DataValidation(type="textLength", operator="lessThanOrEqual", formula1=str(f.max_len),
                              allow_blank=True, showErrorMessage=True, error=f"最多 {f.max_len} 字",
                              errorStyle="warning", **prompt)
    return DataValidation(type=None, allow_blank=True, **prompt)  # a prompt only (dates, lists, IDs)


def _data_sheet(wb: Workbook, rt: RecordType, bold: Font) -> None:
    ws = wb.create_sheet(rt.sheet_names[0])
    fill = PatternFill("solid", fgColor="DDEBF7")
    for i, f in enumerate(file_fields(rt), start=1):
        col = get_column_letter(i)
        cell = ws.cell(row=1, column=i, value=f.label)
        cell.font, cell.fill = bold, fill
        zh, en = field_hint(f)
        cell.comment = Comment(f"{f.label}（{f.code}）\n{zh}\n\n{en}", "inservice", width=320, height=200)
        ws.column_dimensions[col].width = max(10, min(40, 2 * len(f.label) + 6))
        if f.kind in (Kind.TEXT, Kind.CODE, Kind.CODES, Kind.NATIONAL_ID, Kind.DATE):
            for r in range(2, DATA_ROWS + 2):  # text cells: codes keep leading zeros, ROC dates stay as typed
                ws.cell(row=r, column=i).number_format = "@"
        dv = _validation(f)
        if dv is not None:
            dv.add(f"{col}2:{col}{DATA_ROWS + 1}")
            ws.add_data_validation(dv)
    ws.freeze_panes = "A2"


def _instructions_sheet(wb: Workbook, bold: Font) -> None:
    ws = wb.active
    ws.title = INSTRUCTIONS_SHEET
    ws.column_dimensions["A"].width = 22
    ws.column_dimensions["B"].width = 16
    ws.column_dimensions["C"].width = 14
    ws.column_dimensions["D"].width = 90
    wrap = Alignment(wrap_text=True, vertical="top")
    lines: list[tuple] = [
        ("全國教師在職進修資訊網 傳報範本", ),
        (f"依資料傳報清單暨資料格式 {SPEC_VERSION} 版產生。", ),
        ("", ),
        ("一、檔案", ),
        ("檔名", "", "", messages.expected_of("F03")[0]),
        ("工作表", "", "", "課程、研習名單 兩個工作表；第 1 列為欄位名稱（請勿更改），第 2 列起每列一筆資料；本說明與代碼表工作表可保留或刪除。"),
        ("傳送時間", "", "", "每月 5 日（含）前傳送上個月結案的課程及其研習名單；逾期仍會處理，但記為逾期。"),
        ("傳送前自我檢核", "", "", "可先以 inservice check 檔名 檢核，會產生與正式傳送相同的回執，不會載入任何資料。"),
        ("", ),
        ("二、欄位", "欄位代碼", "必填", "填寫方式"),
    ]
    for rt in (COURSE, ATTENDANCE):
        lines.append((f"【{rt.label}】工作表", ))
        for f in file_fields(rt):
            zh, _ = messages.value_forms(f)
            lines.append((f.label, f.code, _REQUIRED_ZH[f.required], zh))
    lines += [("", ), ("三、常見退件原因", )]
    for rule in ("C05", "C06", "C09", "C10", "A04", "A06", "A07"):
        hint = messages.expected_of(rule)
        lines.append((rule, RULES[rule].zh, "", hint[0]))
    for i, line in enumerate(lines, start=1):
        for j, value in enumerate(line, start=1):
            c = ws.cell(row=i, column=j, value=value)
            c.alignment = wrap
            if len(line) == 1 or line[0] == "二、欄位":
                c.font = bold


def template_workbook() -> Workbook:
    wb = Workbook()
    bold = Font(bold=True)
    _instructions_sheet(wb, bold)
    _data_sheet(wb, COURSE, bold)
    _data_sheet(wb, ATTENDANCE, bold)
    _codes_sheet(wb, bold)
    return wb


# --- the Frictionless description ----------------------------------------------------------------
_TRUE = ["Y", "y", "是", "1", "true", "TRUE", "True", "yes"]
_FALSE = ["N", "n", "否", "0", "false", "FALSE", "False", "no"]


def _table_field(f: Field) -> dict:
    zh, en = messages.value_forms(f)
    out: dict = {"name": f.code, "title": f.label, "description": f"{f.label_en}. {en}. {zh}"}
    constraints: dict = {}
    if f.required is Required.YES:
        constraints["required"] = True
    if f.kind is Kind.DATE:
        out.update(type="date", format="default")
    elif f.kind is Kind.DATETIME:
        out.update(type="datetime", format="any")
    elif f.kind is Kind.NUMBER:
        out.update(type="number")
        constraints.update(minimum=0, maximum=999)
    elif f.kind is Kind.YESNO:
        out.update(type="boolean", trueValues=_TRUE, falseValues=_FALSE)
    elif f.kind is Kind.CODE:
        out.update(type="string")
        constraints["enum"] = [c.code for c in codelists.codelist(f.list_name)]
    elif f.kind is Kind.CODES:
        codes = "|".join(re.escape(c.code) for c in codelists.codelist(f.list_name))
        out.update(type="string")
        constraints["pattern"] = f"(?:{codes})(?:;(?:{codes}))*"
    elif f.kind is Kind.NATIONAL_ID:
        out.update(type="string")
        constraints["pattern"] = "[A-Z](?:[1289][0-9]{8}|[A-D][0-9]{8})"
    else:
        out.update(type="string")
        if f.pattern:
            constraints["pattern"] = f.pattern
        if f.max_len:
            constraints["maxLength"] = f.max_len
    if constraints:
        out["constraints"] = constraints
    return out


def table_schema(rt: RecordType) -> dict:
    keys = ["unit_code", "course_code"] + (["national_id"] if rt is ATTENDANCE else [])
    return {"fields": [_table_field(f) for f in rt.fields], "primaryKey": keys, "missingValues": [""]}


def data_package() -> dict:
    """Both record types as resources of one Data Package (the CSV paths are where a partner's export
    of each sheet would go; the contract is the schemas)."""
    return {
        "name": "inservice-transmission",
        "title": "全國教師在職進修資訊網 資料傳報格式 Transmission format",
        "version": SPEC_VERSION,
        "description": ("Canonical form of the two record types partner units send (spec §2). Files may also use "
                        "ROC dates, labels for codes and full-width characters (§2.3): see each field's description."),
        "resources": [{
            "name": rt.feed_table, "title": rt.label, "path": f"{rt.feed_table}.csv", "format": "csv",
            "encoding": "utf-8", "profile": "tabular-data-resource", "schema": table_schema(rt),
        } for rt in RECORD_TYPES],
    }


def write_contract(out: Path) -> list[Path]:
    """The template workbook, the Data Package JSON and the XSD, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    template = out / TEMPLATE_NAME
    template_workbook().save(template)
    package = out / PACKAGE_NAME
    package.write_text(json.dumps(data_package(), ensure_ascii=False, indent=1), encoding="utf-8")
    xsd = out / XSD_NAME
    xsd.write_bytes(resources.files("inservice.schemas").joinpath("data/transmission.xsd").read_bytes())
    return [template, package, xsd]
