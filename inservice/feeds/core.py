"""One feed day of one unit: partner tables → canonical tables → rules → merge → receipt.

Checks in the spec's order: F05 unknown unit, F06 sealed (both before the partner is touched),
F01 unreadable (URL, driver, connection, login, read errors), F07 structure, F04 a row's
unit_code, then the row rules of the one engine (channel "db": modified_at required, no C10).

Batches. A day's delta is one batch. A larger pull (an initial load) is cut into batches of about
`batch_rows` attendance rows in modified_at order; each batch is validated and merged in its own
transaction together with the watermark it earns, so a crash costs at most the batch in flight.
Consistency across batches:
- all courses of the pull are read first and go into batch 1 (their findings and counts come
  from batch 1 only); each later batch carries again the pull's courses its attendance refers to,
  so A04/A05/A06 judge every attendance row against the same course rows as one whole upload would
  (re-merging an unchanged course is a no-op);
- a course this pull closed is not "locked" for its own attendance in later batches, nor in the
  run that continues an interrupted pull (A08 applies to courses closed before the pull began,
  as in one upload);
- a tie group (rows with the same modified_at) is never split across batches;
- after batch k of n the watermark is the last attendance modified_at taken (all courses are
  already in); after the last batch it is the newest modified_at of the whole pull. It never moves
  back and never past the time the pull started (a partner clock in the future cannot make us skip
  rows).
W05 (other session) across batches is seen from the later batch only (the earlier one is already
in the warehouse; the later one not yet). A run that continues an interrupted pull re-reads from
its watermark: attendance of a course refused in the interrupted run is then A04 (unknown course)
rather than A05 — refused either way.
"""

from __future__ import annotations

import ctypes
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from inservice.channel import as_received_at, rule_context, unit_refusal, unit_rows_refusal
from inservice.config import TAIPEI, Settings
from inservice.feeds import register
from inservice.feeds.source import Chunk, PartnerReader, PartnerSource, PartnerUnreachable, concat
from inservice.feeds.spill import FindingsSpill
from inservice.loaders.base import RawUpload, UploadRefused
from inservice.receipts import (
    Counts,
    Receipt,
    SpilledFindings,
    discard,
    free_receipt_paths,
    publish,
    stage_receipt,
    stamp,
    write_json,
)
from inservice.schemas.fields import ATTENDANCE
from inservice.validations import normalize
from inservice.validations.engine import Validated, WarehouseState, validate
from inservice.validations.findings import from_dicts as findings_from_dicts
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse import ddl
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.backend import Connection
from inservice.warehouse.store import Unit, Warehouse, failpoint

BATCH_ROWS = int(os.environ.get("INSERVICE_FEED_BATCH_ROWS", "200000"))  # attendance rows per batch
CHUNK_ROWS = int(os.environ.get("INSERVICE_FEED_CHUNK_ROWS", "20000"))  # rows per fetch from the partner
# row findings a run holds in memory (and returns); the receipt files list all of them
FINDINGS_KEPT = int(os.environ.get("INSERVICE_FEED_FINDINGS_KEPT", "1000"))
MERGE_KEYS = ("courses_inserted", "courses_updated", "attendance_inserted", "attendance_updated",
              "courses_withdrawn", "attendance_withdrawn")


class FeedNotRegistered(ValueError):
    """No feed for this unit in the register (a usage error, not a partner's fault)."""


class FeedUnavailable(ConnectionError):
    """The partner's server could not be reached or dropped the link: retry later (with back-off).
    The refusal is already recorded and its receipt written; `receipt` is that receipt (the CLI
    contract's object)."""

    def __init__(self, receipt: dict) -> None:
        messages = [f["message_en"] for f in receipt["findings"] if f["rule"] == "F01"]
        super().__init__(messages[-1] if messages else "partner database unavailable")
        self.receipt = receipt


