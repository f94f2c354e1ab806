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
  for runs; the lock also covers a CLI run beside Dagster). Readers never wait on it (MVCC);
- a writer waits for any lock at most `lock_timeout` (INSERVICE_PG_LOCK_TIMEOUT, 60s), then fails
  whole with a RetryLater (exit 75): nobody's open transaction can stall loads for ever;
- connection failures are one line that never shows the password.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv as pacsv

from inservice.dburl import mask_text, redact_url
from inservice.errors import OperatorError, RetryLater

CONNECT_TIMEOUT = 15  # seconds, unless the URL sets connect_timeout
WRITER_LOCK = 0x1A5E_7E71  # pg_advisory_xact_lock key: one warehouse writer at a time
_CREATE_OR_REPLACE_TEMP = re.compile(r"^\s*CREATE\s+OR\s+REPLACE\s+TEMP(?:ORARY)?\s+TABLE\s+([\w.\"]+)",
                                     re.IGNORECASE)
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|\$\d+|%", re.DOTALL)

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


# Each is also a psycopg2.OperationalError, so code that catches the driver's errors (Dagster's retry
# policy, the sensors) sees them as before.
class WarehouseLockTimeout(RetryLater, psycopg2.OperationalError):
    """A lock the load needs was held by another session for longer than INSERVICE_PG_LOCK_TIMEOUT."""


class WarehouseUnreachable(RetryLater, psycopg2.OperationalError):
    """The PostgreSQL server could not be reached (down, restarting, network, too many connections)."""


class WarehouseLoginFailed(OperatorError, psycopg2.OperationalError):
    """The server answered but refused the URL: wrong password, no such database, a malformed URL."""


@contextmanager
def lock_waits() -> Iterator[None]:
    """A statement that waited past lock_timeout: the transaction is void, the load can be run again."""
    try:
        yield
    except psycopg2.errors.LockNotAvailable as exc:
        raise WarehouseLockTimeout(
            f"a warehouse table was locked by another session for more than {lock_timeout()} "
            f"(INSERVICE_PG_LOCK_TIMEOUT; an open transaction or LOCK TABLE, see pg_locks): nothing was "
            f"written, run the command again later") from exc


def lock_timeout() -> str:
    """INSERVICE_PG_LOCK_TIMEOUT: how long a load waits for a lock (PostgreSQL interval text)."""
    return os.environ.get("INSERVICE_PG_LOCK_TIMEOUT", "60s").strip() or "60s"


# libpq's words for "the server is not there (now)": trying again later can help
_UNREACHABLE = re.compile(r"(?i)connection refused|timeout expired|timed out|could not translate host name|"
                          r"no route to host|network is unreachable|the database system is (starting up|"
                          r"shutting down|in recovery mode)|too many (clients|connections)|server closed the "
                          r"connection|could not connect|connection reset")


def open_connection(dsn: str) -> psycopg2.extensions.connection:
    """psycopg2.connect with a connect timeout and a name the DBA sees; failures as one line that never
    shows the password (libpq quotes the whole URL when it cannot parse it)."""
    try:
        given = psycopg2.extensions.parse_dsn(dsn)
        extra = {k: v for k, v in (("connect_timeout", CONNECT_TIMEOUT), ("application_name", "inservice"))
                 if k not in given}
        return psycopg2.connect(dsn, **extra)
    except psycopg2.Error as exc:
        shown = redact_url(dsn) if "://" in dsn else "the warehouse"
        reason = mask_text(" ".join(str(exc).split()), [dsn])[:300] or type(exc).__name__
        if isinstance(exc, psycopg2.OperationalError) and _UNREACHABLE.search(str(exc)):
            raise WarehouseUnreachable(f"warehouse server unreachable ({shown}): {reason}; run the command again "
                                       f"when it is up") from None
        raise WarehouseLoginFailed(f"cannot open the warehouse ({shown}): {reason}; check "
                                   f"INSERVICE_WAREHOUSE_URL") from None


