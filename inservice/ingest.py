"""One upload from inbox to warehouse rows and a receipt — the plain-Python core Dagster drives.

Whole-upload checks run in the order of spec §5 (F02, F03, F05, F06, F04, F08, F09, F01, F07,
F04) and the first failure refuses the upload; then row rules, then one atomic merge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from inservice.config import TAIPEI, Settings
from inservice.loaders import FILE_EXTENSIONS, RawUpload, UploadRefused, reader_for
from inservice.loaders.excel import read_excel
from inservice.loaders.limits import check_limits
from inservice.receipts import discard, json_text, publish, stage_receipt, sweep_stale
from inservice.schemas.fields import ATTENDANCE, COURSE, UNIT_CODE
from inservice.validations.engine import Context, Validated, validate
from inservice.validations.findings import SCHEMA as FINDINGS_SCHEMA
from inservice.validations.findings import from_dicts as findings_from_dicts
from inservice.validations.national_id import IN_TEXT
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Unit, Warehouse, failpoint

LOG = logging.getLogger("inservice.ingest")

# [0-9], not \d: "２０１７" or "٢٠١٧" are digits to Python's \d but no data month
FILE_NAME = re.compile(
    rf"^(?P<unit>{UNIT_CODE})_(?P<year>[0-9]{{4}})(?P<month>[0-9]{{2}})(?:_(?P<n>[1-9][0-9]*))?\.(?P<ext>[A-Za-z]+)$")
YEARS = range(1912, 9999)  # ROC year 1 on; the last month's deadline must be a date


@dataclass(frozen=True)
class FileName:
    unit: str
    month: str  # "YYYY-MM"


def parse_file_name(name: str) -> FileName:
    m = FILE_NAME.match(name)
    if not m or m["ext"].lower() not in {e[1:] for e in FILE_EXTENSIONS} or not 1 <= int(m["month"]) <= 12 \
            or int(m["year"]) not in YEARS:
        raise UploadRefused("F03", f"檔名「{name}」不符 <單位代碼>_<YYYYMM>[_<n>].<副檔名>",
                            f"file name '{name}' is not <unit_code>_<YYYYMM>[_<n>].<ext>")
    return FileName(m["unit"], f"{m['year']}-{m['month']}")


def deadline(month: str) -> datetime:
    """A data month's file is on time until 23:59:59 Asia/Taipei on the 5th of the next month."""
    y, m = (int(x) for x in month.split("-"))
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return datetime.combine(date(ny, nm, 5), time(23, 59, 59), TAIPEI)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_received_at(value: datetime | str | None) -> datetime:
    """ISO-8601; a value without offset is Asia/Taipei wall time."""
    if value is None:
        return datetime.now(TAIPEI)
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt if dt.tzinfo else dt.replace(tzinfo=TAIPEI)


def _counts(table: pa.Table | None) -> dict:
    if table is None:
        return {"received": 0, "accepted": 0, "rejected": 0}
    accepted = int(pc.sum(table["_ok"]).as_py() or 0) if table.num_rows else 0
    return {"received": table.num_rows, "accepted": accepted, "rejected": table.num_rows - accepted}


def _unit_rows_refusal(raw: RawUpload, unit: str) -> tuple[UploadRefused, list[dict]] | None:
    """F04 (rows): a row's unit_code is not the sending unit. Missing codes are C01/A01 instead."""
    from inservice.validations.normalize import fold

    offending: list[dict] = []
    for rt, table in ((COURSE, raw.courses), (ATTENDANCE, raw.attendance)):
        codes = fold(table["unit_code"].combine_chunks())
        bad = pc.fill_null(pc.not_equal(codes, unit), False)
        rows = pc.filter(table["_row"].combine_chunks(), bad).to_pylist()
        values = pc.filter(codes, bad).to_pylist()
        course_codes = pc.filter(table["course_code"].combine_chunks(), bad).to_pylist()
        offending += [{
            "record": rt.name, "row": r, "field": "unit_code", "rule": "F04", "severity": "error",
            "course_code": c, "message_zh": f"傳報單位不符：單位代碼「{v}」不是傳報單位 {unit}",
            "message_en": f"the data is not the sending unit's: unit_code '{v}' is not {unit}",
        } for r, v, c in zip(rows, values, course_codes, strict=True)]
    if not offending:
        return None
    return UploadRefused("F04", f"{len(offending)} 列的單位代碼不是 {unit}",
                         f"{len(offending)} row(s) carry a unit_code other than {unit}"), offending


