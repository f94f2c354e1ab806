"""Every sample partner upload gives exactly its expected.json, and a re-ingest is a duplicate."""

from __future__ import annotations

from pathlib import Path

import pytest

from inservice.ingest import ingest_paths
from inservice.warehouse.store import Warehouse
from tests.conftest import RECEIVED, drop, finding_keys, fixture_cases, load_expected, table_snapshot

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

CASES = [c for c in fixture_cases() if "access" not in str(c)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture_gives_expected_receipt(case: Path, settings) -> None:
    exp, src = load_expected(case)
    path = drop(settings, src)
    [r] = ingest_paths([path], settings, RECEIVED)
    assert r["refusal"] == exp["refusal"]
    assert r["status"] == "loaded"
    assert r["month"] == f"{exp['month'][:4]}-{exp['month'][4:]}"
    assert r["on_time"] is True
    assert r["courses"]["accepted"] == exp["courses_accepted"]
    assert r["attendance"]["accepted"] == exp["attendance_accepted"]
    assert finding_keys(r["findings"]) == finding_keys(exp["findings"])
    for f in r["findings"]:
        assert f["message_zh"] and f["message_en"]
    # the accepted rows are in the warehouse, and only those
    snap = table_snapshot(settings)
    assert len(snap["courses"]) == exp["courses_accepted"]
    assert len(snap["attendance"]) == exp["attendance_accepted"]
    assert len(snap["findings"]) == len(exp["findings"])
    # receipts: JSON and Excel, in the unit's outbox
    files = [Path(p) for p in r["receipt_files"]]
    assert all(p.exists() for p in files)
    assert files[0].parent == settings.outbox / exp["unit"]


@pytest.mark.parametrize("case", CASES[:2] + CASES[-1:], ids=lambda c: c.name)
def test_reingest_is_duplicate_and_changes_no_table(case: Path, settings) -> None:
    """A duplicate writes no data table; it is recorded (uploads: status duplicate, findings: its F08)."""
    exp, src = load_expected(case)
    path = drop(settings, src)
    ingest_paths([path], settings, RECEIVED)
    before = table_snapshot(settings)
    [again] = ingest_paths([path], settings, "2017-06-04T09:00:00+08:00")
    assert again["status"] == "duplicate"
    assert again["refusal"] == "F08"
    after = table_snapshot(settings)
    recorded = ("uploads", "findings")
    assert {k: v for k, v in after.items() if k not in recorded} == {k: v for k, v in before.items()
                                                                    if k not in recorded}
    assert set(before["uploads"]) < set(after["uploads"]) and len(after["uploads"]) == len(before["uploads"]) + 1
    assert set(before["findings"]) < set(after["findings"])
    assert len(after["findings"]) == len(before["findings"]) + 1
    with Warehouse(settings, read_only=True) as wh:
        assert wh.con.execute("SELECT status, refusal, courses_received, attendance_received FROM uploads "
                              "WHERE upload_id = ?", [again["upload_id"]]).fetchall() == [("duplicate", "F08", 0, 0)]
        assert wh.con.execute("SELECT rule, severity FROM findings WHERE upload_id = ?",
                              [again["upload_id"]]).fetchall() == [("F08", "warning")]
