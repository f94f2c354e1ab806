"""The merge and the warehouse rules read only the rows of the keys an upload carries: the same uploads
into a small warehouse and into a larger one (other units, other courses of the same unit, sessions
of the same organizer and title) give identical receipts and rows."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from inservice.config import TAIPEI, Settings
from inservice.ingest import ingest_paths
from inservice.validations.engine import Context, validate
from inservice.validations.pseudonym import Pseudonymiser
from inservice.warehouse.store import Source, Warehouse
from tests.builders import attendee, course, make_id, write_xml
from tests.test_merge_history import raw

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends
_RNG = random.Random(1818)
IDS = [make_id(_RNG) for _ in range(12)]
FILLER_IDS = [make_id(_RNG) for _ in range(40)]
KEY = "test-bounded-merge-pseudonym-key-0123456789"
WORKSHOP = {"organizer": "國立臺灣師範大學", "title": "素養導向教學設計工作坊"}  # the W05 session pair


def _filler(settings: Settings, tmp: Path) -> None:
    """Rows the uploads never touch: other units, other course codes of T001 (codes around theirs), and
    sessions of the same organizer and title attended by other teachers."""
    files = []
    for unit in ("T001", "T002", "T003"):
        courses, att = [], []
        for i in range(60):
            code = f"C{i:03d}" if unit != "T001" else f"B{i:03d}"  # T001's B… sort before C1, C2, C3
            extra = WORKSHOP if i % 3 == 0 else {}
            courses.append(course(code, unit_code=unit, start_date="2017-04-10", end_date="2017-04-12",
                                  closed_date="2017-04-14", **extra))
            att += [attendee(code, FILLER_IDS[(i + j) % len(FILLER_IDS)], unit_code=unit) for j in range(5)]
        files.append(write_xml(tmp / "filler" / unit / f"{unit}_201704.xml", courses, att, unit=unit,
                               month="2017-04"))
    for f in files:
        dest = settings.inbox / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
        assert ingest_paths([dest], settings, "2017-05-03T10:00:00+08:00")[0]["status"] == "loaded"


def _uploads(tmp: Path) -> list[Path]:
    u1 = write_xml(tmp / "u" / "1" / "T001" / "T001_201705.xml",
                   [course("C1"), course("C2", start_date="2017-05-20", end_date="2017-05-22", closed_date="2017-05-23",
                                         **WORKSHOP), course("C4")],
                   [attendee("C1", IDS[0]), attendee("C1", IDS[1]), attendee("C2", IDS[2]), attendee("C2", IDS[3]),
                    attendee("C4", IDS[9])])
    u2 = write_xml(tmp / "u" / "2" / "T001" / "T001_201705.xml",
                   [course("C4", title="改過的名稱"),  # C08: closed in the warehouse
                    course("C3", start_date="2017-05-21", end_date="2017-05-21", closed_date="2017-05-22",
                           **WORKSHOP)],  # IDS[2] also attends C2, same session pair, overlapping: W05
                   [attendee("C1", IDS[4]),  # A08: a new row of a locked course
                    attendee("C1", IDS[0]),  # unchanged: a no-op
                    attendee("C3", IDS[2]), attendee("C3", IDS[5]),
                    attendee("C9", IDS[6])])  # A04
    return [u1, u2]


def _feed(wh: Warehouse, day: int, courses: list[dict], attendance: list[dict]) -> dict:
    """A feed's merge (open courses update, rows withdrawn), as in test_merge_history."""
    ctx = Context(unit="T001", channel="db", received_on=date(2017, 6, day), pseudonymiser=Pseudonymiser(KEY.encode()),
                  state=wh.state("production"))
    v = validate(raw(courses, attendance), ctx)
    with wh.transaction():
        return wh.merge(v, "production", Source("feed", f"T001-feed-{day}"),
                        datetime(2017, 6, day, 2, 0, tzinfo=TAIPEI) + timedelta(hours=1)).__dict__


