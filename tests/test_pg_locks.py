"""PostgreSQL: nobody stalls the loads. The analyst role cannot take advisory (or row, or table) locks
a writer waits for, and a load waits for any lock at most INSERVICE_PG_LOCK_TIMEOUT, then fails whole
with exit 75 and one line, through real `inservice` processes and real sessions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from tests.conftest import PG_SERVER, RECEIVED, pg_database
from tests.test_operator_errors import count, inservice, one_line, registered, upload

pytestmark = pytest.mark.slow  # whole `inservice` processes waiting out lock timeouts


def as_user(url: str, user: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}@{rest.rsplit('@', 1)[-1]}"


@pytest.fixture
def roles() -> Iterator[list[str]]:
    """Roles a test creates (cluster-wide): dropped afterwards, after the test's database is gone."""
    made: list[str] = []
    yield made
    admin = psycopg2.connect(PG_SERVER)
    admin.autocommit = True
    for role in made:
        admin.cursor().execute(f'DROP ROLE IF EXISTS "{role}"')
    admin.close()


def test_analyst_cannot_take_locks_loads_wait_for(tmp_path: Path, roles: list[str]) -> None:
    analyst, loader = f"analyst_{uuid.uuid4().hex[:8]}", f"loader_{uuid.uuid4().hex[:8]}"
    roles += [analyst, loader]
    admin = psycopg2.connect(PG_SERVER)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE ROLE "{loader}" LOGIN CREATEROLE')  # a loader that is not a superuser
    admin.close()
    home = tmp_path / "home"
    with pg_database() as url:
        with psycopg2.connect(url) as con, con.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" OWNER TO "{loader}"')
            cur.execute(f'ALTER SCHEMA public OWNER TO "{loader}"')
        con.close()
        loader_url = as_user(url, loader)
        registered(home, "T002", INSERVICE_WAREHOUSE_URL=loader_url)  # the loader creates and owns the tables
        # the loader cannot revoke functions it does not own: it is told so, and nothing changes
        refused = inservice(home, "warehouse", "grant-analyst", "--role", analyst, INSERVICE_WAREHOUSE_URL=loader_url)
        one_line(refused, 1, "superuser", "pg_advisory_lock")
        # a superuser (the DBA) runs it
        done = inservice(home, "warehouse", "grant-analyst", "--role", analyst, INSERVICE_WAREHOUSE_URL=url)
        assert done.returncode == 0, done.stderr
        con = psycopg2.connect(as_user(url, analyst))
        con.autocommit = True
        try:
            for stmt in ("SELECT pg_advisory_lock(1)", "SELECT pg_try_advisory_lock(1)",
                         "SELECT pg_advisory_lock_shared(1, 2)", "SELECT pg_try_advisory_xact_lock_shared(7)",
                         f"SELECT pg_advisory_xact_lock({0x1A5E_7E71})"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege), con.cursor() as cur:
                    cur.execute(stmt)
            con.cursor().execute("SET default_transaction_read_only = off")  # any session may: no help
            for stmt in ("SELECT * FROM main.courses FOR UPDATE", "SELECT * FROM main.courses FOR KEY SHARE",
                         "LOCK TABLE main.courses IN SHARE MODE", "LOCK TABLE main.uploads IN EXCLUSIVE MODE"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege), con.cursor() as cur:
                    cur.execute(f"BEGIN; {stmt}")
                con.cursor().execute("ROLLBACK")
            with con.cursor() as cur:  # what an analyst may do: read
                cur.execute("SELECT count(*) FROM main.courses")
                assert cur.fetchone() == (0,)
                cur.execute("SHOW idle_in_transaction_session_timeout")
                assert cur.fetchone() == ("10min",)
        finally:
            con.close()
        # the loader, not a superuser, still takes the writer lock: loads go on
        proc = inservice(home, "ingest", str(upload(tmp_path)), "--received-at", RECEIVED, "--json",
                         INSERVICE_WAREHOUSE_URL=loader_url)
        assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "loaded", proc.stderr
        with psycopg2.connect(url) as con, con.cursor() as cur:  # drop what the roles own or were granted
            cur.execute(f'DROP OWNED BY "{analyst}"')
        con.close()


@pytest.mark.parametrize("mode", ["ACCESS EXCLUSIVE", "EXCLUSIVE"])
def test_load_gives_up_after_lock_timeout(tmp_path: Path, mode: str) -> None:
    """ACCESS EXCLUSIVE: the load cannot even read courses; EXCLUSIVE: it reads, validates, and waits
    inside its merge transaction. Either way: exit 75 after the timeout, nothing loaded, and the same
    command loads once the lock is gone."""
    home = tmp_path / "home"
    with pg_database() as url:
        registered(home, "T002", INSERVICE_WAREHOUSE_URL=url)
        holder = psycopg2.connect(url)  # another session's long transaction
        holder.cursor().execute(f"LOCK TABLE main.courses IN {mode} MODE")
        path = upload(tmp_path)
        try:
            started = time.monotonic()
            proc = inservice(home, "ingest", str(path), "--received-at", RECEIVED, INSERVICE_WAREHOUSE_URL=url,
                             INSERVICE_PG_LOCK_TIMEOUT="2s")
            took = time.monotonic() - started
        finally:
            holder.rollback()
            holder.close()
        one_line(proc, 75, "locked by another session", "2s", "INSERVICE_PG_LOCK_TIMEOUT", "nothing was written")
        assert 2 <= took < 60
        assert count(home, "SELECT count(*) FROM main.uploads", url) == 0
        assert count(home, "SELECT count(*) FROM main.courses", url) == 0
        again = inservice(home, "ingest", str(path), "--received-at", RECEIVED, "--json", INSERVICE_WAREHOUSE_URL=url)
        assert again.returncode == 0 and json.loads(again.stdout)["status"] == "loaded", again.stderr


def test_second_writer_waits_then_gives_up(tmp_path: Path) -> None:
    """The writer lock (pg_advisory_xact_lock) held by another load past the timeout: "warehouse busy"."""
    home = tmp_path / "home"
    with pg_database() as url:
        registered(home, "T002", INSERVICE_WAREHOUSE_URL=url)
        holder = psycopg2.connect(url)
        holder.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (0x1A5E_7E71,))  # a load in progress
        try:
            proc = inservice(home, "ingest", str(upload(tmp_path)), "--received-at", RECEIVED,
                             INSERVICE_WAREHOUSE_URL=url, INSERVICE_PG_LOCK_TIMEOUT="1s")
        finally:
            holder.rollback()
            holder.close()
        one_line(proc, 75, "warehouse busy", "another load")
        assert count(home, "SELECT count(*) FROM main.uploads", url) == 0
