"""The PostgreSQL warehouse backend: the few things PostgreSQL does differently, in one place.

The warehouse code is written once, against the subset of a DuckDB connection it uses (`execute`
with `?` parameters, `register` of an Arrow table, `sql(...).to_arrow_table()`, `begin`/`commit`).
`PgConnection` offers that subset on psycopg2, so the merge, the rules' state queries, feeds and
corrections run unchanged. What differs lives here:

- parameters: `?` becomes psycopg2's `%s` (outside quoted text);
- `CREATE OR REPLACE TEMP TABLE x AS` (DuckDB) becomes `DROP TABLE IF EXISTS x; CREATE TEMP TABLE x AS`;
- a registered Arrow table becomes a temp table filled by COPY (never row inserts);
- a statement without a result set answers `fetchone()` with its row count, as DuckDB does;
- writers are serialised by a transaction-scoped advisory lock (the Dagster pool does the same
  for runs; the lock also covers a CLI run beside Dagster). Readers never wait on it (MVCC).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv as pacsv

WRITER_LOCK = 0x1A5E_7E71  # pg_advisory_xact_lock key: one warehouse writer at a time
_CREATE_OR_REPLACE_TEMP = re.compile(r"^\s*CREATE\s+OR\s+REPLACE\s+TEMP(?:ORARY)?\s+TABLE\s+([\w.\"]+)",
                                     re.IGNORECASE)
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|\$\d+|%", re.DOTALL)

# Indexes PostgreSQL needs and DuckDB does not (DuckDB scans with zone maps; a PRIMARY KEY there
# makes loads 4–8× slower). Here the keys are enforced, and the rules' per-unit look-ups and the
# merge's joins use them instead of scanning tens of millions of rows per upload.
INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS {s}_courses_key ON {s}.courses (unit_code, course_code)",
    "CREATE UNIQUE INDEX IF NOT EXISTS {s}_attendance_key ON {s}.attendance (unit_code, course_code, teacher_key)",
    "CREATE INDEX IF NOT EXISTS {s}_courses_session ON {s}.courses (organizer, title)",
    "CREATE INDEX IF NOT EXISTS {s}_history_course ON {s}.history (unit_code, course_code)",
)
SHARED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS uploads_id ON main.uploads (upload_id)",
    "CREATE INDEX IF NOT EXISTS findings_upload ON main.findings (upload_id)",
    "CREATE INDEX IF NOT EXISTS upload_receipts_id ON main.upload_receipts (upload_id)",
    "CREATE INDEX IF NOT EXISTS uploads_hash ON main.uploads (unit_code, content_hash)",
)


def index_statements(schemas: Sequence[str]) -> list[str]:
    return [i.format(s=s) for s in schemas for i in INDEXES] + list(SHARED_INDEXES)


# PostgreSQL type OIDs → Arrow types, for results read back as Arrow.
_OID_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 25: pa.string(), 1043: pa.string(),
    1042: pa.string(), 700: pa.float32(), 701: pa.float64(), 1082: pa.date32(),
    1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"), 114: pa.string(), 3802: pa.string(),
}


def _arrow_type(col: Any) -> pa.DataType:
    if col.type_code == 1700:  # numeric: keep its declared precision and scale when there is one
        if col.precision and col.precision < 39 and col.scale is not None and col.scale >= 0:
            return pa.decimal128(col.precision, col.scale)
        return pa.decimal128(38, 10)
    return _OID_TYPES.get(col.type_code, pa.string())


def pg_type(t: pa.DataType) -> str:
    """The PostgreSQL column type a registered Arrow column becomes."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE PRECISION"
    if pa.types.is_decimal(t):
        return f"NUMERIC({t.precision},{t.scale})"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    raise TypeError(f"no PostgreSQL column type for Arrow type {t}")


