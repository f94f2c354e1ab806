"""Which warehouse: one setting, `INSERVICE_WAREHOUSE_URL`, picks the backend.

- `duckdb:///path/warehouse.duckdb` (the default, under $INSERVICE_HOME): embedded, one file.
- `postgresql://user@host:5432/db` (`postgres://` and `postgresql+psycopg2://` too): a server.
- anything else that looks like a URL (a scheme, `user:…@`) is refused; the message hides the password.

Everything above this module is written once against a `Connection`: the DuckDB subset the
warehouse uses, which `postgres.PgConnection` provides on PostgreSQL. The handful of SQL fragments
that cannot be written portably are the functions below, one branch per backend. Code outside
`inservice/warehouse/` never compares backend names: it asks the `Backend` (`wh.backend.embedded`…).
The errors worth another attempt (`TRANSIENT_ERRORS`) are declared here, for every caller.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import duckdb
import psycopg2

from inservice.dburl import dialect_of, redact_url
from inservice.errors import OperatorError, RetryLater
from inservice.warehouse.postgres import PgConnection


class Result(Protocol):
    """What `Connection.execute` returns (the DuckDB connection itself, or postgres.PgResult)."""

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The connection both backends offer the warehouse code: DuckDB's own (`duckdb.DuckDBPyConnection`)
    and `postgres.PgConnection`, which gives PostgreSQL the same subset. `?` parameters (or `$n`)."""

    def execute(self, sql: str, params: Any = None, /) -> Result: ...

    def sql(self, sql: str, /, *, params: Any = None) -> Any: ...  # `.to_arrow_table()` of the query

    def register(self, name: str, table: Any, /) -> Any: ...  # an Arrow table readable as `name`

    def unregister(self, name: str, /) -> Any: ...

    def begin(self) -> Any: ...

    def commit(self) -> Any: ...

    def rollback(self) -> Any: ...

    def close(self) -> None: ...


class Backend(StrEnum):
    """Which backend holds the warehouse. Ask its properties; never compare its name outside warehouse/."""

    DUCKDB = "duckdb"
    POSTGRESQL = "postgresql"

    @property
    def embedded(self) -> bool:
        """DuckDB: one file that one process holds at a time; analysts read a published copy of it."""
        return self is Backend.DUCKDB

    @property
    def server(self) -> bool:
        """PostgreSQL: readers and the loader share the server (MVCC); analysts log in with a read-only role."""
        return self is Backend.POSTGRESQL


DUCKDB, POSTGRESQL = Backend.DUCKDB, Backend.POSTGRESQL
LOCK_TIMEOUT_ENV = "INSERVICE_LOCK_TIMEOUT"  # seconds to wait for another process's hold on the file
DEFAULT_LOCK_TIMEOUT = 60.0


class WarehouseBusy(RetryLater, TimeoutError):
    """Another process holds the warehouse (DuckDB: one process at a time) for longer than the
    lock timeout. Retrying later helps: the CLI exits 75 (EX_TEMPFAIL); a TimeoutError is what
    Dagster's retry policy treats as transient."""


def lock_timeout() -> float:
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={text!r}: give a number of seconds") from None


class WarehouseUrlError(OperatorError, ValueError):
    """INSERVICE_WAREHOUSE_URL names no warehouse this project can open (the message hides passwords)."""


# a scheme-like start (`duckdb:/x`, `garbage:secret@h`): meant as a URL, not a file path
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_FORMS = "duckdb:///path/warehouse.duckdb or postgresql://user@host:5432/db"


