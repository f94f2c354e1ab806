"""The publishing gate checks only what changed since it last passed, and still refuses every violation.

After a passing gate, one violation per blocking check is written (by hand in SQL, the way that leaves
the fewest traces: rows copied with their upload id and write time, values changed in place) and the
gate must name exactly that check; a real upload in between is checked by itself, not the whole
warehouse; a course removed since leaves its attendance orphaned and is noticed.
"""

from __future__ import annotations

import pytest

from inservice.cli import main
from inservice.config import Settings
from inservice.warehouse import checks
from inservice.warehouse.store import Warehouse
from tests.conftest import FIXTURES, RECEIVED, drop
from tests.test_publish_gate import (
    IDS,
    PUBLICATIONS,
    VIOLATIONS,
    instance,  # noqa: F401 - the Dagster instance fixture
    loaded,
    published_nothing,
)

pytestmark = pytest.mark.both_backends


def gate(settings: Settings) -> list[str]:
    """The publishing gate, as a publication runs it: the failed checks' keys ([] when it passed)."""
    with Warehouse(settings) as wh:
        try:
            checks.require_passing(wh.con, settings.archive_cutoff, "test")
        except checks.ChecksFailed as e:
            return [c.key for c, _ in e.failed]
    return []


def scope(settings: Settings) -> checks.Scope | None:
    with Warehouse(settings) as wh:
        return checks.changes(wh.con).scope


def passed_once(settings: Settings) -> None:
    loaded(settings)
    assert scope(settings) is None  # nothing verified yet: whole tables
    assert gate(settings) == []
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT count(*) FROM gate_verified").fetchone()[0] > 0


@pytest.mark.slow
@pytest.mark.parametrize(("check", "statements", "duckdb_only"), VIOLATIONS, ids=IDS)
def test_a_violation_written_after_a_pass_is_refused(settings: Settings, warehouse_backend: str, check: str,
                                                      statements: list[str], duckdb_only: bool) -> None:
    if duckdb_only and warehouse_backend != "duckdb":
        pytest.skip("PostgreSQL's unique index refuses the duplicate itself")
    passed_once(settings)
    assert scope(settings).rows("main.attendance") == "false"  # nothing changed: nothing to read
    with Warehouse(settings) as wh:
        for sql in statements:
            wh.con.execute(sql)
    assert gate(settings) == [check]
    assert gate(settings) == [check]  # a failed gate records nothing


def test_an_update_in_place_after_a_checkpoint_is_refused(settings: Settings, warehouse_backend: str) -> None:
    """The same upload id, write time and row id, the segment rewritten on disk: still noticed."""
    passed_once(settings)
    with Warehouse(settings) as wh:
        if warehouse_backend == "duckdb":
            wh.con.execute("CHECKPOINT")
        wh.con.execute("UPDATE main.attendance SET school_code = 'B223456789' WHERE teacher_key = "
                       "(SELECT max(teacher_key) FROM main.attendance)")
        if warehouse_backend == "duckdb":
            wh.con.execute("CHECKPOINT")
    assert gate(settings) == ["attendance.no_national_id"]


@pytest.mark.slow
def test_a_course_removed_since_leaves_orphans_that_are_refused(settings: Settings) -> None:
    passed_once(settings)
    with Warehouse(settings) as wh:
        wh.con.execute("DELETE FROM main.courses WHERE course_code = (SELECT min(course_code) FROM main.attendance)")
    assert gate(settings) == ["attendance.has_course"]


def test_an_upload_after_a_pass_is_checked_by_itself(settings: Settings) -> None:
    passed_once(settings)
    src = FIXTURES / "defects-xlsx" / "T003" / "T003_201705.xlsx"  # rows refused, the others loaded
    main(["ingest", str(drop(settings, src)), "--received-at", RECEIVED])
    seen = scope(settings)
    assert seen is not None
    with Warehouse(settings, read_only=True) as wh:
        [(new,)] = wh.con.execute("SELECT upload_id FROM uploads WHERE unit_code = 'T003' "
                                       "AND status = 'loaded'").fetchall()
        total = wh.con.execute("SELECT count(*) FROM main.attendance").fetchone()[0]
        scoped = wh.con.execute(f"SELECT count(*) FROM main.attendance WHERE {seen.rows('main.attendance')}"
                                ).fetchone()[0]
    assert seen.changed["main.attendance"] == (new,)
    assert 0 < scoped <= total
    assert gate(settings) == []
    assert scope(settings).rows("main.attendance") == "false"


@pytest.mark.slow
@pytest.mark.parametrize("publication", sorted(PUBLICATIONS))
def test_every_publication_refuses_after_a_pass(settings: Settings, warehouse_backend: str, publication: str,
                                                capsys: pytest.CaptureFixture) -> None:
    """Through the CLI, the county export's read-only session included (it checks, records nothing)."""
    county = loaded(settings)
    assert gate(settings) == []
    with Warehouse(settings) as wh:
        for sql in VIOLATIONS[5][1]:  # an ID put into attendance.school_code in place
            wh.con.execute(sql)
    assert main([*PUBLICATIONS[publication](county), "--json"]) == 3
    assert "attendance.no_national_id" in capsys.readouterr().err
    published_nothing(settings)


def test_a_read_only_export_of_a_warehouse_from_before_the_record_reads_whole_tables(
        settings: Settings, capsys: pytest.CaptureFixture) -> None:
    county = loaded(settings)
    with Warehouse(settings) as wh:
        for table in ("gate_verified", "gate_course_keys", "gate_attendance_keys"):
            wh.con.execute(f"DROP TABLE {table}")
        for sql in VIOLATIONS[5][1]:
            wh.con.execute(sql)
    assert main([*PUBLICATIONS["export"](county), "--json"]) == 3
    assert "attendance.no_national_id" in capsys.readouterr().err


@pytest.mark.slow
def test_dagster_checks_after_a_pass_read_only_what_changed_and_still_fail(
        settings: Settings, warehouse_backend: str, instance, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The blocking asset checks of an upload run use the gate's record too (else every upload run reads
    the whole warehouse: ~140 s at 31M rows): nothing changed → nothing to read; a violation → failed."""
    from inservice.pipelines.definitions import defs
    from tests.test_publish_gate import MONTH

    passed_once(settings)
    seen: list[checks.Scope | None] = []
    real = checks.current_scope

    def spy(con):  # noqa: ANN001, ANN202 - records the scope each asset check reads
        seen.append(real(con))
        return seen[-1]

    monkeypatch.setattr(checks, "current_scope", spy)
    with Warehouse(settings) as wh:
        for sql in VIOLATIONS[5][1]:  # an ID in attendance.school_code, written after the pass
            wh.con.execute(sql)
    result = defs.resolve_job_def("publish_monthly").execute_in_process(
        partition_key=MONTH, instance=instance, raise_on_error=False)
    assert not result.success
    assert {(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
            if not e.passed} == {("attendance", "no_national_id")}
    assert len(seen) == 7  # every blocking check of the warehouse tables asked
    if warehouse_backend == "duckdb":  # PostgreSQL's read-only session keeps no temp table: whole tables
        assert all(s is not None and s.rows("main.courses") == "false" for s in seen)  # courses unread
    published_nothing(settings)
