"""One upload from inbox to warehouse rows and a receipt — the plain-Python core Dagster drives.

Whole-upload checks run in the order of spec §5 (F02, F03, F05, F06, F04, F08, F09, F01, F07,
F04) and the first failure refuses the upload; then row rules, then one atomic merge.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from inservice.channel import (
    as_received_at,
    file_name,
    registered_unit,
    rule_context,
    sha256_file,
    unit_rows_refusal,
)
from inservice.config import TAIPEI, Settings
from inservice.loaders import FILE_EXTENSIONS, RawUpload, UploadRefused, reader_for
from inservice.loaders.excel import read_excel
from inservice.loaders.limits import check_limits
from inservice.partners import partner_history, with_receipt
from inservice.receipts import (
    Counts,
    Receipt,
    discard,
    free_receipt_paths,
    json_text,
    publish,
    stage_receipt,
    stamp,
    sweep_stale,
)
from inservice.schemas.filenames import FILE_NAME, deadline
from inservice.schemas.messages import next_steps
from inservice.validations.engine import Validated, validate
from inservice.validations.findings import SCHEMA as FINDINGS_SCHEMA
from inservice.validations.findings import from_dicts as findings_from_dicts
from inservice.validations.national_id import IN_TEXT
from inservice.validations.plans import ValidatedPlans
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Unit, Warehouse, failpoint

LOG = logging.getLogger("inservice.ingest")


def _refuse_unit_rows(raw: RawUpload, unit: str) -> None:
    """F04 (rows), before any row rule: the whole upload is refused."""
    refusal = unit_rows_refusal(raw, unit)
    if refusal is not None:
        raise refusal


@dataclass
class Upload:
    """One upload being processed: its receipt and what the steps found out."""

    receipt: Receipt
    rerun: bool = False
    findings: pa.Table = field(default_factory=FINDINGS_SCHEMA.empty_table)
    validated: Validated | ValidatedPlans | None = None
    sender: Unit | None = None  # the inbox unit's registration
    earlier: dict | None = None  # the loaded upload an F08 repeats

    def accept(self, validated: Validated | ValidatedPlans, status: str) -> None:
        self.validated, self.findings = validated, validated.findings
        self.receipt.status = status
        self.receipt.findings = self.findings.to_pylist()

    def refuse(self, refusal: UploadRefused) -> None:
        """A refusal (F08: a duplicate): nothing counted as accepted, its findings on the receipt.
        Its text never shows a server path (whatever a library put in it)."""
        receipt = self.receipt
        receipt.refusal = refusal.rule
        receipt.status = "duplicate" if refusal.rule == "F08" else "refused"
        if refusal.detail:  # the reader's own words, for staff: IDs masked (a library may quote a cell)
            LOG.warning("%s/%s: %s (%s)", receipt.unit, receipt.file, refusal.rule,
                        re.sub(IN_TEXT, r"\1*****\2", refusal.detail))
        found = [{**f, **{k: _SERVER_PATH.sub("…", f[k]) for k in ("message_zh", "message_en") if f.get(k)}}
                 if f.get("record") == "file" else f for f in refusal.all_findings()]
        self.validated, self.findings = None, findings_from_dicts(found)
        receipt.courses, receipt.attendance = Counts(), Counts()
        receipt.findings = self.findings.to_pylist()


# An absolute path (two segments or more) not glued to a word: a server's, never the partner's business.
_SERVER_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"「」（）()]+/)+[^\s'\"「」（）()，。；]*")


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
               rerun: bool = False, replay_of: str | None = None) -> dict:
        """`process`, answered as the CLI contract's object (`Receipt.public`)."""
        return self.process(path, received_at, unit, rerun, replay_of).public()

    def process(self, path: Path, received_at: datetime | str | None = None, unit: str | None = None,
                rerun: bool = False, replay_of: str | None = None) -> Receipt:
        """`rerun=True`: staff re-run an upload explicitly (e.g. after an archive exception was
        registered): F08 is not applied (the earlier load was partial), archive exceptions are those in
        force on the day of the re-run, and the upload id is marked `-rerun<time>`.

        Everything belongs to the sender, the inbox's unit (`unit`, else the file's folder): its
        receipt in outbox/<unit>/, its `uploads` row (every outcome: loaded, refused — F01 to F09 —
        and duplicate). A duplicate (F08) of an upload whose receipt files are gone writes them again
        from the warehouse's copy (`restored_receipt`). When the receipt cannot be written (outbox
        full, not writable), the rows stay committed and `receipt_error` says why.

        `replay_of` (replay.py): a re-evaluation of that upload under today's rules — a re-run whose
        id is marked `-replay<time>`, whose receipt says so (`re_evaluation`), recorded with `replay_of`."""
        path = Path(path)
        received = as_received_at(received_at)
        # the folder it sits in, as named (not where a link points; resolving a link loop raises)
        inbox_unit = unit or Path(os.path.abspath(path)).parent.name
        evaluation = None if replay_of is None else {
            "of": replay_of, "zh": f"依現行規則重新檢核 {replay_of}",
            "en": f"re-evaluation of {replay_of} under the rules in force"}
        upload = Upload(Receipt(path.name, inbox_unit, received.isoformat(), rerun=rerun and replay_of is None,
                                 re_evaluation=evaluation), rerun or replay_of is not None)
        try:
            upload.accept(self.validate_file(path, received, upload), "loaded" if self.load else "checked")
            self.count(upload)
        except UploadRefused as refusal:
            upload.refuse(refusal)
        self._guide(upload.receipt)
        if self.load:
            self._deliver(upload)
        return upload.receipt

    def validate_file(self, path: Path, received: datetime, upload: Upload) -> Validated | ValidatedPlans:
        """The whole-upload checks and the rules: what is merged. A channel of files of another shape
        (the planning survey's) overrides this, `count` and `write`."""
        receipt, rerun = upload.receipt, upload.rerun
        inbox_unit = receipt.unit
        self.identify_sender(upload)
        if not path.is_file():  # gone, a folder, a pipe (reading it would wait forever), a device, a link loop
            raise UploadRefused("F01", f"「{path.name}」不存在或不是一般檔案",
                                f"'{path.name}' is missing or not a regular file")
        ext = path.suffix.lower()
        if ext not in FILE_EXTENSIONS:
            raise UploadRefused("F02", f"不支援的副檔名「{path.suffix}」", f"unknown format '{path.suffix}'")
        name = file_name(path.name)  # F03
        receipt.month = name.month
        receipt.on_time = received <= deadline(name.month)
        received_month = f"{received.astimezone(TAIPEI):%Y-%m}"
        if name.month > received_month:  # spec 1.1: a month not yet begun (or not yet over) names no data
            raise UploadRefused("F03", f"檔名的資料月份 {name.month} 晚於收件月份 {received_month}",
                                f"the file name's data month {name.month} is after the month received, "
                                f"{received_month}")
        # self-check without a warehouse: the register rules are skipped
        unit_row = registered_unit(self.warehouse, name.unit) if self.warehouse is not None else None  # F05, F06
        if inbox_unit != name.unit:
            raise UploadRefused("F04", f"檔案位於 {inbox_unit} 的收件匣，檔名卻屬於 {name.unit}",
                                f"the file sits in {inbox_unit}'s inbox but is named for {name.unit}")
        content_hash = sha256_file(path)
        receipt.content_hash = content_hash
        receipt.upload_id = f"{name.unit}-{stamp(received)}-{content_hash[:8]}"
        if rerun:  # the original's id stays the original's
            # no letter before the digits: "T230005123456" would look like a national ID to the checks
            mark = "replay" if receipt.re_evaluation else "rerun"
            receipt.upload_id += f"-{mark}{datetime.now(TAIPEI):%Y%m%d%H%M%S%f}"
        if self.warehouse is not None and unit_row is not None and not rerun:
            earlier = self.warehouse.loaded_upload(name.unit, content_hash, unit_row.area)
            if earlier:
                upload.earlier = earlier
                raise self.duplicate(receipt, earlier)
        check_limits(path, ext, self.settings.limits)
        # An Excel file's attendance sheet is read in a thread while the course sheet is checked;
        # leaving the block waits for that read, whatever happened meanwhile.
        with ThreadPoolExecutor(max_workers=1) as pool:
            raw = (read_excel(path, pool, self.settings.limits) if ext in (".xlsx", ".xls")
                   else reader_for(ext, self.settings.limits)(path))  # F01, F07
            root_unit = raw.meta.get("unit")
            if root_unit is not None and root_unit.strip() != name.unit:
                raise UploadRefused("F04", f"XML 的 unit 屬性「{root_unit}」不是傳報單位 {name.unit}",
                                    f"the XML unit attribute '{root_unit}' is not the sending unit {name.unit}")
            received_on = received.astimezone(TAIPEI).date()
            # a re-run admits what today's exceptions admit: one registered after the refusal is its reason
            ctx = rule_context(self.settings, self.warehouse, name.unit, "file", received_on, self.pseudonymiser,
                               exceptions_on=datetime.now(TAIPEI).date() if rerun else None)
            if self.warehouse is not None and unit_row is not None:
                ctx.state = self.warehouse.state(unit_row.area)
            return validate(raw, ctx, lambda both: _refuse_unit_rows(both, name.unit))

    def identify_sender(self, upload: Upload) -> None:
        """The sender, whatever the file says: the inbox unit's registration and area."""
        if self.warehouse is not None:
            upload.sender = self.warehouse.unit(upload.receipt.unit)
            if upload.sender is not None:
                upload.receipt.area = upload.sender.area

    def count(self, upload: Upload) -> None:
        """The receipt's row counts of an accepted upload."""
        v = upload.validated
        if isinstance(v, Validated):
            upload.receipt.courses, upload.receipt.attendance = Counts.of(v.courses), Counts.of(v.attendance)

    def write(self, wh: Warehouse, row: dict, upload: Upload, now: datetime, receipt_json: str) -> Any:
        """The upload's writes inside its transaction; returns the merge's counts (a dataclass, shown
        as the receipt's `merge`)."""
        v = upload.validated
        return wh.write_upload(row, upload.findings, v if isinstance(v, Validated) else None, row["area"], now,
                               receipt=receipt_json)

    def duplicate(self, receipt: Receipt, earlier: dict, restore: bool = True) -> UploadRefused:
        """F08, a warning naming the upload it repeats (and saying so when that one's receipt, lost,
        is written again; not for a load that committed a moment ago: it is publishing its receipt
        now). Its own upload id: a duplicate is recorded too."""
        lost = self._lost_receipt(receipt.unit, earlier) if restore else []
        if lost and self._warehouse().receipt_document(earlier["upload_id"]) is None:
            lost = []  # loaded before receipts were kept: nothing to write it again from
        zh = f"與 {earlier['upload_id']} 內容相同，未重複載入"
        en = f"same content as {earlier['upload_id']}; nothing loaded again"
        if lost:
            zh += f"；該次回執遺失，已重新產生（{lost[0].name}）"
            en += f"; its receipt was missing and is written again ({lost[0].name})"
            receipt.restored_receipt = [p.name for p in lost]
        refusal = UploadRefused("F08", zh, en)
        refusal.findings = [{**refusal.finding(), "severity": "warning"}]
        # the digits after a '-', never after a letter: "T230005123456" would look like a national ID
        receipt.upload_id = f"{receipt.upload_id}-duplicate-{datetime.now(TAIPEI):%Y%m%d%H%M%S%f}"
        return refusal

    def _warehouse(self) -> Warehouse:
        if self.warehouse is None:
            raise RuntimeError("this step needs a warehouse (a self-check without one never reaches it)")
        return self.warehouse

    def _lost_receipt(self, unit: str, earlier: dict) -> list[Path]:
        """The earlier upload's receipt files, in this outbox, when one of them is missing."""
        paths = [self.settings.outbox / unit / Path(p).name for p in (earlier["receipt_json"], earlier["receipt_xlsx"])
                 if p]
        return paths if len(paths) == 2 and not all(p.is_file() for p in paths) else []

    def restore_receipt(self, unit: str, earlier: dict) -> list[Path]:
        """Write again the receipt of an earlier upload (`Warehouse.loaded_upload`'s dict) from the
        warehouse's copy, if a file of it is missing; returns the files written."""
        paths = self._lost_receipt(unit, earlier)
        doc = self._warehouse().receipt_document(earlier["upload_id"]) if paths else None
        if doc is None:  # nothing lost, or uploaded before receipts were kept
            return []
        publish(stage_receipt(json.loads(doc), paths[0], paths[1]))
        return paths

    # --- recording and the receipt files ---------------------------------------------------------
    def _deliver(self, upload: Upload) -> None:
        """Record the upload (every outcome) and write its receipt. The receipt is staged in a thread
        while the warehouse merges (openpyxl holds the GIL, DuckDB does not) and published once the
        merge has committed; the warehouse keeps a copy of it, from which a re-send restores it."""
        receipt = upload.receipt
        folder = self.settings.outbox / receipt.unit
        if folder not in self._swept:
            self._swept.add(folder)
            sweep_stale(folder)
        if receipt.upload_id is None:
            receipt.upload_id = f"{receipt.unit}-{stamp(receipt.received)}-{receipt.status}"
        while True:
            json_path, xlsx_path = self._receipt_paths(receipt)
            with ThreadPoolExecutor(max_workers=1) as pool:
                staged = pool.submit(stage_receipt, receipt.document(), json_path, xlsx_path)
                try:
                    renamed = self._record(upload)
                except _LostRace as race:  # a concurrent ingest of the same bytes committed first
                    _discard(staged)
                    self._became_duplicate(upload, race.earlier)
                    continue
                except BaseException:
                    _discard(staged)
                    raise
                failpoint("ingest.after_commit")
                self._publish(upload, staged, renamed)
            return

    def _became_duplicate(self, upload: Upload, earlier: dict) -> None:
        """The upload is a duplicate of one committed meanwhile: its receipt says so (its own files)."""
        upload.earlier = earlier
        upload.receipt.receipt_files = None
        upload.refuse(self.duplicate(upload.receipt, earlier, restore=False))
        self._guide(upload.receipt)

    def _guide(self, receipt: Receipt) -> None:
        """What the partner reads first: what happened and what to do next, the network's contact,
        and its history of the last 24 months (this upload counted in)."""
        receipt.next_steps = None
        document = receipt.document()
        receipt.next_steps = [{"zh": zh, "en": en} for zh, en in next_steps(document)]
        receipt.contact = {"phone": self.settings.contact_phone, "email": self.settings.contact_email}
        if self.warehouse is not None and receipt.month and FILE_NAME.match(receipt.file):
            history = partner_history(self.warehouse.con, receipt.unit, receipt.month)
            receipt.history = [m.as_dict() for m in with_receipt(history, document)]

    def _publish(self, upload: Upload, staged: Future, renamed: bool) -> None:
        """After the commit: the receipt's files in place (staged again when its id or name changed
        under the lock), and a lost receipt of the upload a duplicate repeats. A failure to write
        leaves the rows committed: a re-send restores the receipt."""
        receipt = upload.receipt
        try:
            if receipt.status == "duplicate" and receipt.restored_receipt and upload.earlier is not None:
                self.restore_receipt(receipt.unit, upload.earlier)
            files = staged.result()
            if renamed:  # the staged copy is stale
                discard(files)
                files = stage_receipt(receipt.document(), *self._receipt_paths(receipt))
            publish(files)
        except OSError as exc:
            _discard(staged)
            receipt.receipt_error = (f"receipt not written to the outbox ({type(exc).__name__}: "
                                     f"{exc.strerror or exc}); send the file again to receive it")
            LOG.warning("%s: %s: %s", receipt.file, receipt.receipt_error, exc)

    def _record(self, upload: Upload) -> bool:
        """The upload's row, findings, rows and receipt copy, in one transaction (the writer's lock:
        F08 is decided again inside it, and the upload id and receipt name are claimed there).
        Returns True when the id or receipt name had to change (taken meanwhile)."""
        wh, receipt = self.warehouse, upload.receipt
        if wh is None:
            return False
        with wh.transaction():
            if receipt.status == "loaded" and not upload.rerun and upload.sender is not None \
                    and receipt.content_hash is not None:
                earlier = wh.loaded_upload(receipt.unit, receipt.content_hash, upload.sender.area)
                if earlier:
                    raise _LostRace(earlier)
            renamed = self._claim(wh, receipt)
            area = upload.sender.area if upload.sender else None
            counts = self.write(wh, self._upload_row(upload, area), upload, datetime.now(TAIPEI),
                                json_text(receipt.document()))
            failpoint("merge.before_commit")
        receipt.merge = asdict(counts)
        return renamed

    def _claim(self, wh: Warehouse, receipt: Receipt) -> bool:
        """Under the writer's lock: an upload id and a receipt name no other upload has (a `-n` suffix
        when taken). Returns True when either changed."""
        renamed = False
        base, n = receipt.upload_id, 1
        while wh.upload_id_taken(str(receipt.upload_id)):
            n += 1
            receipt.upload_id = f"{base}-{n}"
            renamed = True

        def taken(path: Path) -> bool:
            return wh.receipt_name_taken(str(path)) or path.exists()

        if taken(self._receipt_paths(receipt)[0]):
            self._receipt_paths(receipt, taken)
            renamed = True
        return renamed

    def _upload_row(self, upload: Upload, area: str | None) -> dict:
        receipt = upload.receipt
        json_path, xlsx_path = self._receipt_paths(receipt)
        return {
            "upload_id": receipt.upload_id, "unit_code": receipt.unit, "channel": "file", "file_name": receipt.file,
            "data_month": receipt.month, "content_hash": receipt.content_hash, "received_at": receipt.received,
            "on_time": receipt.on_time, "area": area, "status": receipt.status, "refusal": receipt.refusal,
            "receipt_json": str(json_path), "receipt_xlsx": str(xlsx_path), "processed_at": datetime.now(TAIPEI),
            "replay_of": (receipt.re_evaluation or {}).get("of"),
            **{f"{part}_{k}": v for part, counts in (("courses", receipt.courses), ("attendance", receipt.attendance))
               for k, v in counts.as_dict().items()},
        }

    def _receipt_paths(self, receipt: Receipt, taken: Callable[[Path], bool] | None = None) -> tuple[Path, Path]:
        """`<file>.<received YYYYmmddTHHMMSS>[-n].receipt.{json,xlsx}` in the sender's outbox: one pair per
        processing, never overwriting an earlier receipt (a duplicate's receipt must not replace the
        loaded one). Chosen once (again with `taken`, a test of a path); claimed for good inside the
        upload's transaction (`_claim`)."""
        if receipt.receipt_files is None or taken is not None:
            folder = self.settings.outbox / receipt.unit
            paths = free_receipt_paths(folder, receipt.file, receipt.received, taken or Path.exists)
            receipt.receipt_files = [str(p) for p in paths]
        return Path(receipt.receipt_files[0]), Path(receipt.receipt_files[1])


def _discard(staged: Future) -> None:
    """Remove what a staging wrote, whether it finished or failed (an unwritable outbox)."""
    try:
        discard(staged.result())
    except OSError:
        pass  # it removed its own partial files


def ingest_paths(paths: list[Path], settings: Settings, received_at: str | None = None,
                 load: bool = True, kind: type[Ingestor] = Ingestor) -> list[dict]:
    """Each file through an `Ingestor` (`kind`: a channel of files of another shape, the planning
    survey's); the CLI contract's objects."""
    if not load and not Warehouse.exists(settings):
        ingestor = kind(settings, None, load=False)
        return [ingestor.ingest(p, received_at) for p in paths]
    # a load's session ends with the analysts' refresh (the step after its commits); a check writes nothing
    with WriteSession(settings) if load else Warehouse(settings, read_only=True) as wh:
        ingestor = kind(settings, wh, load=load)
        return [ingestor.ingest(p, received_at) for p in paths]
