"""Migrating the legacy archive: source → key-ordered chunks → the one rule engine → bulk merge, with
courses started on or before the archive cutoff (and their attendance) sent to a sealed cold archive.

Chunks. Both tables are read in one total order (unit_code, course_code, then every column; see
source.py) and cut where the key changes, after about `batch_rows` rows of either table: a course and all
its attendance rows are always in the same chunk, so C06/A07 (duplicates), A04/A05/A06 (the course) and
the merge judge them as one upload would. Within a chunk each unit's rows are validated as that unit's
upload (the engine's context is one unit); the accepted rows of the whole chunk are merged at once.

One transaction per chunk holds its rows, the units it registers, its reconciliation counts and
samples, and its checkpoint (`backfill_chunks`): a kill loses at most the chunk in flight, and a re-run
reads the same chunks again, skips the committed ones and continues. The run's start time is kept in
`backfill_runs` and used as every loaded row's `loaded_at`, so a resumed run leaves the same warehouse
as an uninterrupted one. The archive's files are named by chunk and written (fsync'd) before the chunk
commits; a chunk re-done after a kill rewrites them with the same bytes.

Outcomes, per row (course or attendance), exactly one of:
- loaded: no error (warnings allowed) — merged;
- archived: a course whose only error is C07 (started on or before the cutoff, no exception in force),
  and an attendance row of such a course whose only error is A05 (its course not loaded) — written to
  the cold archive (pseudonymised like the warehouse: teacher_key, never an ID or a name);
- refused: any other error; counted under its first error rule (A05 only when it has no other).
Reconciliation: rows read = loaded + archived + refused, per unit and course year, with samples.

Units found in the rows and missing from the register are registered (production, channel file,
joined at the earliest start date of their courses in the source), listed in the reconciliation.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inservice.backfill.source import MEMORY, Counts, LegacySource, SourceError, key_of, legacy_source
from inservice.channel import rule_context
from inservice.config import TAIPEI, Settings
from inservice.loaders.base import ROW, RawUpload, canonical_schema
from inservice.schemas.fields import ATTENDANCE, COURSE, UNIT_CODE, RecordType
from inservice.validations import normalize
from inservice.validations.engine import Validated, validate
from inservice.validations.findings import for_analysts
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse.analyst import WriteSession, archive_schema
from inservice.warehouse.store import Source, Warehouse, failpoint

BATCH_ROWS = int(os.environ.get("INSERVICE_BACKFILL_BATCH_ROWS", "200000"))  # rows of either table per chunk
SAMPLES_PER_RULE = 5  # kept per chunk and rule (the reconciliation shows the first ones)
UNIT_NAME = "{code}（舊系統移轉登錄）"
ARCHIVED_COURSE, ARCHIVED_ATTENDANCE = "C07", "A05"


def _archive_types(table: pa.Table, name: str) -> pa.Table:
    """The archive's columns in the warehouse's order and types (analyst.archive_schema: hours as
    DECIMAL(5,1) rounded as the warehouse rounds, times in microseconds), so Spark and Trino read it
    with the same definitions as the lake's tables (`lake-ddl --archive`)."""
    schema = archive_schema(name)
    cols = []
    for field in schema:
        col = table[field.name]
        if pa.types.is_decimal(field.type) and pa.types.is_floating(col.type):
            col = pc.round(col, field.type.scale, round_mode="half_towards_infinity")
        cols.append(col.cast(field.type))
    return pa.table(cols, schema=schema)