def _refuse_unit_rows(raw: RawUpload, unit: str) -> None:
    """F04 (rows), before any row rule: the whole upload is refused."""
    rows_refusal = _unit_rows_refusal(raw, unit)
    if rows_refusal:
        refusal, offending = rows_refusal
        refusal.findings = offending
        raise refusal


def registered_unit(warehouse: Warehouse, code: str) -> Unit:
    """F05 unknown unit, F06 sealed unit — for every channel."""
    unit = warehouse.unit(code)
    if unit is None:
        raise UploadRefused("F05", f"單位代碼 {code} 未登錄", f"unit {code} is not registered")
    if unit.state == "sealed":
        raise UploadRefused("F06", f"單位 {code} 已封存，須重新申請", f"unit {code} is sealed; it must re-apply")
    return unit


class _LostRace(Exception):
    """Inside the writer's lock, the same bytes turned out to be loaded meanwhile (a concurrent
    ingest of the same file committed first): this upload is a duplicate after all."""

    def __init__(self, earlier: dict) -> None:
        super().__init__(earlier["upload_id"])
        self.earlier = earlier


class Ingestor:
    """Processes files for one warehouse. `load=False` is the self-check: same receipt, no writes."""

    def __init__(self, settings: Settings, warehouse: Warehouse | None, load: bool = True) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.load = load
        # a self-check without a warehouse compares nothing across uploads: an ephemeral key will do,
        # and nothing is written on the unit's machine
        # and with one, the key must be the one it was loaded with (checked before anything is written)
        key = (warehouse_key(settings.home, warehouse, writable=load) if warehouse is not None
               else secrets.token_bytes(32))
        self.pseudonymiser = Pseudonymiser(key)
        self._swept: set[Path] = set()  # outbox folders cleared of killed runs' staged receipts

    def ingest(self, path: Path, received_at: datetime | str | None = None, unit: str | None = None,
               rerun: bool = False) -> dict:
        """`rerun=True`: staff re-run an upload explicitly (e.g. after an archive exception was
        registered): F08 is not applied (the earlier load was partial), archive exceptions are those in
        force on the day of the re-run, and the upload id is marked `-rerun<time>`.

        Everything belongs to the sender, the inbox's unit (`unit`, else the file's folder): its
        receipt in outbox/<unit>/, its `uploads` row (every outcome: loaded, refused — F01 to F09 —
        and duplicate). A duplicate (F08) of an upload whose receipt files are gone writes them again
        from the warehouse's copy (`restored_receipt`). When the receipt cannot be written (outbox
        full, not writable), the rows stay committed and `receipt_error` says why."""
        path = Path(path)
        received = as_received_at(received_at)
        # the folder it sits in, as named (not where a link points; resolving a link loop raises)
        inbox_unit = unit or Path(os.path.abspath(path)).parent.name
        receipt = {
            "file": path.name, "unit": inbox_unit, "month": None, "status": "refused", "refusal": None,
            "received_at": received.isoformat(), "on_time": None,
            "courses": _counts(None), "attendance": _counts(None), "findings": [],
            "upload_id": None, "area": None, "content_hash": None,
        }
        if rerun:
            receipt["rerun"] = True
        validated: Validated | None = None
        findings: pa.Table = FINDINGS_SCHEMA.empty_table()
        found: dict = {}  # "unit": the sender's registration; "earlier": the upload an F08 repeats
        try:
            validated = self._process(path, received, inbox_unit, receipt, found, rerun)
            findings = validated.findings
            receipt["status"] = "loaded" if self.load else "checked"
        except UploadRefused as refusal:
            findings, validated = _refused(receipt, refusal)
        _set_counts(receipt, findings, validated)
        if not self.load:
            return receipt
        self._deliver(receipt, findings, validated, found, received, rerun)
        return receipt

    def _process(self, path: Path, received: datetime, inbox_unit: str, receipt: dict,
                 found: dict, rerun: bool = False) -> Validated:
        if self.warehouse is not None:  # the sender, whatever the file says: its row and area
            sender = self.warehouse.unit(inbox_unit)
            if sender is not None:
                found["unit"] = sender
                receipt["area"] = sender.area
        if not path.is_file():  # gone, a folder, a pipe (reading it would wait forever), a device, a link loop
            raise UploadRefused("F01", f"「{path.name}」不存在或不是一般檔案",
                                f"'{path.name}' is missing or not a regular file")
        ext = path.suffix.lower()
        if ext not in FILE_EXTENSIONS:
            raise UploadRefused("F02", f"不支援的副檔名「{path.suffix}」", f"unknown format '{path.suffix}'")
        name = parse_file_name(path.name)
        receipt["month"] = name.month
        receipt["on_time"] = received <= deadline(name.month)
        received_month = f"{received.astimezone(TAIPEI):%Y-%m}"
        if name.month > received_month:  # spec 1.1: a month not yet begun (or not yet over) names no data
            raise UploadRefused("F03", f"檔名的資料月份 {name.month} 晚於收件月份 {received_month}",
                                f"the file name's data month {name.month} is after the month received, "
                                f"{received_month}")
        unit_row = self._unit(name.unit)
        if inbox_unit != name.unit:
            raise UploadRefused("F04", f"檔案位於 {inbox_unit} 的收件匣，檔名卻屬於 {name.unit}",
                                f"the file sits in {inbox_unit}'s inbox but is named for {name.unit}")
        content_hash = sha256_file(path)
        receipt["content_hash"] = content_hash
        receipt["upload_id"] = f"{name.unit}-{received.astimezone(TAIPEI):%Y%m%dT%H%M%S}-{content_hash[:8]}"
        if rerun:  # the original's id stays the original's
            # no letter before the digits: "T230005123456" would look like a national ID to the checks
            receipt["upload_id"] += f"-rerun{datetime.now(TAIPEI):%Y%m%d%H%M%S%f}"
        if self.warehouse is not None and unit_row is not None and not rerun:
            earlier = self.warehouse.loaded_upload(name.unit, content_hash, unit_row.area)
            if earlier:
                found["earlier"] = earlier
                raise self._duplicate(receipt, earlier)
        check_limits(path, ext, self.settings.limits)
        # An Excel file's attendance sheet is read in a thread while the course sheet is checked;
        # leaving the block waits for that read, whatever happened meanwhile.
        with ThreadPoolExecutor(max_workers=1) as pool:
            raw = (read_excel(path, pool, self.settings.limits) if ext in (".xlsx", ".xls")
                   else reader_for(ext)(path))  # F01, F07
            root_unit = raw.meta.get("unit")
            if root_unit is not None and root_unit.strip() != name.unit:
                raise UploadRefused("F04", f"XML 的 unit 屬性「{root_unit}」不是傳報單位 {name.unit}",
                                    f"the XML unit attribute '{root_unit}' is not the sending unit {name.unit}")
            received_on = received.astimezone(TAIPEI).date()
            ctx = Context(unit=name.unit, channel="file", received_on=received_on,
                          pseudonymiser=self.pseudonymiser, cutoff=self.settings.archive_cutoff)
            if self.warehouse is not None and unit_row is not None:
                # a re-run admits what today's exceptions admit: one registered after the refusal is its reason
                on = datetime.now(TAIPEI).date() if rerun else received_on
                ctx.exceptions = self.warehouse.exceptions_for(name.unit, on)
                ctx.state = self.warehouse.state(unit_row.area)
            return validate(raw, ctx, lambda both: _refuse_unit_rows(both, name.unit))

    def _unit(self, code: str) -> Unit | None:
        if self.warehouse is None:  # self-check without a warehouse: register rules are skipped
            return None
        return registered_unit(self.warehouse, code)

    def _duplicate(self, receipt: dict, earlier: dict, restore: bool = True) -> UploadRefused:
        """F08, a warning naming the upload it repeats (and saying so when that one's receipt, lost,
        is written again; not for a load that committed a moment ago: it is publishing its receipt
        now). Its own upload id: a duplicate is recorded too."""
        lost = self._lost_receipt(receipt["unit"], earlier) if restore else []
        if lost and self.warehouse.receipt_document(earlier["upload_id"]) is None:
            lost = []  # loaded before receipts were kept: nothing to write it again from
        zh = f"與 {earlier['upload_id']} 內容相同，未重複載入"
        en = f"same content as {earlier['upload_id']}; nothing loaded again"
        if lost:
            zh += f"；該次回執遺失，已重新產生（{lost[0].name}）"
            en += f"; its receipt was missing and is written again ({lost[0].name})"
            receipt["restored_receipt"] = [p.name for p in lost]
        refusal = UploadRefused("F08", zh, en)
        refusal.findings = [{**refusal.finding(), "severity": "warning"}]
        # the digits after a '-', never after a letter: "T230005123456" would look like a national ID
        receipt["upload_id"] = f"{receipt['upload_id']}-duplicate-{datetime.now(TAIPEI):%Y%m%d%H%M%S%f}"
        return refusal

    def _lost_receipt(self, unit: str, earlier: dict) -> list[Path]:
        """The earlier upload's receipt files, in this outbox, when one of them is missing."""
        paths = [self.settings.outbox / unit / Path(p).name for p in (earlier["receipt_json"], earlier["receipt_xlsx"])
                 if p]
        return paths if len(paths) == 2 and not all(p.is_file() for p in paths) else []

    def restore_receipt(self, unit: str, earlier: dict) -> list[Path]:
        """Write again the receipt of an earlier upload (`Warehouse.loaded_upload`'s dict) from the
        warehouse's copy, if a file of it is missing; returns the files written."""
        paths = self._lost_receipt(unit, earlier)
        doc = self.warehouse.receipt_document(earlier["upload_id"]) if paths else None
        if doc is None:  # nothing lost, or uploaded before receipts were kept
            return []
        publish(stage_receipt(json.loads(doc), paths[0], paths[1]))
        return paths

    def _deliver(self, receipt: dict, findings: pa.Table, validated: Validated | None, found: dict,
                 received: datetime, rerun: bool) -> None:
        """Record the upload (every outcome) and write its receipt. The receipt is staged in a thread
        while the warehouse merges (openpyxl holds the GIL, DuckDB does not) and published once the
        merge has committed; the warehouse keeps a copy of it, from which a re-send restores it."""
        folder = self.settings.outbox / receipt["unit"]
        if folder not in self._swept:
            self._swept.add(folder)
            sweep_stale(folder)
        if receipt["upload_id"] is None:
            stamp = received.astimezone(TAIPEI).strftime("%Y%m%dT%H%M%S")
            receipt["upload_id"] = f"{receipt['unit']}-{stamp}-{receipt['status']}"
        while True:
            json_path, xlsx_path = self._receipt_paths(receipt)
            with ThreadPoolExecutor(max_workers=1) as pool:
                staged = pool.submit(stage_receipt, _document(receipt), json_path, xlsx_path)
                try:
                    renamed = self._record(receipt, findings, validated, found.get("unit"), received, rerun)
                except _LostRace as race:  # a concurrent ingest of the same bytes committed first
                    _discard(staged)
                    found["earlier"] = race.earlier
                    for part in ("courses", "attendance"):
                        receipt[part] = _counts(None)
                    receipt.pop("receipt_files", None)
                    findings, validated = _refused(receipt, self._duplicate(receipt, race.earlier, restore=False))
                    _set_counts(receipt, findings, validated)
                    continue
                except BaseException:
                    _discard(staged)
                    raise
                failpoint("ingest.after_commit")
                try:
                    if receipt["status"] == "duplicate" and receipt.get("restored_receipt"):
                        self.restore_receipt(receipt["unit"], found["earlier"])
                    files = staged.result()
                    if renamed:  # its id or name changed under the lock: the staged copy is stale
                        discard(files)
                        files = stage_receipt(_document(receipt), *self._receipt_paths(receipt))
                    publish(files)
                except OSError as exc:  # the rows are committed; a re-send restores the receipt
                    _discard(staged)
                    receipt["receipt_error"] = (f"receipt not written to the outbox ({type(exc).__name__}: "
                                                f"{exc.strerror or exc}); send the file again to receive it")
                    LOG.warning("%s: %s: %s", receipt["file"], receipt["receipt_error"], exc)
            return

    def _record(self, receipt: dict, findings: pa.Table, validated: Validated | None, unit: Unit | None,
                received: datetime, rerun: bool) -> bool:
        """The upload's row, findings, rows and receipt copy, in one transaction (the writer's lock:
        F08 is decided again inside it, and the upload id and receipt name are claimed there).
        Returns True when the id or receipt name had to change (taken meanwhile)."""
        wh = self.warehouse
        if wh is None:
            return False
        renamed = False
        with wh.transaction():
            if receipt["status"] == "loaded" and not rerun and unit is not None:
                earlier = wh.loaded_upload(receipt["unit"], receipt["content_hash"], unit.area)
                if earlier:
                    raise _LostRace(earlier)
            base, n = receipt["upload_id"], 1
            while wh.upload_id_taken(receipt["upload_id"]):
                n += 1
                receipt["upload_id"] = f"{base}-{n}"
                renamed = True
            n = 1
            while wh.receipt_name_taken(receipt["receipt_files"][0]) or Path(receipt["receipt_files"][0]).exists():
                n += 1
                receipt["receipt_files"] = [str(p) for p in self._receipt_name(receipt, n)]
                renamed = True
            json_path, xlsx_path = receipt["receipt_files"]
            upload = {
                "upload_id": receipt["upload_id"],
                "unit_code": receipt["unit"], "channel": "file", "file_name": receipt["file"],
                "data_month": receipt["month"], "content_hash": receipt["content_hash"], "received_at": received,
                "on_time": receipt["on_time"], "area": unit.area if unit else None, "status": receipt["status"],
                "refusal": receipt["refusal"], "receipt_json": json_path, "receipt_xlsx": xlsx_path,
                "processed_at": datetime.now(TAIPEI),
                **{f"{part}_{k}": v for part in ("courses", "attendance") for k, v in receipt[part].items()},
            }
            counts = wh.write_upload(upload, findings, validated, upload["area"], datetime.now(TAIPEI),
                                     receipt=json_text(_document(receipt)))
            failpoint("merge.before_commit")
        receipt["merge"] = counts.__dict__
        return renamed

    def _receipt_paths(self, receipt: dict) -> tuple[Path, Path]:
        """`<file>.<received YYYYmmddTHHMMSS>[-n].receipt.{json,xlsx}`: one pair per processing, never
        overwriting an earlier receipt (a duplicate's receipt must not replace the loaded one). The
        name is claimed for good inside the upload's transaction (`_record`)."""
        if "receipt_files" in receipt:
            return Path(receipt["receipt_files"][0]), Path(receipt["receipt_files"][1])
        n = 1
        while (paths := self._receipt_name(receipt, n))[0].exists():
            n += 1
        receipt["receipt_files"] = [str(p) for p in paths]
        return paths

    def _receipt_name(self, receipt: dict, n: int) -> tuple[Path, Path]:
        stamp = datetime.fromisoformat(receipt["received_at"]).astimezone(TAIPEI).strftime("%Y%m%dT%H%M%S")
        base = f"{receipt_stem(receipt['file'])}.{stamp}{'' if n == 1 else f'-{n}'}.receipt"
        folder = self.settings.outbox / receipt["unit"]
        return folder / f"{base}.json", folder / f"{base}.xlsx"