# Functions with which any session could hold a lock a writer then waits for (the writer lock above
# is one): EXECUTE is revoked from PUBLIC in the warehouse database (advisory locks are per
# database) by `grant-analyst`. Row locks (SELECT … FOR UPDATE/SHARE) and LOCK TABLE in any mode
# but ACCESS SHARE need UPDATE/INSERT/DELETE privileges, which the analyst role has not; ACCESS
# SHARE (what every SELECT takes) only blocks DDL, and lock_timeout bounds that wait.
BLOCKING_FUNCTIONS = tuple(f"pg_catalog.{name}({args})" for name in (
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared") for args in ("bigint", "integer, integer"))


def revoke_blocking_functions(con: PgConnection, role: str) -> None:
    """`role` (and PUBLIC) may not take advisory locks; the loader (this session's user and the owner of
    the warehouse tables) keeps them. Only a superuser can revoke these: anyone else is told so and
    nothing changes (the caller's transaction rolls back)."""
    funcs = ", ".join(BLOCKING_FUNCTIONS)
    owner = con.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'main' AND tablename = 'courses'"
                        ).fetchone()
    loaders = {'CURRENT_USER'} | ({'"' + owner[0].replace('"', '""') + '"'} if owner else set())
    con.execute(f"REVOKE EXECUTE ON FUNCTION {funcs} FROM PUBLIC")
    con.execute(f'REVOKE EXECUTE ON FUNCTION {funcs} FROM "{role}"')
    con.execute(f"GRANT EXECUTE ON FUNCTION {funcs} TO {', '.join(sorted(loaders))}")
    if (con.execute("SELECT has_function_privilege(?, 'pg_catalog.pg_advisory_lock(bigint)', 'EXECUTE')",
                    [role]).fetchone() or (False,))[0]:
        raise OperatorError(f"grant-analyst must be run by a superuser: only one can stop role {role} from "
                            f"taking advisory locks (pg_advisory_lock…) that would stall every load; nothing was "
                            f"changed")


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
        self._void: Exception | None = None  # the error that aborted the open transaction
        self.raw = open_connection(dsn)
        self.raw.autocommit = True  # transactions are explicit (begin/commit), as on DuckDB
        with self.raw.cursor() as cur:
            cur.execute("SET search_path TO main, public; SET TimeZone TO 'UTC'")
            # the merge hash-joins a month's staged rows with the warehouse: 4 MB (the default)
            # makes those joins sort on disk
            cur.execute("SET work_mem TO %s", (os.environ.get("INSERVICE_PG_WORK_MEM", "256MB"),))
            # a writer never waits forever behind another session's lock (an analyst's open
            # transaction, a DBA's LOCK TABLE): past this it gives up whole and says "retry"
            cur.execute("SET lock_timeout TO %s", (lock_timeout(),))
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

    def _aborted(self) -> bool:
        return not self.raw.closed and (self.raw.info.transaction_status
                                        == psycopg2.extensions.TRANSACTION_STATUS_INERROR)

    @contextmanager
    def _statement(self) -> Iterator[None]:
        """A statement in a transaction an error has voided raises that error again (a clean-up in a
        `finally` must not replace it by "current transaction is aborted")."""
        if self._void is not None and self._aborted():
            raise self._void
        try:
            with lock_waits():
                yield
        except Exception as exc:
            self._void = exc
            raise

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgResult:
        cur = self.raw.cursor()
        m = _CREATE_OR_REPLACE_TEMP.match(sql)
        if m:
            cur.execute(f"DROP TABLE IF EXISTS {m.group(1)}")
            sql = re.sub(r"OR\s+REPLACE\s+", "", sql, count=1, flags=re.IGNORECASE)
        with self._statement():
            cur.execute(*self._bind(sql, params))
        if m:  # autovacuum never analyses temp tables: without this the planner guesses their size
            cur.execute(f"ANALYZE {m.group(1)}")
        return PgResult(cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur, self._statement():
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
        if self._aborted():  # the rollback drops what the transaction created
            return
        with self._own_temp_tables() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{name}"')

    def begin(self) -> None:
        self._void = None
        with self.raw.cursor() as cur:
            cur.execute("BEGIN")
            if not self.read_only:
                try:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
                except psycopg2.errors.LockNotAvailable:
                    cur.execute("ROLLBACK")
                    raise WarehouseLockTimeout(
                        f"warehouse busy: another load has been writing for more than {lock_timeout()} "
                        f"(INSERVICE_PG_LOCK_TIMEOUT); nothing was written, run the command again later") from None

    def commit(self) -> None:
        self._void = None
        with self.raw.cursor() as cur:
            cur.execute("COMMIT")

    def rollback(self) -> None:
        self._void = None
        if self.raw.closed:
            return
        with self.raw.cursor() as cur:
            cur.execute("ROLLBACK")

    def close(self) -> None:
        if not self.raw.closed:
            self.raw.close()
