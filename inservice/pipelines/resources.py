"""The one resource the pipeline needs: where INSERVICE_HOME is, and the warehouse in it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
import psycopg2

from inservice.config import Settings
from inservice.errors import RetryLater
from inservice.warehouse.store import Warehouse

WAREHOUSE_POOL = "warehouse"  # DuckDB has one writer: every step opening the file is in this pool
OWNERS = ["team:data-engineering"]

# Transient: worth another attempt (a lock held by a process outside the pool, a busy disk).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RetryLater, duckdb.IOException, psycopg2.OperationalError, TimeoutError, BlockingIOError, InterruptedError,
    ConnectionError)
RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class InserviceResource(dg.ConfigurableResource):
    """Settings as the CLI reads them (INSERVICE_HOME etc.), resolved in the process that runs."""

    home: str = ""  # empty: $INSERVICE_HOME, else ./data (the CLI's default)

    def settings(self) -> Settings:
        return Settings.from_env(self.home or None)

    @contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[Warehouse]:
        settings = self.settings()
        # A read-only connection needs an existing file; the first opener creates the tables.
        with Warehouse(settings, read_only=read_only and Warehouse.exists(settings)) as wh:
            yield wh


def permanent(exc: BaseException, what: str) -> dg.Failure:
    """Wrap a non-transient error so the retry policy does not repeat it."""
    return dg.Failure(description=f"{what}: {type(exc).__name__}: {exc}", allow_retries=False)