def translate(sql: str, with_params: bool) -> str:
    """`?` → `%s` and `$n` → `%(pn)s` outside quoted text; a literal `%` is doubled when psycopg2
    will interpolate."""
    def sub(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "?":
            return "%s"
        if tok.startswith("$"):
            return f"%(p{tok[1:]})s"
        if tok == "%":
            return "%%" if with_params else "%"
        if with_params and "%" in tok and not tok.startswith("--"):
            return tok.replace("%", "%%")
        return tok
    return _TOKENS.sub(sub, sql)


def copy_in(cur: psycopg2.extensions.cursor, target: str, table: pa.Table, chunk_rows: int = 500_000) -> int:
    """COPY an Arrow table into `target` as CSV, in chunks (bounded memory). Nulls are unquoted empty
    fields, empty strings quoted ones, so COPY tells them apart."""
    names = ", ".join(f'"{c}"' for c in table.column_names)
    sql = f"COPY {target} ({names}) FROM STDIN WITH (FORMAT csv)"
    options = pacsv.WriteOptions(include_header=False)
    for start in range(0, table.num_rows, chunk_rows):
        buf = io.BytesIO()
        pacsv.write_csv(table.slice(start, chunk_rows), buf, options)
        buf.seek(0)
        cur.copy_expert(sql, buf)
    return table.num_rows


class PgResult:
    """What `execute` returns: the cursor's rows, or (row count,) for a statement without rows."""

    def __init__(self, cur: psycopg2.extensions.cursor) -> None:
        self._cur = cur
        self.description = cur.description
        self._count = None if cur.description is not None else [(cur.rowcount,)]

    def fetchone(self) -> tuple | None:
        if self._count is not None:
            return self._count.pop(0) if self._count else None
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        if self._count is not None:
            out, self._count = self._count, []
            return out
        return self._cur.fetchall()

    def to_arrow_table(self) -> pa.Table:
        if self.description is None:
            raise ValueError("the statement returned no rows to read")
        return pa.Table.from_batches([to_batch(self.description, self._cur.fetchall())])


def to_batch(description: Sequence[Any], rows: list[tuple]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(description)
    arrays = [pa.array(list(values), type=_arrow_type(col)) for col, values in zip(description, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, names=[col.name for col in description])


class PgConnection:
    """The DuckDB-connection subset the warehouse code uses, on one psycopg2 connection."""

    backend = "postgresql"

    def __init__(self, dsn: str, read_only: bool = False) -> None:
        self.read_only = read_only
        self.raw = psycopg2.connect(dsn)
        self.raw.autocommit = True  # transactions are explicit (begin/commit), as on DuckDB
        with self.raw.cursor() as cur:
            cur.execute("SET search_path TO main, public; SET TimeZone TO 'UTC'")
            # the merge hash-joins a month's staged rows with the warehouse: 4 MB (the default)
            # makes those joins sort on disk
            cur.execute("SET work_mem TO %s", (os.environ.get("INSERVICE_PG_WORK_MEM", "256MB"),))
            if read_only:
                cur.execute("SET default_transaction_read_only TO on")

    def cursor(self) -> psycopg2.extensions.cursor:
        return self.raw.cursor()

    @staticmethod
    def _bind(sql: str, params: Sequence[Any] | None) -> tuple[str, Any]:
        """The statement and arguments as psycopg2 takes them: `$n` parameters (DuckDB's numbered
        form) go by name, `?` by position."""
        if params is None:
            return translate(sql, False), None
        named = re.search(r"\$\d", sql)
        return translate(sql, True), {f"p{i}": v for i, v in enumerate(params, 1)} if named else tuple(params)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgResult:
        cur = self.raw.cursor()
        m = _CREATE_OR_REPLACE_TEMP.match(sql)
        if m:
            cur.execute(f"DROP TABLE IF EXISTS {m.group(1)}")
            sql = re.sub(r"OR\s+REPLACE\s+", "", sql, count=1, flags=re.IGNORECASE)
        cur.execute(*self._bind(sql, params))
        if m:  # autovacuum never analyses temp tables: without this the planner guesses their size
            cur.execute(f"ANALYZE {m.group(1)}")
        return PgResult(cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql, True), [tuple(r) for r in rows])

    def sql(self, sql: str, params: Sequence[Any] | None = None) -> PgResult:
        return self.execute(sql, params)

    def stream(self, sql: str, params: Sequence[Any] | None = None, rows: int = 200_000
               ) -> Iterator[pa.RecordBatch]:
        """Arrow batches of a query through a server-side cursor: memory bounded by `rows`."""
        with self.raw.cursor(name=f"stream_{id(self):x}", withhold=True) as cur:
            cur.itersize = rows
            cur.execute(*self._bind(sql, params))
            while True:
                chunk = cur.fetchmany(rows)
                if not chunk:
                    break
                yield to_batch(cur.description, chunk)

    @contextmanager
    def _own_temp_tables(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor that may create and drop this session's temp tables, even on a read-only
        connection (the guard against writes is for the warehouse's tables)."""
        with self.raw.cursor() as cur:
            if self.read_only:
                cur.execute("SET default_transaction_read_only TO off")
            try:
                yield cur
            finally:
                if self.read_only:
                    cur.execute("SET default_transaction_read_only TO on")

    def register(self, name: str, table: pa.Table) -> None:
        """A temp table of the Arrow table's rows (DuckDB registers a zero-copy view instead)."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        cols = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in table.schema)
        with self._own_temp_tables() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{name}"')
            cur.execute(f'CREATE TEMP TABLE "{name}" ({cols})')
            copy_in(cur, f'"{name}"', table)
            cur.execute(f'ANALYZE "{name}"')

    def unregister(self, name: str) -> None:
        with self._own_temp_tables() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{name}"')

    def begin(self) -> None:
        with self.raw.cursor() as cur:
            cur.execute("BEGIN")
            if not self.read_only:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))

    def commit(self) -> None:
        with self.raw.cursor() as cur:
            cur.execute("COMMIT")

    def rollback(self) -> None:
        if self.raw.closed:
            return
        with self.raw.cursor() as cur:
            cur.execute("ROLLBACK")

    def close(self) -> None:
        if not self.raw.closed:
            self.raw.close()