def _run(settings: Settings, tmp: Path) -> tuple[list[dict], list[dict], dict]:
    receipts = []
    for f in _uploads(tmp):
        dest = settings.inbox / "T001" / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
        receipts += ingest_paths([dest], settings, "2017-06-03T10:00:00+08:00")
    m = "2017-06-01 09:00"
    with Warehouse(settings) as wh:
        merges = [
            _feed(wh, 4, [course("D1", closed_date=None, modified_at=m)],
                  [attendee("D1", IDS[7], modified_at=m), attendee("D1", IDS[8], modified_at=m)]),
            _feed(wh, 5, [course("D1", closed_date=None, title="新名稱", modified_at=m)],
                  [attendee("D1", IDS[8], modified_at=m, hours_granted="3")]),
            _feed(wh, 6, [], [attendee("D1", IDS[7], modified_at=m, is_deleted="Y")]),
        ]
        rows = {}
        keys = "unit_code = 'T001' AND course_code IN ('C1', 'C2', 'C3', 'C4', 'C9', 'D1')"
        for table, cols in (("courses", "unit_code, course_code, title, start_date, closed_date, hours, upload_id"),
                            ("attendance", "unit_code, course_code, teacher_key, hours_granted, completed, "
                                           "upload_id"),
                            ("history", "record, unit_code, course_code, teacher_key, action, source, source_id")):
            rows[table] = sorted(map(repr, wh.con.execute(f"SELECT {cols} FROM {table} WHERE {keys}").fetchall()))
        rows["filler"] = wh.con.execute("SELECT count(*) FROM courses WHERE NOT (" + keys + ")").fetchone()[0]
    return receipts, merges, rows


def _comparable(receipt: dict) -> dict:
    """What the upload itself decides; not its ids, nor the unit's history (the larger warehouse holds
    more of the unit's months, which its receipt rightly shows)."""
    return {k: v for k, v in receipt.items() if k not in ("receipt_files", "upload_id", "history")}


def test_same_uploads_into_a_small_and_a_larger_warehouse(settings: Settings, tmp_path: Path, new_settings,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    large = new_settings(tmp_path / "large")
    with Warehouse(large) as wh:
        for code in ("T001", "T002", "T003"):
            wh.add_unit(code, f"unit {code}", "file", "production", date(2016, 1, 1))
    _filler(large, tmp_path)
    with Warehouse(large) as wh:  # stored in key order (DuckDB; PostgreSQL: nothing to do): the same rows
        rows = {t: sorted(map(repr, wh.con.execute(f"SELECT * FROM {t}").fetchall()))
                for t in ("courses", "attendance")}
        clustered = wh.cluster()
        assert rows == {t: sorted(map(repr, wh.con.execute(f"SELECT * FROM {t}").fetchall())) for t in rows}
        if wh.backend.embedded:
            assert clustered["main.attendance"] == len(rows["attendance"]) == 900
            first = wh.con.execute("SELECT unit_code, course_code FROM attendance ORDER BY rowid LIMIT 2").fetchall()
            assert first == [("T001", "B000"), ("T001", "B000")]
    small_receipts, small_merges, small_rows = _run(settings, tmp_path / "small")
    large_receipts, large_merges, large_rows = _run(large, tmp_path / "large-run")
    # the uploads did meet the warehouse: locks, an unknown course, another session, updates, a withdrawal
    rules = {f["rule"] for r in small_receipts for f in r["findings"]}
    assert {"C08", "A08", "A04", "W05"} <= rules, rules
    assert small_merges[1]["courses_updated"] == 1 and small_merges[1]["attendance_updated"] == 1
    assert small_merges[2]["attendance_withdrawn"] == 1
    assert [_comparable(r) for r in small_receipts] == [_comparable(r) for r in large_receipts]
    assert small_merges == large_merges
    assert small_rows.pop("filler") == 0 and large_rows.pop("filler") == 180
    assert small_rows == large_rows