def feed_file_name(unit: str, day: date) -> str:
    return f"feed:{unit}:{day.isoformat()}"


class _PullState:
    """The warehouse as batch k ≥ 2 of a pull sees it: courses this pull has merged show the closed
    date they had before the pull, so their own attendance is judged as in one upload (no A08)."""

    def __init__(self, inner: WarehouseState, reopened: pa.Array) -> None:
        self.inner = inner
        self.reopened = reopened

    def existing_courses(self, unit: str, codes: pa.Array) -> pa.Table:
        table = self.inner.existing_courses(unit, codes)
        if not len(self.reopened) or not table.num_rows:
            return table
        i = table.schema.get_field_index("closed_date")
        mask = pc.is_in(table["course_code"], value_set=self.reopened)
        closed = pc.if_else(mask, pa.scalar(None, table.schema.field(i).type), table["closed_date"])
        return table.set_column(i, table.schema.field(i), closed)

    def existing_attendance(self, unit: str, codes: pa.Array) -> pa.Table:
        return self.inner.existing_attendance(unit, codes)

    def unclosed_courses(self, unit: str, on: date) -> pa.Table:
        return self.inner.unclosed_courses(unit, on)

    def sessions(self, organizer_titles: pa.Table) -> pa.Table:
        return self.inner.sessions(organizer_titles)

    def schools(self) -> pa.Table:
        return self.inner.schools()


def batches(chunks: Iterator[Chunk], size: int) -> Iterator[tuple[Chunk, bool]]:
    """Chunks (ordered by modified_at, nulls first) → batches of at least `size` rows, cut only
    between different modified_at values (rows without one may be cut anywhere), each with a flag
    saying whether it is the last. Reads at most one chunk ahead."""
    pending: list[Chunk] = []
    n = 0
    nxt = next(chunks, None)
    emitted = False
    while nxt is not None:
        pending.append(nxt)
        n += nxt.num_rows
        nxt = next(chunks, None)
        while n >= size:
            whole = concat(ATTENDANCE, pending)
            cut = _cut(whole.modified, size)
            if cut is None:
                break  # one modified_at runs to the end of what we have: read on
            head = Chunk(whole.table.slice(0, cut), whole.modified.slice(0, cut))
            # the rest is copied (a slice would keep this batch's buffers alive while the next is read)
            tail = pa.array(range(cut, whole.num_rows), pa.int64())
            rest = Chunk(whole.table.take(tail), whole.modified.take(tail))
            del whole, tail
            yield head, rest.num_rows == 0 and nxt is None
            del head
            emitted = True
            pending, n = ([rest] if rest.num_rows else []), rest.num_rows
    if pending or not emitted:
        yield concat(ATTENDANCE, pending), True


def _cut(modified: pa.Array, size: int) -> int | None:
    """The first position ≥ size where modified_at changes (None: no change before the end)."""
    at = modified[size - 1]
    if not at.is_valid:
        return size
    tail = modified.slice(size)
    differs = pc.fill_null(pc.not_equal(tail, at), True)
    idx = pc.index(differs, True).as_py()
    return None if idx < 0 else size + idx


def _json_text(document: dict, findings: SpilledFindings) -> str:
    """The JSON receipt's text with these findings (as the file writes them)."""
    buffer = io.BytesIO()
    write_json(document, buffer, findings)
    return buffer.getvalue().decode()


def _stage_json(receipt: dict, findings: FindingsSpill, json_path: Path) -> list[tuple[Path, Path]]:
    """The JSON receipt alone, under a temporary name (receipts.publish renames it)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=json_path.parent, prefix=f".{json_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write_json(receipt, fh, findings)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return [(Path(tmp), json_path)]


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _libc_trim()


def _release_freed_memory() -> None:
    """Between batches, hand what the batch freed back to the OS: Arrow's pool and glibc's arenas keep
    it otherwise, and over a long pull the next batches' allocations land beside it (the peak creeps)."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _max(values: pa.Array) -> datetime | None:
    return pc.max(values).as_py() if len(values) else None


