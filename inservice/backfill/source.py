"""The legacy archive as the backfill reads it: a database (the feeds' reader) or a folder of Parquet/CSV.

Both give the two tables of a feed (spec §2.1–2.2: columns named by field code) as canonical text
tables (loaders.base), streamed in chunks, every row once, ordered by unit_code, course_code and then
every other column in byte order with nulls first. That total order makes the chunks the same on every
read, so a re-run after a kill continues where the last committed chunk ended.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from inservice.errors import OperatorError
from inservice.feeds.register import FeedSpec
from inservice.feeds.source import PartnerSource, masked_url
from inservice.loaders.base import ROW, UploadRefused, canonical_table, fold_header
from inservice.schemas.fields import ATTENDANCE, COURSE, RecordType

FOLDERS = {COURSE.name: COURSE.feed_table, ATTENDANCE.name: ATTENDANCE.feed_table}  # inservice_courses/…
MEMORY = os.environ.get("INSERVICE_BACKFILL_DUCKDB_MEMORY", "1GB")  # each DuckDB of a backfill (sort, warehouse)


class SourceError(OperatorError):
    """The source cannot be read as a legacy archive (one line: what and where; exit 1)."""


@dataclass(frozen=True)
class Counts:
    courses: int
    attendance: int

    @property
    def total(self) -> int:
        return self.courses + self.attendance


class LegacySource:
    """`open()` yields a reader with `counts()` and `stream(rt)` (canonical tables, key order)."""

    description: str  # shown and recorded (a URL without its password, or the folder)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.description.encode()).hexdigest()

    def open(self):  # pragma: no cover - interface
        raise NotImplementedError


def legacy_source(text: str, chunk_rows: int = 50_000) -> LegacySource:
    """A database URL (`postgresql://…`, `mysql://…`, `mssql://…`) or a folder."""
    if "://" in text:
        return DatabaseSource(text, chunk_rows)
    path = Path(text)
    if not path.is_dir():
        raise SourceError(f"backfill source {text} is neither a database URL nor a folder")
    return FolderSource(path.resolve(), chunk_rows)


# --- a folder ------------------------------------------------------------------------------------------
class FolderSource(LegacySource):
    """`inservice_courses/` and `inservice_attendance/` holding Parquet files or CSV files (UTF-8, a
    header row), read by DuckDB; every value is read as text (Parquet dates and numbers as their text)."""

    def __init__(self, folder: Path, chunk_rows: int) -> None:
        self.folder = folder
        self.chunk_rows = chunk_rows
        self.description = str(folder)

    def _scan(self, rt: RecordType) -> str:
        sub = self.folder / FOLDERS[rt.name]
        parquet, csv = sorted(sub.glob("*.parquet")), sorted(sub.glob("*.csv"))
        if not parquet and not csv:
            raise SourceError(f"backfill source {self.folder}: no Parquet or CSV files in {sub}")
        if parquet and csv:
            raise SourceError(f"backfill source {sub}: holds both Parquet and CSV files; keep one kind")
        pattern = str(sub / ("*.parquet" if parquet else "*.csv")).replace("'", "''")
        if parquet:
            return f"read_parquet('{pattern}', union_by_name = true)"
        return f"read_csv('{pattern}', header = true, all_varchar = true, union_by_name = true)"

    @contextmanager
    def open(self) -> Iterator[FolderReader]:
        # the key-order sort spills past MEMORY into a private folder (it holds the source's raw rows),
        # removed however the run ends but a kill; a killed run's is in the system's temp folder, 0700
        with tempfile.TemporaryDirectory(prefix="inservice-backfill-sort-") as spill:
            con = duckdb.connect(config={"memory_limit": MEMORY, "temp_directory": spill})
            try:
                yield FolderReader(self, con)
            finally:
                con.close()


class FolderReader:
    def __init__(self, source: FolderSource, con: duckdb.DuckDBPyConnection) -> None:
        self.source = source
        self.con = con
        self.columns = {rt.name: self._columns(rt) for rt in (COURSE, ATTENDANCE)}

    def _columns(self, rt: RecordType) -> dict[str, str]:
        """Field code → the file's column (matched like a feed's columns: code or label, folded)."""
        cur = self.con.cursor()
        try:
            names = [d[0] for d in cur.execute(f"SELECT * FROM {self.source._scan(rt)} LIMIT 0").description]
            cur.fetchall()
        except duckdb.Error as exc:
            raise SourceError(f"backfill source {self.source.folder / FOLDERS[rt.name]} cannot be read: "
                              f"{str(exc).splitlines()[0]}") from exc
        finally:
            cur.close()
        by_key = {fold_header(k): f.code for f in rt.fields for k in (f.code, f.label)}
        mapped: dict[str, str] = {}
        for name in names:
            code = by_key.get(fold_header(name))
            if code is not None and code not in mapped:
                mapped[code] = name
        missing = [f.code for f in rt.fields if f.required_in("db") and f.code not in mapped]
        if missing:
            raise SourceError(f"backfill source {self.source.folder / FOLDERS[rt.name]} lacks column(s) "
                              f"{', '.join(missing)} (spec §2.1–2.2: columns named by field code)")
        return mapped

    def counts(self) -> Counts:
        n = {rt.name: self.con.execute(f"SELECT count(*) FROM {self.source._scan(rt)}").fetchall()[0][0]
             for rt in (COURSE, ATTENDANCE)}
        return Counts(n["course"], n["attendance"])

    def stream(self, rt: RecordType) -> Iterator[pa.Table]:
        cols = self.columns[rt.name]
        text = {code: f'CAST("{name}" AS VARCHAR)' for code, name in cols.items()}
        first = [c for c in ("unit_code", "course_code") if c in text]
        order = ", ".join(f"{text[c]} NULLS FIRST" for c in [*first, *(c for c in text if c not in first)])
        select = ", ".join(f'{expr} AS "{code}"' for code, expr in text.items())
        cur = self.con.cursor()
        try:
            reader = cur.sql(f"SELECT {select} FROM {self.source._scan(rt)} ORDER BY {order}").to_arrow_reader(
                self.source.chunk_rows)
            first_row = 1
            for batch in reader:
                n = batch.num_rows
                if n == 0:
                    continue
                texts = {code: batch.column(i) for i, code in enumerate(text)}
                yield canonical_table(rt, pa.array(range(first_row, first_row + n), pa.int64()), texts)
                first_row += n
        finally:
            cur.close()


# --- a database ------------------------------------------------------------------------------------------
class DatabaseSource(LegacySource):
    """The legacy system's two tables (`inservice_courses`, `inservice_attendance`, as a feed reads them),
    through the feeds' reader: the same drivers, column mapping (F07), value conversion and streaming."""

    def __init__(self, url: str, chunk_rows: int) -> None:
        try:
            self.url = make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            raise SourceError("backfill source is not a database URL (the value is not shown: it may hold "
                              "a password)") from None
        self.chunk_rows = chunk_rows
        self.description = masked_url(self.url)

    @contextmanager
    def open(self) -> Iterator[DatabaseReader]:
        source = PartnerSource(FeedSpec("", ""), self.chunk_rows, url=self.url)
        try:
            with source.open() as reader:
                yield DatabaseReader(reader)
        except UploadRefused as refusal:
            raise SourceError(f"backfill source {self.description}: {refusal.detail_en}") from None


class DatabaseReader:
    def __init__(self, reader) -> None:
        self.reader = reader

    def counts(self) -> Counts:
        n = {}
        for m in (self.reader.courses, self.reader.attendance):
            n[m.rt.name] = int(self.reader.conn.execute(sa.select(sa.func.count()).select_from(m.table)).scalar_one())
        return Counts(n["course"], n["attendance"])

    def stream(self, rt: RecordType) -> Iterator[pa.Table]:
        m = self.reader.courses if rt.name == "course" else self.reader.attendance
        try:
            for chunk in self.reader.stream_by_key(m):
                yield chunk.table
        except UploadRefused as refusal:
            raise SourceError(f"backfill source: {refusal.detail_en}") from None


def key_of(table: pa.Table, i: int) -> tuple[str, str]:
    """Row i's (unit_code, course_code) as the order compares them (null as the empty text)."""
    return (table["unit_code"][i].as_py() or "", table["course_code"][i].as_py() or "")


__all__ = ["ROW", "Counts", "LegacySource", "SourceError", "key_of", "legacy_source"]
