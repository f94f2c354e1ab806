"""Shared fixtures: a fresh INSERVICE_HOME per test with units T001–T003 (production)."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from inservice.config import Settings
from inservice.warehouse.store import Warehouse

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED = "2017-06-03T10:00:00+08:00"  # the fixtures' receipt day (on time)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("INSERVICE_HOME", str(h))
    monkeypatch.delenv("INSERVICE_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("INSERVICE_ARCHIVE_CUTOFF", raising=False)
    return h


@pytest.fixture
def settings(home: Path) -> Settings:
    s = Settings.from_env(home)
    with Warehouse(s.warehouse_path) as wh:
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
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        out = {}
        for t in ("courses", "attendance", "uploads", "findings", "units", "testing.courses",
                  "testing.attendance"):
            out[t] = sorted(map(repr, wh.con.execute(f"SELECT * FROM {t}").fetchall()))
        return out
