"""DuckDB analysts' access as Parquet parts per unit behind a catalog of views: a refresh rewrites only
the parts of the units a write changed, yet the catalog reads exactly what the warehouse holds (updates,
withdrawals, corrections' removals included); a reader opened before keeps its view and its files until
it closes; files no catalog reads are removed."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from inservice.config import Settings
from inservice.ingest import ingest_paths
from inservice.warehouse import analyst
from inservice.warehouse.store import Warehouse
from tests.builders import attendee, course
from tests.test_bounded_merge import IDS, KEY, _feed, _filler, _run

PARTED = tuple(analyst.PARTED)
# An analyst in a process of its own (in this one, DuckDB would hand back its cached instance of the
# path, and a lock is never in conflict with its own process): counts attendance at each line read.
READER = """import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for _ in sys.stdin:
    print(con.execute("SELECT count(*), sum(hash(a)) FROM attendance a").fetchone(), flush=True)
"""


def _rows(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return sorted(map(repr, con.execute(f"SELECT * FROM {table}").fetchall()))


def _same_as_the_warehouse(settings: Settings) -> None:
    with duckdb.connect(str(analyst.snapshot_path(settings)), read_only=True) as con, \
            Warehouse(settings, read_only=True) as wh:
        for table in (*PARTED, "findings", "units", "course_audience", "organizer_light_courses"):
            assert _rows(con, table) == _rows(wh.con, table), table  # type: ignore[arg-type]
        [(seq,)] = con.execute("SELECT commit_seq FROM snapshot_info").fetchall()
        assert str(seq) == wh.meta("commit_seq")


def _part_files(settings: Settings) -> dict[str, set[str]]:
    parts = analyst.snapshot_path(settings).parent / analyst.PARTS
    return {unit: {str(f.relative_to(parts)) for f in parts.rglob(f"unit_code={unit}/*.parquet")}
            for unit in ("T001", "T002", "T003")}


def test_parts_follow_updates_and_withdrawals_and_only_changed_units_are_rewritten(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_backend: str) -> None:
    if warehouse_backend != "duckdb":
        pytest.skip("the parts are DuckDB's (PostgreSQL grants a read-only role)")
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    _filler(settings, tmp_path)  # every unit has parts now
    _same_as_the_warehouse(settings)
    before = _part_files(settings)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(analyst.snapshot_path(settings))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask() -> str:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("\n")
        reader.stdin.flush()
        return reader.stdout.readline()

    seen = ask()
    assert seen.startswith("(")
    _run(settings, tmp_path / "run")  # uploads, then feed merges outside a session (updates, a withdrawal)
    with Warehouse(settings) as wh:  # a whole course withdrawn
        _feed(wh, 7, [course("D1", closed_date=None, modified_at="2017-06-01 09:00", is_deleted="Y")], [])
    with analyst.WriteSession(settings):
        pass  # finds the catalog behind and catches up
    _same_as_the_warehouse(settings)
    after = _part_files(settings)
    assert after["T002"] == before["T002"] and after["T003"] == before["T003"]  # untouched units: same files
    assert after["T001"] != before["T001"]
    assert ask() == seen  # the open reader: its catalog and its files, unchanged
    catalogs = analyst.snapshot_path(settings).parent / analyst.PARTS / "catalogs"
    assert len(list(catalogs.glob("*.duckdb"))) == 2  # the reader's and the current one
    assert reader.stdin is not None
    reader.stdin.close()
    assert reader.wait(30) == 0
    with analyst.WriteSession(settings) as wh:
        wh.add_unit("T005", "unit T005", "file", "production", date(2016, 1, 1))
    assert len(list(catalogs.glob("*.duckdb"))) == 1  # nobody reads the old one: removed with its files
    parts = catalogs.parent
    current = analyst._current_manifest(analyst.snapshot_path(settings))
    assert current is not None
    assert {str(f.relative_to(parts)) for f in parts.rglob("*.parquet")} == set(analyst._files(current))
    _same_as_the_warehouse(settings)


def test_a_removal_by_correction_and_a_write_that_bypassed_the_merge_reach_the_parts(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_backend: str,
        caplog: pytest.LogCaptureFixture) -> None:
    if warehouse_backend != "duckdb":
        pytest.skip("the parts are DuckDB's")
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    from tests.builders import write_xml

    f = write_xml(settings.inbox / "T002" / "T002_201705.xml", [course("C1", unit_code="T002")],
                  [attendee("C1", IDS[0], unit_code="T002"), attendee("C1", IDS[1], unit_code="T002")], unit="T002")
    assert ingest_paths([f], settings, "2017-06-03T10:00:00+08:00")[0]["status"] == "loaded"
    _same_as_the_warehouse(settings)
    f = write_xml(settings.inbox / "T002" / "T002_201706.xml", [course("C2", unit_code="T002")],
                  [attendee("C2", IDS[0], unit_code="T002")], unit="T002", month="2017-06")
    assert ingest_paths([f], settings, "2017-07-03T10:00:00+08:00")[0]["status"] == "loaded"
    _same_as_the_warehouse(settings)
    assert len(_part_files(settings)["T002"]) == 3 + 3  # rows added only: a second file joins each part (no history)
    with analyst.WriteSession(settings) as wh, wh.transaction():  # as corrections' removal does it
        wh.con.execute("""CREATE OR REPLACE TEMP TABLE corr_stage AS SELECT unit_code, course_code, teacher_key
            FROM main.attendance WHERE unit_code = 'T002' LIMIT 1""")
        wh.con.execute("""DELETE FROM main.attendance t USING corr_stage s WHERE t.unit_code = s.unit_code
            AND t.course_code = s.course_code AND t.teacher_key = s.teacher_key""")
        from datetime import UTC, datetime
        wh.note_change("main.attendance", "corr_stage", datetime.now(UTC), deleted=True)
    _same_as_the_warehouse(settings)
    assert len([f for f in _part_files(settings)["T002"] if f.startswith("attendance/")]) == 1  # written anew
    with analyst.WriteSession(settings) as wh, wh.transaction():  # no note: the row counts disagree
        wh.con.execute("DELETE FROM main.attendance WHERE unit_code = 'T002'")
    assert any("did not add up" in r.getMessage() for r in caplog.records)
    _same_as_the_warehouse(settings)
