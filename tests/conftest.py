"""Shared fixtures: a fresh INSERVICE_HOME per test with units T001–T003 (production)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path

import psycopg2
import pytest

from inservice.config import Settings
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Warehouse

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED = "2017-06-03T10:00:00+08:00"  # the fixtures' receipt day (on time)

PG_SERVER = os.environ.get("INSERVICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backends", default="duckdb,postgresql",
                     help="warehouse backends for the suites that run on both (comma-separated)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_backends` (a module's `pytestmark`) that reach a warehouse run once per backend of
    --backends; the others on DuckDB. The runs on PostgreSQL are `slow`: the fast tier keeps the DuckDB ones."""
    if "warehouse_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        backends = metafunc.config.getoption("--backends").split(",")
        metafunc.parametrize("warehouse_backend", [b if b == "duckdb" else pytest.param(b, marks=pytest.mark.slow)
                                                   for b in backends], indirect=True)


@pytest.fixture
def warehouse_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "duckdb")


@contextmanager
def pg_database(prefix: str = "inservice_t") -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards (its URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_SERVER)
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        yield PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def warehouse_url(warehouse_backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """INSERVICE_WAREHOUSE_URL for this test: unset (DuckDB under the home) or a fresh PostgreSQL database."""
    if warehouse_backend == "duckdb":
        monkeypatch.delenv("INSERVICE_WAREHOUSE_URL", raising=False)
        yield None
        return
    with pg_database() as url:
        monkeypatch.setenv("INSERVICE_WAREHOUSE_URL", url)
        yield url


@pytest.fixture
def new_settings(warehouse_backend: str) -> Iterator[Callable[[Path], Settings]]:
    """Settings for another home, with a warehouse of its own on this test's backend."""
    with ExitStack() as stack:
        def make(home: Path) -> Settings:
            url = None if warehouse_backend == "duckdb" else stack.enter_context(pg_database())
            return replace(Settings.from_env(home), warehouse=url)
        yield make


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_url: str | None) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("INSERVICE_HOME", str(h))
    monkeypatch.delenv("INSERVICE_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("INSERVICE_ARCHIVE_CUTOFF", raising=False)
    return h


@pytest.fixture
def settings(home: Path) -> Settings:
    s = Settings.from_env(home)
    with WriteSession(s) as wh:  # as `inservice units add`: its end refreshes the analysts' access
        for code in ("T001", "T002", "T003"):
            wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
    return s


def drop(settings: Settings, src: Path, unit: str | None = None, name: str | None = None) -> Path:
    """Copy a file into a unit's inbox, as a partner would."""
    unit = unit or src.parent.name
    dest = settings.inbox / unit / (name or src.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def fixture_cases(kind: str = "") -> list[Path]:
    return sorted(p.parent for p in FIXTURES.glob(f"{kind}*/expected.json"))


def load_expected(case: Path) -> tuple[dict, Path]:
    exp = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    return exp, case / exp["unit"] / exp["file"]


def finding_keys(findings: list[dict]) -> set[tuple]:
    return {(f["record"], f["row"], f["rule"], f["field"], f["severity"], f["course_code"]) for f in findings}


def table_snapshot(settings: Settings) -> dict[str, list]:
    with Warehouse(settings, read_only=True) as wh:
        out = {}
        for t in ("courses", "attendance", "uploads", "findings", "units", "testing.courses",
                  "testing.attendance"):
            out[t] = sorted(map(repr, wh.con.execute(f"SELECT * FROM {t}").fetchall()))
        return out
