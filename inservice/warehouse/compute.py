"""Where the statistics run: DuckDB, whichever backend holds the warehouse.

The publications (monthly tables, yearbook, county export) are one body of DuckDB SQL. On the DuckDB
backend it runs on the warehouse itself. On PostgreSQL the slice it reads (a month's window of
courses and their attendance, a year, a county's units) is copied into an in-memory DuckDB, the same
SQL runs there, and what it publishes (stat_* rows of one key, a snapshot's register row) is written
back to PostgreSQL by COPY in one transaction. So both backends give the same statistics by
construction, and no statistics SQL exists twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa

from inservice.warehouse.backend import Connection
from inservice.warehouse.postgres import copy_in
from inservice.warehouse.store import Warehouse


class Compute:
    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh
        self.mirrored = wh.backend.server
        self.con: duckdb.DuckDBPyConnection = duckdb.connect(":memory:") if self.mirrored else wh.con  # type: ignore[assignment]
        self._pushes: list[tuple[str, str, list[Any]]] = []

    def close(self) -> None:
        if self.mirrored:
            self.con.close()

    def connections(self) -> list[Connection]:
        """Where a DDL step must run: the compute connection, and the warehouse when they differ."""
        return [self.con, self.wh.con] if self.mirrored else [self.con]

    def pull(self, table: str, where: str = "true", params: Sequence[Any] = ()) -> None:
        """Copy `table`'s rows matching `where` into the compute DuckDB (a no-op on DuckDB itself).

        Streamed in batches through a server-side cursor (memory: the copy, not also a Python list of
        it). The copy keeps the warehouse's column types (numeric precision, time zones), so the SQL
        gives the same answers as on the warehouse."""
        if not self.mirrored:
            return
        batches = self.wh.con.stream(f"SELECT * FROM {table} WHERE {where}", params)  # type: ignore[attr-defined]
        first = next(batches, None)
        if first is None:  # no rows: the columns and types from an empty result
            first = self.wh.con.sql(f"SELECT * FROM {table} WHERE false").to_arrow_table()
        self._from_arrow(f"CREATE OR REPLACE TABLE {table} AS", first)
        for batch in batches:
            self._from_arrow(f"INSERT INTO {table}", batch)

    def _from_arrow(self, head: str, rows: pa.Table | pa.RecordBatch) -> None:
        self.con.register("pulled", rows)
        try:
            self.con.execute(f"{head} SELECT * FROM pulled")
        finally:
            self.con.unregister("pulled")

    def push(self, table: str, where: str, params: Sequence[Any]) -> None:
        """Publish `table`'s rows matching `where` to the warehouse when the transaction commits
        (replacing the warehouse's rows that match). A no-op on DuckDB: they were written in place."""
        if self.mirrored:
            self._pushes.append((table, where, list(params)))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All of a publication or none of it, on the warehouse."""
        if not self.mirrored:
            with self.wh.transaction():
                yield
            return
        self._pushes = []
        yield
        with self.wh.transaction():
            for table, where, params in self._pushes:
                self.wh.con.execute(f"DELETE FROM {table} WHERE {where}", params)
                rows = self.con.sql(f"SELECT * FROM {table} WHERE {where}", params=params).to_arrow_table()
                with self.wh.con.cursor() as cur:  # type: ignore[attr-defined]
                    copy_in(cur, table, rows)

    def run(self, step: Callable[[Connection], None]) -> None:
        for con in self.connections():
            step(con)


@contextmanager
def compute_session(wh: Warehouse) -> Iterator[Compute]:
    cx = Compute(wh)
    try:
        yield cx
    finally:
        cx.close()