# An absolute path (two segments or more) not glued to a word: a server's, never the partner's business.
_SERVER_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"「」（）()]+/)+[^\s'\"「」（）()，。；]*")


def _refused(receipt: dict, refusal: UploadRefused) -> tuple[pa.Table, Validated | None]:
    """The receipt of a refusal (F08: a duplicate); its findings and what was read, if anything.
    A whole-upload refusal's text never shows a server path (whatever a library put in it)."""
    receipt["refusal"] = refusal.rule
    receipt["status"] = "duplicate" if refusal.rule == "F08" else "refused"
    detail = getattr(refusal, "detail", None)
    if detail:  # the reader's own words, for staff: IDs masked (a library may quote a cell)
        LOG.warning("%s/%s: %s (%s)", receipt["unit"], receipt["file"], refusal.rule,
                    re.sub(IN_TEXT, r"\1*****\2", detail))
    extra = getattr(refusal, "findings", None) or [refusal.finding()]
    extra = [{**f, **{k: _SERVER_PATH.sub("…", f[k]) for k in ("message_zh", "message_en") if f.get(k)}}
             if f.get("record") == "file" else f for f in extra]
    return findings_from_dicts(extra), getattr(refusal, "validated", None)


def _document(receipt: dict) -> dict:
    """The receipt as the unit receives it (and the warehouse keeps it): without where it is stored
    on the server, nor the merge's counts (known after the staging; in `uploads`)."""
    return {k: v for k, v in receipt.items() if k not in ("receipt_files", "merge")}


