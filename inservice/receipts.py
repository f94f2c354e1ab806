"""Receipts (回執): a JSON file and an Excel workbook per processed upload, in the unit's outbox.

Teachers appear only masked (`A12*****89`); names never appear.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.compute as pc
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.styles import Font

from inservice.config import TAIPEI
from inservice.schemas.fields import RECORD_TYPES
from inservice.schemas.messages import contact_lines, next_steps, resend_name
from inservice.schemas.plans import RECORD_TYPES as PLAN_RECORD_TYPES
from inservice.validations.normalize import printable_text


@dataclass
class Counts:
    """Rows of one record type as the receipt counts them."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0

    @classmethod
    def of(cls, table: pa.Table | None) -> Counts:
        """A validated table's counts (its `_ok` column says which rows were accepted)."""
        if table is None:
            return cls()
        accepted = int(pc.sum(table["_ok"]).as_py() or 0) if table.num_rows else 0
        return cls(table.num_rows, accepted, table.num_rows - accepted)

    @classmethod
    def refused(cls, received: int) -> Counts:
        """Rows of an upload refused whole: nothing accepted."""
        return cls(received, 0, received)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.received + other.received, self.accepted + other.accepted,
                      self.rejected + other.rejected)

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "accepted": self.accepted, "rejected": self.rejected}


