"""Connections as users write them: the plain URL forms (postgresql://, postgres://, mysql://, mssql://)
for feeds and the warehouse against the real local servers; the SQL Server driver stack (pyodbc +
FreeTDS); "database driver missing"; a URL option the driver cannot use."""
# ruff: noqa: F401, F811 (the fixtures of test_feeds are imported and then named as test parameters)

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from inservice.config import Settings
from tests.conftest import RECEIVED, pg_database
from tests.test_feeds import (  # fixtures: pytest finds them by these names
    ENV,
    KEY,
    UNIT,
    content,
    create_tables,
    day1_rows,
    fhome,
    insert,
    mark,
    mysql,
    partner,
    partner_with_day1,
    pg,
    setup_unit,
)
from tests.test_operator_errors import env_for, inservice, registered, upload


def plain(url: URL, scheme: str) -> str:
    """The URL as a person copies it from the documentation: no +driver."""
    return url.set(drivername=scheme).render_as_string(hide_password=False)


def feed_cli(settings: Settings, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**env_for(settings.home), ENV: url, "INSERVICE_PSEUDONYM_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "inservice.cli", "feeds", "run", UNIT, "--json", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_feed_from_postgresql_with_the_plain_url(pg: URL, fhome: Settings, monkeypatch: pytest.MonkeyPatch,
                                                 scheme: str) -> None:
    db, courses, attendance = partner_with_day1(pg, True)
    setup_unit(fhome, pg, monkeypatch)
    proc = feed_cli(fhome, plain(pg, scheme))  # e.g. postgresql://postgres@127.0.0.1:5432/feedtest_…
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    assert receipt["status"] == "loaded", receipt["findings"][:3]
    assert receipt["attendance"]["accepted"] > 0 and mark(fhome).watermark is not None


def test_feed_from_mariadb_with_the_plain_url(mysql: tuple[URL, URL], fhome: Settings,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    owner, _ = mysql
    db, courses, attendance = partner_with_day1(owner, False)
    setup_unit(fhome, owner, monkeypatch)
    url = plain(owner.set(query={}), "mysql")  # mysql://root@127.0.0.1:3306/feedtest_…, no charset either
    proc = feed_cli(fhome, url)
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    assert receipt["status"] == "loaded", receipt["findings"][:3]
    titles = {r[2] for r in content(fhome)["courses"]}
    assert "素養導向教學設計工作坊G1" in titles  # Chinese text intact without charset=utf8mb4 in the URL


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_warehouse_with_the_plain_url(tmp_path: Path, scheme: str) -> None:
    with pg_database() as url:
        plain_url = scheme + "://" + url.split("://", 1)[1]
        home = tmp_path / "home"
        registered(home, "T002", INSERVICE_WAREHOUSE_URL=plain_url)
        proc = inservice(home, "ingest", str(upload(tmp_path)), "--received-at", RECEIVED, "--json",
                         INSERVICE_WAREHOUSE_URL=plain_url)
        assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "loaded", proc.stderr
        info = json.loads(inservice(home, "warehouse", "info", INSERVICE_WAREHOUSE_URL=plain_url).stdout)
        assert info["backend"] == "postgresql"


def test_sql_server_driver_stack_is_installed() -> None:
    import pyodbc

    assert "FreeTDS" in pyodbc.drivers()  # unixODBC knows the driver scripts/setup installs


@pytest.mark.slow
@pytest.mark.parametrize("form", ["mssql://sa:Pw-12345678@127.0.0.1:{port}/legacy",
                                  "mssql+pyodbc://sa:Pw-12345678@127.0.0.1:{port}/legacy?driver=FreeTDS"])
def test_sql_server_unreachable_is_retryable(pg: URL, fhome: Settings, monkeypatch: pytest.MonkeyPatch,
                                             form: str) -> None:
    # a first pull from PostgreSQL sets the watermark; then the unit "moves" to SQL Server
    db, courses, attendance = partner_with_day1(pg, True)
    setup_unit(fhome, pg, monkeypatch)
    assert feed_cli(fhome, plain(pg, "postgresql")).returncode == 0
    before, wm = content(fhome), mark(fhome)
    proc = feed_cli(fhome, form.format(port=closed_port()))
    assert proc.returncode == 75, proc.stderr  # EX_TEMPFAIL: try again later
    receipt = json.loads(proc.stdout)
    assert (receipt["status"], receipt["refusal"]) == ("refused", "F01")
    message = receipt["findings"][0]["message_en"]
    assert "unreachable" in message and "will be retried" in message and "FreeTDS" in message
    assert "Pw-12345678" not in proc.stdout + proc.stderr
    assert content(fhome) == before and mark(fhome) == wm


@pytest.mark.parametrize("url, missing", [
    ("postgresql+psycopg://postgres@127.0.0.1:5432/x", "Python module psycopg"),
    ("mysql+mysqldb://root@127.0.0.1:3306/x", "Python module MySQLdb"),
    ("mssql+pyodbc://sa:pw@127.0.0.1:1433/x?driver=No+Such+Driver", "ODBC driver No Such Driver"),
    ("oracle+nosuchdriver://u@h/x", "SQLAlchemy dialect oracle+nosuchdriver"),
])
def test_driver_missing_is_said(fhome: Settings, monkeypatch: pytest.MonkeyPatch, url: str, missing: str) -> None:
    setup_unit(fhome, sa.engine.make_url("postgresql://x@127.0.0.1/x"), monkeypatch)
    proc = feed_cli(fhome, url)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr  # refused, not retried
    receipt = json.loads(proc.stdout)
    assert receipt["refusal"] == "F01"
    message = receipt["findings"][0]["message_en"]
    assert "database driver missing: " in message and missing in message, message  # after F01's label


@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_url_option_the_driver_cannot_use(request: pytest.FixtureRequest, fhome: Settings,
                                          monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    base = request.getfixturevalue("mysql")[0] if server == "mariadb" else request.getfixturevalue("pg")
    create_tables(partner(base))
    setup_unit(fhome, base, monkeypatch)
    url = (plain(base.set(query={"charset": "bogus"}), "mysql") if server == "mariadb"
           else plain(base.set(query={"client_encoding": "bogus"}), "postgresql"))
    proc = feed_cli(fhome, url)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr  # refused, not retried
    receipt = json.loads(proc.stdout)
    message = receipt["findings"][0]["message_en"]
    assert receipt["refusal"] == "F01" and "bogus" in message and "will be retried" not in message, message
    assert mark(fhome).updated_at is None