def _with_masked_ids(findings: pa.Table, attendance: pa.Table) -> pa.Table:
    """Attendance findings name the teacher by masked ID (a feed has no sheet row to point at)."""
    if not findings.num_rows:
        return findings.append_column("id_masked", pa.array([], pa.string()))
    is_att = pc.fill_null(pc.equal(findings["record"], "attendance"), False)
    idx = pc.index_in(findings["row"], value_set=attendance["_row"])
    masked = pc.if_else(is_att, pc.take(attendance["id_masked"], idx), pa.scalar(None, pa.string()))
    show = pc.and_(pc.is_valid(masked), pc.not_equal(findings["rule"], "A03"))  # A03 already shows it
    show = pc.fill_null(show, False)
    zh = pc.if_else(show, pc.binary_join_element_wise(findings["message_zh"], "（身分證字號 ",
                                                      masked, "）", ""), findings["message_zh"])
    en = pc.if_else(show, pc.binary_join_element_wise(findings["message_en"], " (ID ", masked, ")", ""),
                    findings["message_en"])
    out = findings.set_column(findings.schema.get_field_index("message_zh"), "message_zh", zh)
    out = out.set_column(out.schema.get_field_index("message_en"), "message_en", en)
    return out.append_column("id_masked", masked)


@dataclass
class _Run:
    """One run's progress, shared by its batches."""

    unit: str
    day: date
    received: datetime
    receipt: Receipt
    json_path: Path
    xlsx_path: Path
    spec: register.FeedSpec
    findings: FindingsSpill  # every finding; receipt.findings is its in-memory sample
    feed: dict[str, Any]  # receipt.feed: the pull as the receipt describes it
    unit_row: Unit | None = None  # the sender's registration (None: not registered, F05)
    base_id: str = ""
    committed: int = 0  # batches merged
    rows_read: int = 0
    watermark: datetime | None = None
    series_start: datetime | None = None  # when the pull (or the one it continues) began
    failing: tuple[Counts, Counts] | None = None  # the batch in flight's courses and attendance, for a refusal

    @property
    def area(self) -> str:
        """The sender's area (asked only once the register admitted it)."""
        if self.unit_row is None:
            raise RuntimeError(f"unit {self.unit} is not registered")
        return self.unit_row.area


# DuckDB's memory for a feed run: peak RSS 639 MiB at 1M rows (256MB) and 669 MiB at 5M (64MB), same speed
DUCKDB_MEMORY = os.environ.get("INSERVICE_FEED_DUCKDB_MEMORY", "64MB")


