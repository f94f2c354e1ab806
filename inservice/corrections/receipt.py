"""The correction receipt: JSON + Excel in outbox/_corrections/, staged and published like upload
receipts (inservice/receipts.py). National IDs appear masked only; names never appear."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from inservice.corrections.reasons import REASONS, STATUS_ZH
from inservice.receipts import Staged, cells, stage_receipt

CHANGE_HEADERS = [("列", "Row"), ("單位代碼", "Unit"), ("研習代碼", "Course"), ("修改欄位", "Field"),
                  ("原內容", "Original"), ("修改後內容", "New"), ("核定機關", "Authority"), ("核定文號", "Letter"),
                  ("結果", "Result"), ("原因", "Reason"), ("說明", "Message (zh)"), ("英文說明", "Message (en)")]
WIDTHS = [6, 10, 14, 18, 24, 24, 16, 26, 14, 20, 60, 60]


@dataclass
class RowCounts:
    received: int = 0
    applied: int = 0
    refused: int = 0
    already_applied: int = 0


@dataclass
class WorkbookReceipt:
    """The receipt of one correction workbook; `document()` is its JSON (and what the CLI prints)."""

    file: str
    received_at: str  # ISO-8601 with offset
    content_hash: str
    receipt_files: list[str]
    status: str = "processed"  # processed | duplicate | refused (whole)
    refusal: str | None = None
    sheet: str | None = None
    rows: RowCounts = dataclasses.field(default_factory=RowCounts)
    changes: list[dict] = dataclasses.field(default_factory=list)  # one Decision.public() per row
    notes: list[str] = dataclasses.field(default_factory=list)

    def count(self) -> None:
        """The rows' counts, from their decisions."""
        statuses = [c["status"] for c in self.changes]
        self.rows = RowCounts(len(statuses), statuses.count("applied"), statuses.count("refused"),
                              statuses.count("already_applied"))

    def document(self) -> dict:
        return {"file": self.file, "kind": "correction", "status": self.status, "refusal": self.refusal,
                "received_at": self.received_at, "content_hash": self.content_hash, "sheet": self.sheet,
                "rows": dataclasses.asdict(self.rows), "changes": self.changes, "notes": self.notes,
                "receipt_files": self.receipt_files}


def stage(receipt: WorkbookReceipt, json_path: Path, xlsx_path: Path) -> Staged:
    return stage_receipt(receipt.document(), json_path, xlsx_path, workbook=_workbook)


def _workbook(receipt: dict) -> Workbook:
    wb = Workbook(write_only=True)
    bold = Font(bold=True)
    summary = wb.create_sheet("摘要 Summary")
    summary.column_dimensions["A"].width = 28
    summary.column_dimensions["B"].width = 70
    status = receipt["status"]
    zh = STATUS_ZH["refused_whole" if status == "refused" else status]
    rows = receipt["rows"]
    for label, value in [
        ("檔名 File", receipt["file"]),
        ("類別 Kind", "修改已結案課程內容申請表 correction workbook"),
        ("狀態 Status", f"{zh} {status}"),
        ("整份退件原因 Refusal", receipt["refusal"] or "—"),
        ("收件時間 Received at", receipt["received_at"]),
        ("內容雜湊 Content hash", receipt["content_hash"]),
        ("申請/已更正/不予更正/先前已更正 rows", f"{rows['received']} / {rows['applied']} / {rows['refused']} / "
                                       f"{rows['already_applied']}"),
        *(("說明 Note", n) for n in receipt["notes"]),
    ]:
        summary.append(cells(summary, [label, value]))
    sheet = wb.create_sheet("更正結果 Changes")
    for i, w in enumerate(WIDTHS):
        sheet.column_dimensions[chr(ord("A") + i)].width = w
    sheet.freeze_panes = "A2"
    header = []
    for zh_h, en_h in CHANGE_HEADERS:
        cell = WriteOnlyCell(sheet, value=zh_h if zh_h == en_h else f"{zh_h} {en_h}")
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    for c in receipt["changes"]:
        reason = f"{c['reason']} {REASONS[c['reason']][0]}" if c["reason"] else ""
        warn = "".join(f"\n警告 {w}" for w in c["warnings"])
        sheet.append(cells(sheet, [c["row"], c["unit_code"], c["course_code"], c["field"], c["original"], c["new"],
                            c["authority"], c["letter_no"], f"{STATUS_ZH[c['status']]} {c['status']}", reason,
                            c["message_zh"] + warn, c["message_en"]]))
    return wb