def _set_counts(receipt: dict, findings: pa.Table, validated: Validated | None) -> None:
    receipt["findings"] = findings.to_pylist()
    if validated is not None:
        receipt["courses"], receipt["attendance"] = _counts(validated.courses), _counts(validated.attendance)
        if receipt["status"] == "refused":  # refused whole: nothing was accepted
            for part in ("courses", "attendance"):
                receipt[part] = {**receipt[part], "accepted": 0, "rejected": receipt[part]["received"]}


def _discard(staged: Future) -> None:
    """Remove what a staging wrote, whether it finished or failed (an unwritable outbox)."""
    try:
        discard(staged.result())
    except OSError:
        pass  # it removed its own partial files


NAME_BYTES = 160  # of a receipt's name taken from the file's: with stamp, counter and temp suffix < 255


def receipt_stem(file_name: str) -> str:
    """The file's name, or for a very long one its start and a hash of the whole: a receipt's name
    must fit the file system's 255 bytes, else its receipt could not be written after the load."""
    raw = file_name.encode("utf-8", "surrogateescape")
    if len(raw) <= NAME_BYTES:
        return file_name
    head = raw[:NAME_BYTES - 17].decode("utf-8", "ignore")
    return f"{head}~{hashlib.sha256(raw).hexdigest()[:16]}"


def public_receipt(receipt: dict) -> dict:
    """The CLI contract's object (extra keys are kept after the contract's ones)."""
    keys = ["file", "unit", "month", "status", "refusal", "received_at", "on_time", "courses", "attendance",
            "findings"]
    return {**{k: receipt.get(k) for k in keys}, **{k: v for k, v in receipt.items() if k not in keys}}


def ingest_paths(paths: list[Path], settings: Settings, received_at: str | None = None,
                 load: bool = True) -> list[dict]:
    if not load and not Warehouse.exists(settings):
        ingestor = Ingestor(settings, None, load=False)
        return [public_receipt(ingestor.ingest(p, received_at)) for p in paths]
    # a load's session ends with the analysts' refresh (the step after its commits); a check writes nothing
    with WriteSession(settings) if load else Warehouse(settings, read_only=True) as wh:
        ingestor = Ingestor(settings, wh, load=load)
        return [public_receipt(ingestor.ingest(p, received_at)) for p in paths]