class FeedRunner:
    """Pulls feeds into one warehouse (the file channel's `Ingestor`, for databases)."""

    def __init__(self, settings: Settings, warehouse: Warehouse, batch_rows: int | None = None,
                 chunk_rows: int | None = None, findings_kept: int | None = None) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.batch_rows = batch_rows or BATCH_ROWS
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        self.findings_kept = FINDINGS_KEPT if findings_kept is None else findings_kept
        self.pseudonymiser = Pseudonymiser(warehouse_key(settings.home, warehouse))  # the warehouse's key
        if warehouse.backend.embedded:  # the buffer cache would otherwise grow with the pull
            warehouse.con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")

    def run(self, unit: str, day: date | None = None, *, full: bool = False,
            received_at: datetime | str | None = None) -> dict:
        """`receipt`, answered as the CLI contract's object (`Receipt.public`)."""
        return self.receipt(unit, day, full=full, received_at=received_at).public()

    def receipt(self, unit: str, day: date | None = None, *, full: bool = False,
                received_at: datetime | str | None = None) -> Receipt:
        """Pull once now. Returns the receipt; raises FeedUnavailable (after recording the refusal and
        writing its receipt) when a retry may succeed. `full` ignores the watermark (re-reads all).
        The receipt's `findings` are the file-level ones and the first `findings_kept` row findings;
        `findings_total` counts all of them, which its JSON and workbook list."""
        spec = register.feed(self.warehouse, unit)
        if spec is None:
            raise FeedNotRegistered(f"no feed registered for {unit} (inservice feeds add {unit} --url-env VAR)")
        received = as_received_at(received_at)
        day = day or received.astimezone(TAIPEI).date()
        feed: dict[str, Any] = {
            "url_env": spec.url_env, "source": None, "courses_table": spec.courses_table,
            "attendance_table": spec.attendance_table, "full": full, "since": None, "watermark_before": None,
            "watermark_after": None, "batches": 0, "complete": False}
        receipt = Receipt(feed_file_name(unit, day), unit, received.isoformat(), month=f"{day:%Y-%m}",
                          on_time=True,  # a feed day is on time
                          findings_total=0, channel="db", feed=feed, merge=dict.fromkeys(MERGE_KEYS, 0))
        # outbox/<unit>/feed-<day>.<received>[-n].receipt.{json,xlsx}, never overwriting another run's
        json_path, xlsx_path = free_receipt_paths(self.settings.outbox / unit, f"feed-{day.isoformat()}", received)
        receipt.receipt_files = [str(json_path), str(xlsx_path)]
        with FindingsSpill(json_path.parent, self.findings_kept) as spill:
            receipt.findings = spill.kept
            run = _Run(unit, day, received, receipt, json_path, xlsx_path, spec, spill, feed)
            run.base_id = self._base_id(run)
            receipt.upload_id = run.base_id
            try:
                run.unit_row = self.warehouse.unit(unit)  # the sender's, recorded whatever the register says
                receipt.area = run.unit_row.area if run.unit_row else None
                refusal = unit_refusal(unit, run.unit_row)  # F05, F06: before the partner is touched
                if refusal is not None:
                    raise refusal
                self._pull(run, full)
            except UploadRefused as refusal:
                self._refuse(run, refusal)
                if isinstance(refusal, PartnerUnreachable):
                    raise FeedUnavailable(receipt.public()) from refusal
        return receipt

    # --- steps ---------------------------------------------------------------------------------
    def _pull(self, run: _Run, full: bool) -> None:
        area = run.area
        feed = run.feed
        source = PartnerSource(run.spec, self.chunk_rows)  # F01: variable unset or not a URL
        feed["source"] = source.masked
        mark = register.watermark(self.warehouse.con, run.unit, area)
        run.watermark = mark.watermark
        # an interrupted pull is continued, not restarted: courses it closed stay open to its attendance
        resumed = mark.complete is False and mark.pull_started_at is not None
        run.series_start = mark.pull_started_at if resumed else datetime.now(TAIPEI)
        feed["resumed"] = resumed
        feed["watermark_before"] = mark.watermark.isoformat(sep=" ") if mark.watermark else None
        since = None if full or mark.watermark is None else mark.watermark - timedelta(minutes=run.spec.overlap_minutes)
        feed["since"] = since.isoformat(sep=" ") if since else None
        started = datetime.now(TAIPEI).replace(tzinfo=None)
        with source.open() as reader:  # F01 connection/login, F07 structure
            courses = reader.read_all(reader.courses, since)
            run.rows_read += courses.num_rows
            course_codes = normalize.fold(courses.table["course_code"].combine_chunks())
            stream = reader.stream(reader.attendance, since)
            try:
                for k, (att, last) in enumerate(batches(stream, self.batch_rows), 1):
                    if k == 1:
                        part = courses.table
                    else:
                        _release_freed_memory()  # what the batch before left
                        wanted = pc.unique(normalize.fold(att.table["course_code"].combine_chunks()))
                        part = courses.table.filter(pc.fill_null(pc.is_in(course_codes, value_set=wanted), False))
                    run.rows_read += att.num_rows
                    newest = _max(att.modified)
                    if last:
                        newest = max((t for t in (newest, _max(courses.modified)) if t is not None), default=None)
                    self._batch(run, reader, k, part, att.table, newest, started, last)
                    failpoint(f"feed.after_batch.{k}")
                    del att, part  # freed while the next batch is read, not after
            finally:
                stream.close()  # ends the server-side cursor before the transaction

    def _closed_by_this_pull(self, run: _Run) -> pa.Array:
        """Courses this pull (with the runs it continues) wrote and closed: loaded since it began.
        A course closed before keeps its old loaded_at (an identical re-send is a no-op)."""
        schema = ddl.AREAS[run.area]
        return self.warehouse.table(f"""SELECT course_code FROM {schema}.courses WHERE unit_code = ?
            AND closed_date IS NOT NULL AND loaded_at >= ?""", [run.unit, run.series_start])["course_code"]

    def _batch(self, run: _Run, reader: PartnerReader, k: int, courses: pa.Table, attendance: pa.Table,
               newest: datetime | None, started: datetime, last: bool) -> None:
        """Validate and merge one batch, with the watermark it earns, in one transaction."""
        unit, area, receipt = run.unit, run.area, run.receipt
        raw = RawUpload(courses, attendance, notes=reader.notes if k == 1 else [])
        run.failing = (Counts.refused(courses.num_rows) if k == 1 else Counts(), Counts.refused(attendance.num_rows))
        refusal = unit_rows_refusal(raw, unit)  # F04
        if refusal is not None:
            refusal.findings = [f for f in refusal.all_findings() if k == 1 or f["record"] != "course"]
            raise refusal
        received_on = run.received.astimezone(TAIPEI).date()
        state: WarehouseState = self.warehouse.state(area)
        reopened = self._closed_by_this_pull(run)
        if len(reopened):
            state = _PullState(state, reopened.combine_chunks())
        ctx = rule_context(self.settings, self.warehouse, unit, "db", received_on, self.pseudonymiser, state=state)
        v = validate(raw, ctx)
        findings = v.findings
        if k > 1:  # the courses were judged (and counted) in batch 1
            findings = findings.filter(pc.not_equal(findings["record"], "course"))
        findings = _with_masked_ids(findings, v.attendance)
        counts = (Counts.of(v.courses) if k == 1 else Counts(), Counts.of(v.attendance))
        candidate = min(newest, started) if newest is not None else None
        new_mark = max((t for t in (run.watermark, candidate) if t is not None), default=None)
        upload_id = run.base_id if k == 1 else f"{run.base_id}-{k}"
        # the receipt as it will stand once this batch commits
        receipt.courses, receipt.attendance = receipt.courses + counts[0], receipt.attendance + counts[1]
        since = run.findings.size  # this batch's findings start here
        run.findings.add_table(findings)
        receipt.findings_total = run.findings.total
        receipt.status = "loaded"
        run.feed.update(batches=k, complete=last, watermark_after=new_mark.isoformat(sep=" ") if new_mark else None)
        upload = self._upload_row(run, upload_id, "loaded", None, counts)
        rows_read, series_start = run.rows_read, run.series_start
        assert series_start is not None  # set when the pull began

        def in_transaction(con: Connection) -> None:
            register.save_watermark(con, unit, area, new_mark, rows_read, upload_id, last, series_start,
                                    datetime.now(TAIPEI))
            failpoint(f"feed.before_commit.{k}")

        merged = self._commit(run, upload, findings.drop_columns(["id_masked"]), since, v, in_transaction,
                              final=last)
        run.committed, run.watermark = k, new_mark
        assert receipt.merge is not None  # set when the run began
        for key in MERGE_KEYS:
            receipt.merge[key] += merged[key]

    def _commit(self, run: _Run, upload: dict, findings: pa.Table, since: int, validated: Validated | None,
                in_transaction: Callable[[Connection], None] | None = None, final: bool = True) -> dict[str, int]:
        """Record one batch (or a refusal) in one transaction, with the receipt as it now stands
        (`upload_receipts`: its findings those of this record, from `since` in the spill); the
        receipt is staged meanwhile and published only after the commit. Between batches only the
        JSON is rewritten (the workbook, slow to write for many findings, once at the end)."""
        document = run.receipt.document(with_files=True)
        document.update(findings=[], feed=dict(run.feed))  # the findings: from the spill
        with ThreadPoolExecutor(max_workers=1) as pool:
            if final:
                staged = pool.submit(stage_receipt, document, run.json_path, run.xlsx_path, findings=run.findings)
            else:
                staged = pool.submit(_stage_json, document, run.findings, run.json_path)
            try:
                counts = self.warehouse.record_upload(upload, findings, validated, upload["area"],
                                                      datetime.now(TAIPEI), in_transaction,
                                                      receipt=_json_text(document, run.findings.since(since)))
            except BaseException:
                discard(staged.result())
                raise
            publish(staged.result())
        return asdict(counts)

    def _refuse(self, run: _Run, refusal: UploadRefused) -> None:
        """Record a refusal (F05 and F06 too: every pull is in `uploads`, with its findings and receipt)."""
        receipt = run.receipt
        table = findings_from_dicts(refusal.all_findings())
        since = run.findings.size
        run.findings.add([{**f, "id_masked": None} for f in table.to_pylist()])
        receipt.findings_total = run.findings.total
        receipt.refusal = refusal.rule
        run.feed["complete"] = False
        failing = run.failing or (Counts(), Counts())
        if run.committed == 0:
            receipt.status = "refused"
            receipt.courses, receipt.attendance = failing
        else:  # earlier batches stay loaded (each was whole); the rest waits for the next run
            receipt.courses, receipt.attendance = receipt.courses + failing[0], receipt.attendance + failing[1]
        upload_id = run.base_id if run.committed == 0 else f"{run.base_id}-{run.committed + 1}"
        self._commit(run, self._upload_row(run, upload_id, "refused", refusal.rule, failing), table, since, None)

    # --- records and names ---------------------------------------------------------------------
    def _upload_row(self, run: _Run, upload_id: str, status: str, refusal: str | None,
                    counts: tuple[Counts, Counts]) -> dict:
        """The pull's row in `uploads` (an unregistered unit's: area NULL, in no area's statistics)."""
        return {
            "upload_id": upload_id, "unit_code": run.unit, "channel": "db", "file_name": run.receipt.file,
            "data_month": run.receipt.month, "content_hash": None, "received_at": run.received,
            "on_time": True, "area": run.unit_row.area if run.unit_row else None, "status": status,
            "refusal": refusal, "receipt_json": str(run.json_path), "receipt_xlsx": str(run.xlsx_path),
            "processed_at": datetime.now(TAIPEI),
            **{f"{part}_{k}": v for part, c in zip(("courses", "attendance"), counts, strict=True)
               for k, v in c.as_dict().items()},
        }

    def _base_id(self, run: _Run) -> str:
        when = stamp(run.received)
        n, base = 1, f"{run.unit}-{when}-feed"
        while self.warehouse.con.execute("SELECT count(*) FROM uploads WHERE upload_id LIKE ? || '%'",
                                         [base]).fetchall()[0][0]:
            n += 1
            base = f"{run.unit}-{when}-{n}-feed"
        return base


def run_feed(settings: Settings, unit: str, day: date | None = None, *, full: bool = False,
             received_at: datetime | str | None = None, batch_rows: int | None = None) -> dict:
    """Open the warehouse, pull one unit's feed once, return the public receipt (CLI and Dagster)."""
    with WriteSession(settings) as wh:
        return FeedRunner(settings, wh, batch_rows=batch_rows).run(unit, day, full=full, received_at=received_at)