# --- chunks ---------------------------------------------------------------------------------------------
class _Keyed:
    """A key-ordered stream of canonical tables, taken from in key ranges."""

    def __init__(self, tables: Iterator[pa.Table]) -> None:
        self.tables = tables
        self.buf: list[pa.Table] = []
        self.n = 0
        self.done = False

    def _pull(self) -> bool:
        table = next(self.tables, None)
        if table is None:
            self.done = True
            return False
        if table.num_rows:
            self.buf.append(table)
            self.n += table.num_rows
        return True

    def fill(self, rows: int) -> None:
        while self.n < rows and self._pull():
            pass

    def _whole(self) -> pa.Table | None:
        if not self.buf:
            return None
        if len(self.buf) > 1:  # zero-copy: the engine combines the columns it needs
            self.buf = [pa.concat_tables(self.buf)]
        return self.buf[0]

    def key_at(self, i: int) -> tuple[str, str]:
        return key_of(self._whole(), i)

    def take_through(self, key: tuple[str, str] | None) -> pa.Table | None:
        """Every row whose key is ≤ `key` (None: every row left), reading ahead as needed."""
        if key is None:
            while self._pull():
                pass
        else:
            while not self.done and (not self.buf or key_of(self.buf[-1], self.buf[-1].num_rows - 1) <= key):
                self._pull()
        whole = self._whole()
        if whole is None:
            return None
        if key is None:
            self.buf, self.n = [], 0
            return whole
        unit = pc.fill_null(whole["unit_code"], "")
        course = pc.fill_null(whole["course_code"], "")
        le = pc.or_(pc.less(unit, key[0]), pc.and_(pc.equal(unit, key[0]), pc.less_equal(course, key[1])))
        k = pc.sum(le.cast(pa.int64())).as_py() or 0  # rows are in key order: the mask is a prefix
        head, rest = whole.slice(0, k), whole.slice(k)
        self.buf = [rest] if rest.num_rows else []
        self.n = rest.num_rows
        return head


Chunk = tuple[pa.Table | None, pa.Table | None, tuple[str, str]]  # courses, attendance, the last key


def chunks(courses: Iterator[pa.Table], attendance: Iterator[pa.Table], size: int) -> Iterator[Chunk]:
    """(courses, attendance, last key) of each chunk: cut after about `size` rows of either table, where
    the key changes. Deterministic for a given order of the source's rows."""
    c, a = _Keyed(courses), _Keyed(attendance)
    while True:
        c.fill(size)
        a.fill(size)
        cuts = [s.key_at(size - 1) for s in (c, a) if s.n >= size]
        key = min(cuts) if cuts else None
        part_c, part_a = c.take_through(key), a.take_through(key)
        if key is None:
            if part_c is not None or part_a is not None:
                last = max(key_of(t, t.num_rows - 1) for t in (part_c, part_a) if t is not None)
                yield part_c, part_a, last
            return
        yield part_c, part_a, key


