"""What every Dagster asset shares: the one resource (INSERVICE_HOME and the warehouse in it), the
owners, the pool, the retry policy. Below both assets/ and pipelines/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from inservice.config import Settings
from inservice.warehouse import ddl
from inservice.warehouse.analyst import AccessRefresh, WriteSession
from inservice.warehouse.store import Warehouse

WAREHOUSE_POOL = "warehouse"  # DuckDB has one writer: every step opening the file is in this pool
OWNERS = ["team:data-engineering"]

RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class InserviceResource(dg.ConfigurableResource):
    """Settings as the CLI reads them (INSERVICE_HOME etc.), resolved in the process that runs."""

    home: str = ""  # empty: $INSERVICE_HOME, else ./data (the CLI's default)

    def settings(self) -> Settings:
        return Settings.from_env(self.home or None)

    @contextmanager
    def warehouse(self, read_only: bool = False, wait: float | None = None) -> Iterator[Warehouse]:
        """`wait`: see Warehouse (0 for a sensor tick: busy now means look again next tick). A writer's
        session ends with the analysts' refresh (analyst.WriteSession)."""
        settings = self.settings()
        if not read_only:
            with WriteSession(settings, wait=wait) as wh:
                yield wh
            return
        # A read-only connection needs an existing file; the first opener creates the tables.
        with Warehouse(settings, read_only=Warehouse.exists(settings), wait=wait) as wh:
            yield wh


def refused(exc: Exception) -> dg.Failure:
    """The core refused what staff asked (a bad value, a rule of the register): the reason, never retried."""
    return dg.Failure(description=str(exc), allow_retries=False)


def permanent(exc: BaseException, what: str) -> dg.Failure:
    """Wrap a non-transient error so the retry policy does not repeat it."""
    return dg.Failure(description=f"{what}: {type(exc).__name__}: {exc}", allow_retries=False)


def access_metadata(refresh: AccessRefresh | None) -> dict:
    """The analysts' refresh after the step's commits (copy or grants, when, tables, rows), as
    materialization metadata: the step that makes a load visible to analysts, shown with the load."""
    return refresh.metadata() if refresh is not None else {}


def table_schema(table: ddl.Table) -> dg.TableSchema:
    """A declared warehouse table as Dagster's column schema (names, types, Chinese comments)."""
    return dg.TableSchema(columns=[dg.TableColumn(c.name, c.type, description=c.comment) for c in table.columns])