@dataclass
class Receipt:
    """The receipt (回執) of one upload or feed run, as the program handles it; `document()` is the JSON
    the unit receives (and the warehouse keeps), `public()` what the CLI and Dagster report."""

    file: str
    unit: str
    received_at: str  # ISO-8601 with offset
    month: str | None = None
    status: str = "refused"  # loaded | refused | duplicate | checked
    refusal: str | None = None
    on_time: bool | None = None
    courses: Counts = field(default_factory=Counts)
    attendance: Counts = field(default_factory=Counts)
    findings: list[dict] = field(default_factory=list)
    findings_total: int | None = None  # feeds: every finding, of which `findings` holds a sample
    upload_id: str | None = None
    area: str | None = None
    content_hash: str | None = None
    rerun: bool = False  # staff re-ran the upload (F08 not applied)
    re_evaluation: dict[str, str] | None = None  # a replay under the rules in force: {"of", "zh", "en"}
    restored_receipt: list[str] | None = None  # a duplicate wrote the lost receipt of the upload it repeats
    channel: str | None = None  # feeds: "db"
    feed: dict[str, Any] | None = None  # feeds: the pull (source, tables, watermarks, batches)
    # the planning survey: its export's school year and kind, and its plan rows instead of courses
    school_year: str | None = None
    kind: str | None = None
    plans: Counts | None = None
    # where it is stored on the server and what the merge did: not in the unit's document
    receipt_files: list[str] | None = None
    merge: dict[str, int] | None = None
    receipt_error: str | None = None
    # what the partner reads first (schemas.messages), and its last 24 months (partners.py)
    next_steps: list[dict] | None = None
    contact: dict | None = None
    history: list[dict] | None = None

    @property
    def received(self) -> datetime:
        return datetime.fromisoformat(self.received_at)

    def document(self, with_files: bool = False) -> dict:
        """The JSON receipt, keys in their documented order (optional ones only when set)."""
        out: dict[str, Any] = {
            "file": self.file, "unit": self.unit, "month": self.month, "status": self.status,
            "refusal": self.refusal, "received_at": self.received_at, "on_time": self.on_time,
            "courses": self.courses.as_dict(), "attendance": self.attendance.as_dict(), "findings": self.findings}
        if self.findings_total is not None:
            out["findings_total"] = self.findings_total
        out.update(upload_id=self.upload_id, area=self.area, content_hash=self.content_hash)
        if self.rerun:
            out["rerun"] = True
        if self.re_evaluation:
            out["re_evaluation"] = self.re_evaluation
        if self.plans is not None:
            out.update(school_year=self.school_year, kind=self.kind, plans=self.plans.as_dict())
        if self.restored_receipt is not None:
            out["restored_receipt"] = self.restored_receipt
        if self.channel is not None:
            out.update(channel=self.channel, feed=self.feed)
        for name in ("next_steps", "contact", "history"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if with_files and self.receipt_files is not None:
            out["receipt_files"] = self.receipt_files
        return out

    def public(self) -> dict:
        """The CLI contract's object (extra keys after the contract's ones)."""
        out = self.document(with_files=True)
        if self.merge is not None:
            out["merge"] = self.merge
        if self.receipt_error is not None:
            out["receipt_error"] = self.receipt_error
        return out


def stamp(received: datetime) -> str:
    """A receipt time in names and ids: YYYYmmddTHHMMSS, Asia/Taipei."""
    return received.astimezone(TAIPEI).strftime("%Y%m%dT%H%M%S")


NAME_BYTES = 160  # of a receipt's name taken from the file's: with stamp, counter and temp suffix < 255


def receipt_stem(file_name: str) -> str:
    """The file's name, or for a very long one its start and a hash of the whole: a receipt's name
    must fit the file system's 255 bytes, else its receipt could not be written after the load."""
    raw = file_name.encode("utf-8", "surrogateescape")
    if len(raw) <= NAME_BYTES:
        return file_name
    head = raw[:NAME_BYTES - 17].decode("utf-8", "ignore")
    return f"{head}~{hashlib.sha256(raw).hexdigest()[:16]}"


def receipt_paths(folder: Path, name: str, received: datetime, n: int = 1) -> tuple[Path, Path]:
    """`<folder>/<name>.<received YYYYmmddTHHMMSS>[-n].receipt.{json,xlsx}` (a very long name shortened):
    the one naming of every channel's receipts."""
    base = f"{receipt_stem(name)}.{stamp(received)}{'' if n == 1 else f'-{n}'}.receipt"
    return folder / f"{base}.json", folder / f"{base}.xlsx"


def free_receipt_paths(folder: Path, name: str, received: datetime,
                       taken: Callable[[Path], bool] = Path.exists) -> tuple[Path, Path]:
    """The first receipt paths not `taken` (by default: not an existing file): one pair per
    processing, never overwriting an earlier receipt."""
    n = 1
    while taken((paths := receipt_paths(folder, name, received, n))[0]):
        n += 1
    return paths


STATUS_ZH = {"loaded": "已載入", "refused": "整批退件", "duplicate": "重複傳報（未再載入）", "checked": "自我檢核"}
RECORD_ZH = {"file": "檔案", "course": "課程", "attendance": "研習名單", "school_plan": "學校規劃",
             "teacher_plan": "教師規劃"}
SEVERITY_ZH = {"error": "退件", "warning": "警告"}
FINDING_HEADERS = [("列", "Row"), ("資料", "Record"), ("欄位", "Field"), ("規則", "Rule"),
                   ("嚴重度", "Severity"), ("研習代碼", "Course code"), ("說明", "說明"),
                   ("Message", "Message")]


STALE_TEMP_SECONDS = 3600  # a staged receipt older than this belongs to a run that was killed
_STAGED = re.compile(r"^\..*\.receipt\.(?:json|xlsx)\..*\.tmp$")


def sweep_stale(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove staged receipts (`.<name>.receipt.json.<random>.tmp`) a killed run left in an outbox
    folder. By age, not by process id: the outbox may be shared by several hosts, and no ingest
    stages a receipt for an hour. Returns how many were removed."""
    limit = time.time() - older_than
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder yet, or not one
        return 0
    for entry in entries:
        if not _STAGED.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < limit:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


def summary_lines(receipt: dict) -> list[str]:
    """The receipt in short, as the `inservice` command prints it: status, counts, where its files are."""
    c, a = receipt["courses"], receipt["attendance"]
    refusal = f" {receipt['refusal']}" if receipt["refusal"] else ""
    counts = (f"plans {receipt['plans']['accepted']}/{receipt['plans']['received']} accepted" if "plans" in receipt
              else f"courses {c['accepted']}/{c['received']} accepted, attendance {a['accepted']}/{a['received']} "
                   "accepted")  # a planning survey export: its plan rows
    lines = [f"{receipt['file']}: {receipt['status']}{refusal} — {counts}, {len(receipt['findings'])} finding(s)"]
    return lines + [f"  receipt: {path}" for path in receipt.get("receipt_files", [])]


def json_text(receipt: dict) -> str:
    """The JSON receipt's text (what `write_json` writes without spilled findings)."""
    return json.dumps(receipt, ensure_ascii=False, indent=1, default=str)


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


Staged = list[tuple[Path, Path]]


class SpilledFindings(Protocol):
    """Findings kept on disk instead of in `receipt["findings"]` (a large feed's): copied into the
    JSON file as its findings array, iterated for the workbook; never all in memory at once."""

    def __iter__(self) -> Iterator[dict]: ...

    def write_json_array(self, fh: BinaryIO) -> None: ...


_FINDINGS_MARK = "\x00findings\x00"  # stands in for the array; no finding text holds NULs


def write_json(receipt: dict, fh: BinaryIO, findings: SpilledFindings | None = None) -> None:
    """The JSON receipt; with `findings`, its findings array is streamed from them."""
    if findings is None:
        fh.write(json_text(receipt).encode())
        return
    text = json.dumps({**receipt, "findings": _FINDINGS_MARK}, ensure_ascii=False, indent=1, default=str)
    head, tail = text.split(json.dumps(_FINDINGS_MARK), 1)
    fh.write(head.encode())
    findings.write_json_array(fh)
    fh.write(tail.encode())


def stage_receipt(receipt: dict, json_path: Path, xlsx_path: Path,
                  workbook: Callable[[dict], Workbook] | None = None,
                  findings: SpilledFindings | None = None) -> Staged:
    """Write both files under temporary names beside their final ones; `publish` renames them.
    `workbook` builds the Excel side (uploads' by default; corrections bring their own).
    `findings`, when given, are the receipt's findings (`receipt["findings"]` is then a sample)."""
    staged: Staged = []
    try:
        tmp = _temp_beside(json_path)
        staged.append((tmp, json_path))
        with tmp.open("wb") as fh:
            write_json(receipt, fh, findings)
        tmp = _temp_beside(xlsx_path)
        staged.append((tmp, xlsx_path))
        if workbook is None and findings is None:
            _save_upload_workbook(receipt, tmp)
        else:
            (workbook or _workbook)(receipt if findings is None else {**receipt, "findings": findings}).save(tmp)
    except BaseException:
        discard(staged)
        raise
    return staged


def publish(staged: Staged) -> None:
    """Atomic renames: a reader never sees half a receipt."""
    for tmp, final in staged:
        os.replace(tmp, final)


def discard(staged: Staged) -> None:
    for tmp, _ in staged:
        tmp.unlink(missing_ok=True)


def write_receipt(receipt: dict, json_path: Path, xlsx_path: Path) -> None:
    publish(stage_receipt(receipt, json_path, xlsx_path))


def _save_upload_workbook(receipt: dict, path: Path) -> None:
    """The upload receipt's workbook. openpyxl spends ~8 µs a cell (a large upload's thousands of
    findings took longer than its merge), so openpyxl writes the workbook with the findings sheet's
    header only and the finding rows are spliced in as the same XML it writes for such cells. A
    value openpyxl would treat specially (formula, error code, control character, over-long or
    blank text) sends the whole workbook the plain openpyxl way."""
    rows = [_finding_row(f) for f in receipt["findings"]]
    cells = [_cell_xml(v) for r in rows for v in r]
    if any(c is False for c in cells):
        _workbook(receipt).save(path)
        return
    _workbook({**receipt, "findings": [], "next_steps": _steps(receipt)}).save(path)
    xml = []
    width = len(FINDING_HEADERS)
    for i, start in enumerate(range(0, len(cells), width), start=2):
        xml.append(f'<row r="{i}">')
        xml += [c.format(f"{col}{i}") for col, c in zip(_COLUMNS, cells[start:start + width], strict=True)
                if isinstance(c, str)]  # None: no cell (False was ruled out above)
        xml.append("</row>")
    with zipfile.ZipFile(path) as zf:
        parts = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in parts:
            if info.filename == _FINDINGS_PART:
                head, end, tail = data.decode("utf-8").rpartition("</sheetData>")
                data = (head + "".join(xml) + end + tail).encode("utf-8")
            zf.writestr(info, data)


_FINDINGS_PART = "xl/worksheets/sheet2.xml"  # the second sheet openpyxl writes: the findings
_COLUMNS = "ABCDEFGH"
_PLAIN_TEXT = re.compile(r"[^\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]+")  # else the openpyxl way


_LABELS = {(rt.name, f.code): f.label for rt in (*RECORD_TYPES, *PLAN_RECORD_TYPES.values()) for f in rt.fields}


def field_shown(record: str, code: str | None) -> str | None:
    """The 欄位 column: the field's Chinese label and its code (研習時數 hours)."""
    if code is None:
        return None
    label = _LABELS.get((record, code)) or next((lb for (_, c), lb in _LABELS.items() if c == code), None)
    return f"{label} {code}" if label and code else code


def _finding_row(f: dict) -> list:
    return [f["row"], RECORD_ZH.get(f["record"], f["record"]), field_shown(f["record"], f["field"]), f["rule"],
            SEVERITY_ZH.get(f["severity"], f["severity"]), f["course_code"], f["message_zh"], f["message_en"]]


def _cell_xml(value: object) -> str | None | bool:
    """The cell's XML as openpyxl writes it (`{}` for the reference), None for no cell, False for a
    value it treats specially."""
    if value is None:
        return None
    if type(value) is int:
        return f'<c r="{{}}" t="n"><v>{value}</v></c>'
    if not isinstance(value, str) or not _PLAIN_TEXT.fullmatch(value) or len(value) > 32767 \
            or value.startswith("=") or value in ERROR_CODES:
        return False
    space = ' xml:space="preserve"' if value != value.strip() else ""
    text = escape(value).replace("{", "{{").replace("}", "}}")
    return f'<c r="{{}}" t="inlineStr"><is><t{space}>{text}</t></is></c>'


def _steps(receipt: dict) -> list[dict]:
    """What happened and what next (ingest puts them in the receipt; a receipt from elsewhere gets them here)."""
    if receipt.get("next_steps"):
        return receipt["next_steps"]
    findings = receipt["findings"] if isinstance(receipt["findings"], list) else []  # a feed's spill: not counted
    return [{"zh": z, "en": e} for z, e in next_steps({**receipt, "findings": findings})]


def _workbook(receipt: dict) -> Workbook:
    wb = Workbook(write_only=True)
    summary = wb.create_sheet("摘要 Summary")
    bold = Font(bold=True)
    summary.column_dimensions["A"].width = 28
    summary.column_dimensions["B"].width = 48
    rows = [
        ("檔名 File", receipt["file"]),
        ("單位 Unit", receipt["unit"]),
        ("資料月份 Month", receipt["month"]),
        ("狀態 Status", f"{STATUS_ZH.get(receipt['status'], receipt['status'])} {receipt['status']}"),
        ("整批退件規則 Refusal", receipt["refusal"] or "—"),
        ("收件時間 Received at", receipt["received_at"]),
        ("準時 On time", {True: "是 yes", False: "否（逾期）late", None: "—"}[receipt["on_time"]]),
        ("資料區 Area", receipt.get("area") or "—"),
        ("傳報編號 Upload", receipt.get("upload_id") or "—"),
    ]
    parts: tuple[tuple[str, str], ...] = (("courses", "課程"), ("attendance", "研習名單"))
    if "plans" in receipt:  # a planning survey export: its school year, kind and rows instead
        rows[2] = ("學年度 School year", receipt.get("school_year") or "—")
        rows.insert(3, ("類別 Kind", {"school": "學校規劃 school", "teacher": "教師規劃 teacher"}.get(
            receipt.get("kind") or "", "—")))
        parts = (("plans", "規劃"),)
    for part, zh in parts:
        c = receipt[part]
        rows.append((f"{zh} 收件/通過/退件 {part}", f"{c['received']} / {c['accepted']} / {c['rejected']}"))
    if receipt.get("re_evaluation"):  # a replay under the rules in force (replay.py)
        ev = receipt["re_evaluation"]
        rows.append(("重新檢核 Re-evaluation", f"{ev['zh']} / {ev['en']}"))
    if receipt.get("area") == "testing":
        rows.append(("說明 Note", "測試單位：資料僅載入測試版資料庫 testing unit: loaded into the test area only"))
    steps = _steps(receipt)
    rows.append(("", ""))
    rows += [("處理結果與下一步 What happened, what next" if i == 0 else "", f"{s['zh']}\n{s['en']}")
             for i, s in enumerate(steps)]
    resend = resend_name(receipt)
    rows.append(("重傳檔名 File name to resend", resend or "—"))
    contact = receipt.get("contact") or {}
    rows += [("聯絡窗口 Contact", f"{zh}\n{en}")
             for zh, en in contact_lines(contact.get("phone"), contact.get("email"))]
    for label, value in rows:
        summary.append(cells(summary, [label, value]))
    findings = wb.create_sheet("檢核結果 Findings")
    widths = [8, 12, 16, 8, 10, 18, 60, 60]
    for i, w in enumerate(widths):
        findings.column_dimensions[chr(ord("A") + i)].width = w
    findings.freeze_panes = "A2"
    header = []
    for zh, en in FINDING_HEADERS:
        cell = WriteOnlyCell(findings, value=f"{zh} {en}" if zh != en else zh)
        cell.font = bold
        header.append(cell)
    findings.append(header)
    for f in receipt["findings"]:
        findings.append(cells(findings, _finding_row(f)))
    if receipt.get("history"):
        _history_sheet(wb, receipt["history"], bold)
    return wb


HISTORY_HEADERS = [("資料月份", "Month"), ("傳報次數", "Uploads"), ("載入", "Loaded"), ("整批退件", "Refused"),
                   ("重複", "Duplicate"), ("退件列數", "Rows rejected"), ("到件", "Arrival"),
                   ("退件規則（次數）", "Errors by rule")]


def rules_text(rules: dict[str, int]) -> str:
    """Errors by rule as the history shows them: C05×1、F04×1."""
    return "、".join(f"{r}×{n}" for r, n in rules.items()) or "—"


def _history_sheet(wb: Workbook, history: list[dict], bold: Font) -> None:
    """The unit's last 24 data months, newest first (partners.py builds them)."""
    sheet = wb.create_sheet("歷程 History")
    for i, w in enumerate([12, 10, 8, 10, 8, 12, 20, 50]):
        sheet.column_dimensions[chr(ord("A") + i)].width = w
    sheet.freeze_panes = "A2"
    header = []
    for zh, en in HISTORY_HEADERS:
        cell = WriteOnlyCell(sheet, value=f"{zh} {en}")
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    for m in reversed(history):
        sheet.append([m["month"], m["uploads"], m["loaded"], m["refused"], m["duplicate"], m["rows_rejected"],
                      m["arrival"], rules_text(m["rules"])])


def cells(sheet: object, values: list) -> list:
    """A row's values for a write-only `sheet`, as a receipt shows them: control characters as U+FFFD
    (openpyxl refuses them; a file name or a correction's value may hold one), and text that starts
    with `=` as text, never a formula (a course code `=HYPERLINK(…)` would run in the unit's Excel)."""
    out = []
    for value in values:
        if isinstance(value, str):
            value = printable_text(value)
            if value.startswith("="):
                cell = WriteOnlyCell(sheet, value=value)
                cell.data_type = "s"
                value = cell
        out.append(value)
    return out