@contextmanager
def prefetched(parts: Iterator[Chunk]) -> Iterator[Iterator[Chunk]]:
    """The chunks, the next one read (sorted, converted) in a thread while this one is validated and
    merged: the source's reading releases the GIL. One chunk ahead at most (memory stays bounded); the
    order is unchanged. The thread is stopped and joined before the source closes."""
    ahead: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for part in parts:
                while not stop.is_set():
                    try:
                        ahead.put((part, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put((end, None))
        except BaseException as exc:  # re-raised where the chunks are taken
            ahead.put((end, exc))

    thread = threading.Thread(target=produce, name="backfill-read", daemon=True)
    thread.start()

    def consume() -> Iterator[Chunk]:
        while True:
            part, exc = ahead.get()
            if exc is not None:
                raise exc
            if part is end:
                return
            yield part

    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to put, then let it finish its read
            try:
                ahead.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


# --- one chunk ------------------------------------------------------------------------------------------
@dataclass
class _Group:
    """One unit's rows of a chunk, validated, with each row's outcome."""

    unit: str
    validated: Validated
    course_outcome: pa.Array
    course_rule: pa.Array
    course_year: pa.Array
    att_outcome: pa.Array
    att_rule: pa.Array
    att_year: pa.Array


def _first_rules(findings: pa.Table, record: str, rows: pa.Array, skip: str) -> tuple[pa.Array, pa.Array]:
    """Per row: its first error rule other than `skip` (else `skip`, if it has it), and whether its errors
    are only `skip`."""
    err = findings.filter(pc.and_(pc.equal(findings["record"], record), pc.equal(findings["severity"], "error")))
    if not err.num_rows:
        return pa.nulls(len(rows), pa.string()), pa.repeat(False, len(rows))
    other = pc.if_else(pc.equal(err["rule"], skip), pa.scalar(None, pa.string()), err["rule"])
    per_row = pa.table({"row": err["row"], "rule": err["rule"], "other": other}).group_by("row").aggregate(
        [("rule", "min"), ("other", "min")])
    idx = pc.index_in(rows, per_row["row"])
    any_rule = pc.take(per_row["rule_min"], idx)
    other_rule = pc.take(per_row["other_min"], idx)
    only_skip = pc.fill_null(pc.and_(pc.is_valid(any_rule), pc.is_null(other_rule)), False)
    return pc.coalesce(other_rule, any_rule), only_skip


def _outcomes(v: Validated) -> tuple[pa.Array, ...]:
    c_rows, a_rows = v.courses[ROW].combine_chunks(), v.attendance[ROW].combine_chunks()
    c_rule, c_only07 = _first_rules(v.findings, "course", c_rows, ARCHIVED_COURSE)
    c_out = pc.if_else(pc.is_null(c_rule), "loaded", pc.if_else(c_only07, "archived", "refused"))
    archived_codes = pc.unique(pc.drop_null(pc.filter(v.courses["course_code"], pc.equal(c_out, "archived"))))
    a_rule, a_only05 = _first_rules(v.findings, "attendance", a_rows, ARCHIVED_ATTENDANCE)
    of_archived = pc.fill_null(pc.is_in(v.attendance["course_code"], value_set=archived_codes), False)
    a_out = pc.if_else(pc.is_null(a_rule), "loaded",
                       pc.if_else(pc.and_(a_only05, of_archived), "archived", "refused"))
    c_year = pc.year(v.courses["start_date"])
    # an attendance row's year is its course's (the first row of that code in the chunk)
    first = pa.table({"course_code": v.courses["course_code"], "y": c_year}).group_by(
        "course_code", use_threads=False).aggregate([("y", "first")])
    a_year = pc.take(first["y_first"], pc.index_in(v.attendance["course_code"], first["course_code"]))
    return (c_out, pc.if_else(pc.equal(c_out, "refused"), c_rule, pa.scalar(None, pa.string())), c_year,
            a_out, pc.if_else(pc.equal(a_out, "refused"), a_rule, pa.scalar(None, pa.string())), a_year)


def _by_unit(table: pa.Table | None) -> dict[str | None, pa.Table]:
    """The rows of each unit code, in their order. The source is sorted by unit code, so each code is
    one run of rows: sliced (no copy); a code met in two runs is filtered as a whole."""
    if table is None or not table.num_rows:
        return {}
    encoded = pc.dictionary_encode(table["unit_code"].combine_chunks(), null_encoding="encode")
    codes = encoded.dictionary.to_pylist()
    idx = encoded.indices.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.diff(idx)) + 1
    if len(starts) + 1 != len(codes):
        return {u: table.filter(pc.equal(encoded.indices, i)) for i, u in enumerate(codes)}
    bounds = [0, *starts.tolist(), len(idx)]
    return {codes[idx[b]]: table.slice(b, e - b) for b, e in zip(bounds, bounds[1:], strict=False)}


# --- the run ----------------------------------------------------------------------------------------------
@dataclass
class Progress:
    chunk: int
    rows_read: int
    rows_total: int
    loaded: int
    archived: int
    refused: int
    skipped: bool  # committed by an earlier run (read again, not processed)
    seconds: float


class Backfill:
    def __init__(self, settings: Settings, warehouse: Warehouse, source: LegacySource,
                 batch_rows: int | None = None, progress: Callable[[Progress], None] | None = None) -> None:
        self.settings = settings
        self.wh = warehouse
        self.source = source
        self.progress = progress
        self.cutoff = settings.archive_cutoff
        self.run_id = hashlib.sha256(f"{source.fingerprint}|{self.cutoff}".encode()).hexdigest()[:16]
        self.pseudonymiser = Pseudonymiser(warehouse_key(settings.home, warehouse))
        if warehouse.backend.embedded:  # its buffer cache would otherwise grow with the warehouse
            warehouse.con.execute(f"SET memory_limit = '{MEMORY}'")
        self.batch_rows, self.started_at, self.finished = self._run_row(batch_rows or BATCH_ROWS)
        self.received_on = self.started_at.astimezone(TAIPEI).date()
        self.folder = settings.home / "backfill" / self.run_id
        self.archive = settings.home / "cold_archive" / self.run_id

    def _run_row(self, batch_rows: int) -> tuple[int, datetime, bool]:
        """The run's settings as first recorded (a re-run continues with the same chunks and times)."""
        rows = self.wh.con.execute("SELECT batch_rows, started_at, finished_at FROM backfill_runs WHERE run_id = ?",
                                   [self.run_id]).fetchall()
        if rows:
            return int(rows[0][0]), rows[0][1], rows[0][2] is not None
        now = datetime.now(TAIPEI)
        with self.wh.transaction():
            self.wh.con.execute("INSERT INTO backfill_runs VALUES (?, ?, ?, ?, ?, NULL)",
                                [self.run_id, self.source.description, self.cutoff, batch_rows, now])
        return batch_rows, self.wh.con.execute("SELECT started_at FROM backfill_runs WHERE run_id = ?",
                                               [self.run_id]).fetchall()[0][0], False

    def run(self) -> dict:
        done = self.wh.con.execute("SELECT coalesce(max(chunk), 0) FROM backfill_chunks WHERE run_id = ?",
                                   [self.run_id]).fetchall()[0][0]
        t0 = time.perf_counter()
        if not self.finished:
            with self.source.open() as reader:
                counts = reader.counts()
                self._record_counts(counts)
                with prefetched(chunks(reader.stream(COURSE), reader.stream(ATTENDANCE), self.batch_rows)) as parts:
                    self._chunks(parts, done, counts, t0)
            self._seal()
            with self.wh.transaction():
                self.wh.con.execute("UPDATE backfill_runs SET finished_at = ? WHERE run_id = ?",
                                    [datetime.now(TAIPEI), self.run_id])
        return self.reconciliation()

    def _chunks(self, parts: Iterator[Chunk], done: int, counts: Counts, t0: float) -> None:
        totals = dict.fromkeys(("loaded", "archived", "refused"), 0)
        read = 0
        for k, (c, a, last) in enumerate(parts, 1):
            read += sum(t.num_rows for t in (c, a) if t is not None)
            if k > done:
                for key, n in self._chunk(k, c, a, last).items():
                    totals[key] += n
            if self.progress is not None:
                self.progress(Progress(k, read, counts.total, totals["loaded"], totals["archived"],
                                       totals["refused"], k <= done, time.perf_counter() - t0))
            failpoint(f"backfill.after_chunk.{k}")

    def _record_counts(self, counts: Counts) -> None:
        self.source_counts = counts

    def _validate(self, unit_raw: str | None, courses: pa.Table, attendance: pa.Table) -> _Group:
        code = normalize.fold(pa.array([unit_raw or ""], pa.string()))[0].as_py() or ""
        unit = self.wh.unit(code)
        area = unit.area if unit is not None else "production"
        ctx = rule_context(self.settings, self.wh, code, "db", self.received_on, self.pseudonymiser,
                           state=self.wh.state(area), warehouse_warnings=False)  # no warning is kept
        v = validate(RawUpload(courses, attendance), ctx)
        return _Group(code, v, *_outcomes(v))

    def _chunk(self, k: int, courses: pa.Table | None, attendance: pa.Table | None,
               last: tuple[str, str]) -> dict[str, int]:
        by_c, by_a = _by_unit(courses), _by_unit(attendance)
        groups = []
        for u in sorted(set(by_c) | set(by_a), key=lambda x: x or ""):
            c = by_c.get(u) or _empty(COURSE)
            a = by_a.get(u) or _empty(ATTENDANCE)
            groups.append(self._validate(u, c, a))
        self._write_archive(k, groups)
        counts, samples, new_units = self._reconcile(k, groups)
        source = Source("backfill", f"backfill-{self.run_id}-{k:06d}")
        rows_read = sum(t.num_rows for t in (courses, attendance) if t is not None)
        with self.wh.transaction():
            for unit, joined in new_units.items():
                self._register(unit, joined)
            areas = self._areas()
            by_area: dict[str, list[Validated]] = {}
            for g in groups:
                if g.unit not in areas:
                    continue  # every row of an unregistrable unit code is refused (C02): nothing to merge
                by_area.setdefault(areas[g.unit], []).append(g.validated)
            for area, vs in sorted(by_area.items()):
                self.wh.merge(_concat(vs), area, source, self.started_at)
            con = self.wh.con
            con.register("bf_counts", counts)
            con.execute("INSERT INTO backfill_counts SELECT * FROM bf_counts").fetchall()
            con.unregister("bf_counts")
            con.register("bf_samples", samples)
            con.execute("INSERT INTO backfill_samples SELECT * FROM bf_samples").fetchall()
            con.unregister("bf_samples")
            con.execute("INSERT INTO backfill_chunks VALUES (?, ?, ?, ?, ?, ?)",
                        [self.run_id, k, last[0], last[1], rows_read, datetime.now(TAIPEI)])
            failpoint(f"backfill.before_commit.{k}")
        return {o: int(pc.sum(counts.filter(pc.equal(counts["outcome"], o))["rows"]).as_py() or 0)
                for o in ("loaded", "archived", "refused")}

    def _areas(self) -> dict[str, str]:
        """Unit code → area (fetched whole: DuckDB takes no Arrow table beside an unfinished result)."""
        rows = self.wh.con.execute("SELECT unit_code, state FROM units").fetchall()
        return {u: "testing" if state == "testing" else "production" for u, state in rows}

    def _register(self, unit: str, joined: date) -> None:
        """A unit of the legacy rows missing from the register: registered with this chunk; a later chunk
        holding an earlier course of it moves its joined date back."""
        con = self.wh.con
        mine = con.execute("SELECT joined FROM backfill_units WHERE run_id = ? AND unit_code = ?",
                           [self.run_id, unit]).fetchall()
        if mine:
            if joined < mine[0][0]:
                con.execute("UPDATE backfill_units SET joined = ? WHERE run_id = ? AND unit_code = ?",
                            [joined, self.run_id, unit]).fetchall()
                con.execute("UPDATE units SET joined = ? WHERE unit_code = ?", [joined, unit]).fetchall()
            return
        if self.wh.unit(unit) is not None:
            return
        self.wh.insert_unit(unit, UNIT_NAME.format(code=unit), "file", "production", joined)
        con.execute("INSERT INTO backfill_units VALUES (?, ?, ?)", [self.run_id, unit, joined]).fetchall()

    def _reconcile(self, k: int, groups: list[_Group]) -> tuple[pa.Table, pa.Table, dict[str, date]]:
        parts, samples = [], []
        new_units: dict[str, date] = {}
        for g in groups:
            v = g.validated
            for record, table, outcome, rule, year in (("course", v.courses, g.course_outcome, g.course_rule,
                                                        g.course_year),
                                                       ("attendance", v.attendance, g.att_outcome, g.att_rule,
                                                        g.att_year)):
                if not table.num_rows:
                    continue
                unit = pc.fill_null(table["unit_code"], "").cast(pa.string())
                rows = pa.table({"unit_code": unit, "year": year.cast(pa.int32()), "record": pa.repeat(record,
                                 table.num_rows), "outcome": outcome, "rule": rule, "n": pa.repeat(1, table.num_rows)})
                parts.append(rows.group_by(["unit_code", "year", "record", "outcome", "rule"],
                                           use_threads=False).aggregate([("n", "sum")]))
                samples.append(self._samples(k, record, table, rule, v.findings))
            if re_unit(g.unit) and self.wh.unit(g.unit) is None or self._registered_here(g.unit):
                dates = pc.drop_null(v.courses["start_date"])
                joined = pc.min(dates).as_py() if len(dates) else self.received_on
                new_units[g.unit] = min(joined, new_units.get(g.unit, joined))
        counts = pa.concat_tables(parts) if parts else None
        if counts is None:
            counts = pa.table({"unit_code": pa.array([], pa.string()), "year": pa.array([], pa.int32()),
                               "record": pa.array([], pa.string()), "outcome": pa.array([], pa.string()),
                               "rule": pa.array([], pa.string()), "n_sum": pa.array([], pa.int64())})
        counts = counts.group_by(["unit_code", "year", "record", "outcome", "rule"], use_threads=False).aggregate(
            [("n_sum", "sum")]).sort_by([(c, "ascending") for c in ("unit_code", "year", "record", "outcome", "rule")])
        counts = pa.table({"run_id": pa.repeat(self.run_id, counts.num_rows),
                           "chunk": pa.repeat(pa.scalar(k, pa.int32()), counts.num_rows),
                           "unit_code": counts["unit_code"], "year": counts["year"], "record": counts["record"],
                           "outcome": counts["outcome"], "rule": counts["rule"],
                           "rows": counts["n_sum_sum"].cast(pa.int64())})
        return counts, pa.concat_tables(samples) if samples else _no_samples(), new_units

    def _registered_here(self, unit: str) -> bool:
        return bool(self.wh.con.execute("SELECT 1 FROM backfill_units WHERE run_id = ? AND unit_code = ?",
                                        [self.run_id, unit]).fetchall())

    def _samples(self, k: int, record: str, table: pa.Table, rule: pa.Array, findings: pa.Table) -> pa.Table:
        """The first SAMPLES_PER_RULE refused rows of each first rule, with that rule's message."""
        refused = pc.is_valid(rule)
        picked = pa.table({"row": table[ROW], "rule": rule}).filter(refused)
        if not picked.num_rows:
            return _no_samples()
        picked = picked.append_column("n", pa.array(range(picked.num_rows), pa.int64()))
        firsts = picked.group_by("rule", use_threads=False).aggregate([("n", "list")])
        keep = sorted(i for lst in firsts["n_list"].to_pylist() for i in lst[:SAMPLES_PER_RULE])
        picked = picked.take(pa.array(keep, pa.int64()))
        f = for_analysts(findings.filter(pc.equal(findings["record"], record)))
        by_key: dict[tuple[int, str], dict] = {}
        for r in f.select(["row", "rule", "course_code", "message_zh", "message_en"]).to_pylist():
            by_key.setdefault((r["row"], r["rule"]), r)
        at = pc.index_in(picked["row"], table[ROW])  # positions of the picked rows in the table
        units = pc.take(table["unit_code"], at).to_pylist()
        masked = (pc.take(table["id_masked"], at).to_pylist() if "id_masked" in table.column_names
                  else [None] * picked.num_rows)
        rows_out = []
        for row, rule_, unit, id_masked in zip(picked["row"].to_pylist(), picked["rule"].to_pylist(), units, masked,
                                               strict=True):
            hit = by_key.get((row, rule_), {})
            rows_out.append({"run_id": self.run_id, "chunk": k, "record": record, "row": row, "rule": rule_,
                             "unit_code": unit, "course_code": hit.get("course_code"), "id_masked": id_masked,
                             "message_zh": hit.get("message_zh"), "message_en": hit.get("message_en")})
        return pa.Table.from_pylist(rows_out, schema=_SAMPLE_SCHEMA)

    # --- the cold archive ---------------------------------------------------------------------------
    def _write_archive(self, k: int, groups: list[_Group]) -> None:
        """This chunk's archived rows as `<table>/year=YYYY/part-<chunk>.parquet` (same bytes on a re-run)."""
        for name, pick in (("courses", lambda g: (g.validated.courses, g.course_outcome, g.course_year)),
                           ("attendance", lambda g: (g.validated.attendance, g.att_outcome, g.att_year))):
            parts = []
            for g in groups:
                table, outcome, year = pick(g)
                mask = pc.equal(outcome, "archived")
                if table.num_rows and pc.any(mask).as_py():
                    parts.append(_archive_types(table, name).append_column("year", year.cast(pa.int32())).filter(mask))
            if not parts:
                continue
            rows = pa.concat_tables(parts)
            for y in sorted(pc.unique(rows["year"]).to_pylist(), key=lambda x: (x is None, x)):
                part = rows.filter(pc.equal(rows["year"], y) if y is not None else pc.is_null(rows["year"]))
                folder = self.archive / name / f"year={y if y is not None else '__HIVE_DEFAULT_PARTITION__'}"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"part-{k:06d}.parquet"
                tmp = folder / f".part-{k:06d}.parquet.tmp"
                pq.write_table(part.drop_columns(["year"]), tmp, compression="zstd")
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, path)

    def _seal(self) -> None:
        """The manifest (rows and SHA-256 per file), then every file and folder read-only. A run killed
        while sealing is sealed by the next one (the manifest is written once, the modes again)."""
        manifest_path = self.archive / "manifest.json"
        self.archive.mkdir(parents=True, exist_ok=True)
        if not manifest_path.exists():
            for tmp in self.archive.rglob(".*.tmp"):  # a killed chunk's unfinished file
                tmp.unlink()
            files = []
            for path in sorted(self.archive.rglob("*.parquet")):
                data = path.read_bytes()
                rel = path.relative_to(self.archive)
                files.append({"path": str(rel), "table": rel.parts[0], "year": rel.parts[1].split("=", 1)[1],
                              "rows": pq.read_metadata(path).num_rows, "sha256": hashlib.sha256(data).hexdigest(),
                              "bytes": len(data)})
            manifest = {"run_id": self.run_id, "source": self.source.description, "cutoff": self.cutoff.isoformat(),
                        "layout": "<table>/year=YYYY/part-<chunk>.parquet (Hive partitions by the course's start "
                                  "year)",
                        "rows": {t: sum(f["rows"] for f in files if f["table"] == t)
                                 for t in ("courses", "attendance")},
                        "files": files}
            tmp = self.archive / ".manifest.json.tmp"
            tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(tmp, manifest_path)
        for path in sorted(self.archive.rglob("*"), key=lambda p: -len(p.parts)):
            path.chmod(0o555 if path.is_dir() else 0o444)
        self.archive.chmod(0o555)

    # --- the reconciliation --------------------------------------------------------------------------
    def reconciliation(self) -> dict:
        con = self.wh.con
        rows = con.execute("""SELECT unit_code, year, record, outcome, rule, sum("rows") FROM backfill_counts
            WHERE run_id = ? GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2 NULLS FIRST, 3, 4, 5 NULLS FIRST""",
                           [self.run_id]).fetchall()
        per: dict[tuple, dict] = {}
        by_record = {r: dict.fromkeys(("read", "loaded", "archived", "refused"), 0) for r in ("course", "attendance")}
        by_rule: dict[str, int] = {}
        for unit, year, record, outcome, rule, n in rows:
            n = int(n)
            entry = per.setdefault((unit, year, record), {"unit_code": unit, "year": year, "record": record,
                                                          "read": 0, "loaded": 0, "archived": 0, "refused": 0})
            entry[outcome] += n
            entry["read"] += n
            by_record[record][outcome] += n
            by_record[record]["read"] += n
            if outcome == "refused":
                by_rule[rule] = by_rule.get(rule, 0) + n
        samples: dict[str, list] = {}
        for rec in con.execute("""SELECT rule, record, "row", unit_code, course_code, id_masked, message_zh,
                message_en FROM backfill_samples WHERE run_id = ? ORDER BY chunk, record, "row" """,
                               [self.run_id]).fetchall():
            kept = samples.setdefault(rec[0], [])
            if len(kept) < SAMPLES_PER_RULE:
                kept.append(dict(zip(("record", "row", "unit_code", "course_code", "id_masked", "message_zh",
                                      "message_en"), rec[1:], strict=True)))
        units = [{"unit_code": u, "joined": j.isoformat()} for u, j in con.execute(
            "SELECT unit_code, joined FROM backfill_units WHERE run_id = ? ORDER BY 1", [self.run_id]).fetchall()]
        chunks_done, finished = con.execute("""SELECT (SELECT count(*) FROM backfill_chunks WHERE run_id = ?),
            (SELECT finished_at FROM backfill_runs WHERE run_id = ?)""", [self.run_id, self.run_id]).fetchall()[0]
        total = {k: sum(r[k] for r in by_record.values()) for k in ("read", "loaded", "archived", "refused")}
        manifest = self.archive / "manifest.json"
        source_counts = getattr(self, "source_counts", None)
        report = {
            "run_id": self.run_id, "source": self.source.description, "cutoff": self.cutoff.isoformat(),
            "complete": finished is not None, "chunks": chunks_done, "batch_rows": self.batch_rows,
            "rows_read": total["read"], "loaded": total["loaded"], "archived": total["archived"],
            "refused": total["refused"],
            "balanced": total["read"] == total["loaded"] + total["archived"] + total["refused"],
            "source_rows": source_counts.total if source_counts else None,
            "by_record": by_record, "refused_by_rule": dict(sorted(by_rule.items())), "samples": dict(sorted(
                samples.items())),
            "per_unit_year": list(per.values()), "units_registered": units,
            "archive": {"folder": str(self.archive), "manifest": str(manifest) if manifest.exists() else None},
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "reconciliation.json"
        tmp = self.folder / ".reconciliation.json.tmp"
        tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
        report["reconciliation_file"] = str(path)
        return report


def re_unit(code: str) -> bool:
    """Can this code be registered (the register's one pattern)?"""
    return bool(re.fullmatch(UNIT_CODE, code or ""))


_SAMPLE_SCHEMA = pa.schema([("run_id", pa.string()), ("chunk", pa.int32()), ("record", pa.string()),
                            ("row", pa.int64()), ("rule", pa.string()), ("unit_code", pa.string()),
                            ("course_code", pa.string()), ("id_masked", pa.string()), ("message_zh", pa.string()),
                            ("message_en", pa.string())])


def _no_samples() -> pa.Table:
    return _SAMPLE_SCHEMA.empty_table()


def _empty(rt: RecordType) -> pa.Table:
    return canonical_schema(rt).empty_table()


def _concat(vs: list[Validated]) -> Validated:
    if len(vs) == 1:
        return vs[0]
    return Validated(pa.concat_tables([v.courses for v in vs], promote_options="permissive"),
                     pa.concat_tables([v.attendance for v in vs], promote_options="permissive"),
                     pa.concat_tables([v.findings for v in vs]))


def verify_archive(folder: Path) -> list[str]:
    """Problems of a sealed archive against its manifest (empty: every file is there, whole and read-only)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    problems = []
    listed = set()
    for f in manifest["files"]:
        path = folder / f["path"]
        listed.add(f["path"])
        if not path.exists():
            problems.append(f"{f['path']}: missing")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != f["sha256"]:
            problems.append(f"{f['path']}: checksum differs")
        elif pq.read_metadata(path).num_rows != f["rows"]:
            problems.append(f"{f['path']}: row count differs")
        if path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            problems.append(f"{f['path']}: writable")
    for path in folder.rglob("*.parquet"):
        if str(path.relative_to(folder)) not in listed:
            problems.append(f"{path.relative_to(folder)}: not in the manifest")
    return problems


def run_backfill(settings: Settings, source_text: str, batch_rows: int | None = None,
                 progress: Callable[[Progress], None] | None = None, session: WriteSession | None = None) -> dict:
    """Open the warehouse, migrate (or continue migrating) the legacy source; returns the reconciliation.
    The session's end refreshes the analysts' access (pass one to read what the refresh did)."""
    source = legacy_source(source_text)
    with session or WriteSession(settings) as wh:
        return Backfill(settings, wh, source, batch_rows, progress).run()


__all__ = ["Backfill", "Progress", "SourceError", "chunks", "run_backfill", "verify_archive"]