@dataclass(frozen=True)
class WarehouseUrl:
    backend: Backend
    target: str  # DuckDB: a file path; PostgreSQL: a libpq URI

    @classmethod
    def parse(cls, url: str | Path) -> WarehouseUrl:
        text = str(url)
        if isinstance(url, Path):
            return cls(DUCKDB, text)
        if "://" not in text:
            if _SCHEME_LIKE.match(text) or "@" in text:
                raise WarehouseUrlError(f"INSERVICE_WAREHOUSE_URL is not a warehouse URL ({_FORMS}): "
                                        f"{redact_url(text)}")
            return cls(DUCKDB, text)  # a plain file path
        scheme, rest = text.split("://", 1)
        dialect = dialect_of(scheme)  # postgres:// too: the aliases live in inservice.dburl
        if dialect == DUCKDB:
            if "?" in rest or not rest:
                raise WarehouseUrlError(f"INSERVICE_WAREHOUSE_URL: a DuckDB URL is a file path without options "
                                        f"(duckdb:///path/warehouse.duckdb): {redact_url(text)}")
            return cls(DUCKDB, rest)
        if dialect == POSTGRESQL:  # whatever +driver is named, the warehouse speaks psycopg2 (COPY)
            return cls(POSTGRESQL, f"postgresql://{rest}")
        raise WarehouseUrlError(f"INSERVICE_WAREHOUSE_URL: unknown scheme {scheme.split('+', 1)[0]!r} "
                                f"({_FORMS})")

    def redacted(self) -> str:
        """For logs and messages: the password (if any) never printed."""
        if self.backend.embedded:
            return f"duckdb://{self.target}"
        return redact_url(self.target)


def connect(url: WarehouseUrl, read_only: bool = False, wait: float | None = None) -> Connection:
    """`wait`: seconds to wait for a DuckDB file another process holds (default the lock timeout;
    0 for a sensor's tick, which looks again next time rather than wait)."""
    if url.backend.server:
        return PgConnection(url.target, read_only=read_only)
    path = Path(url.target)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    return _duckdb_when_free(path, read_only, lock_timeout() if wait is None else wait)


def _duckdb_when_free(path: Path, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    """DuckDB refuses at once a file another process holds ("Could not set lock"): wait for it,
    polling, up to `wait` seconds, then WarehouseBusy (never a traceback for a busy warehouse)."""
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                pid = re.search(r"\(PID (\d+)\)", str(exc))
                by = f" (process {pid.group(1)})" if pid else ""
                raise WarehouseBusy(f"warehouse busy: {path} is in use by another inservice process{by} (waited "
                                    f"{wait:g} s, {LOCK_TIMEOUT_ENV}); retry later: run the command again when it has "
                                    f"finished") from exc
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 1.0)


def backend_of(con: Any) -> Backend:
    return Backend(getattr(con, "backend", DUCKDB))


# --- the SQL that differs ------------------------------------------------------------------------------
def regex_matches(con: Any, column: str, pattern: str) -> str:
    if backend_of(con).server:
        return f"({column} ~ '{pattern}')"
    return f"regexp_matches({column}, '{pattern}')"


def text_type_names(con: Any) -> tuple[str, ...]:
    """information_schema.columns.data_type of the text columns."""
    return ("character varying", "text") if backend_of(con).server else ("VARCHAR",)


def json_text(con: Any, expr: str, key: str) -> str:
    """The text of one top-level key of a JSON text value."""
    if backend_of(con).server:
        return f"(CAST({expr} AS json) ->> '{key}')"
    return f"json_extract_string({expr}, '$.{key}')"


def insertion_order(con: Any) -> str:
    """A column that orders an append-only table's rows as they were inserted (history ties)."""
    return "ctid" if backend_of(con).server else "rowid"


def month_text(con: Any, expr: str) -> str:
    """YYYY-MM of a timestamp (in the session's time zone)."""
    if backend_of(con).server:
        return f"to_char({expr}, 'YYYY-MM')"
    return f"strftime({expr}, '%Y-%m')"


# A read that found the warehouse busy or failing (a sensor's tick skips and looks again next time):
# the file held by a writer, or any error of either backend's driver.
UNREADABLE_NOW: tuple[type[BaseException], ...] = (WarehouseBusy, duckdb.Error, psycopg2.Error)

# Worth another attempt (Dagster's retry policy, the sensors, the CLI's exit 75): a lock held by a
# process outside Dagster's pool, a lost connection, a busy disk.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RetryLater, duckdb.IOException, psycopg2.OperationalError, TimeoutError, BlockingIOError, InterruptedError,
    ConnectionError)
