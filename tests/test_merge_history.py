"""The one merge: updates of open courses, withdrawals (is_deleted) and the history they leave."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest

from inservice.config import TAIPEI
from inservice.loaders.base import RawUpload, canonical_table
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.validations.engine import Context, validate
from inservice.validations.pseudonym import Pseudonymiser
from inservice.warehouse.store import Source, Warehouse
from tests.builders import attendee, course, make_id

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

_RNG = random.Random(5)
IDS = [make_id(_RNG) for _ in range(3)]
T0 = datetime(2017, 6, 1, 2, 0, tzinfo=TAIPEI)


def raw(courses: list[dict], attendance: list[dict]) -> RawUpload:
    def table(rt, rows):
        cols = {f.code: pa.array([None if r.get(f.code) is None else str(r[f.code]) for r in rows], pa.string())
                for f in rt.fields}
        return canonical_table(rt, pa.array(range(1, len(rows) + 1), pa.int64()), cols)
    return RawUpload(table(COURSE, courses), table(ATTENDANCE, attendance))


def feed_merge(wh: Warehouse, courses: list[dict], attendance: list[dict], day: int) -> dict:
    ctx = Context(unit="T001", channel="db", received_on=date(2017, 6, day), pseudonymiser=Pseudonymiser(b"k"),
                  state=wh.state("production"))
    v = validate(raw(courses, attendance), ctx)
    assert v.findings.num_rows == 0, v.findings.to_pylist()
    with wh.transaction():
        return wh.merge(v, "production", Source("feed", f"T001-2017060{day}"), T0 + timedelta(days=day)).__dict__


def test_open_course_updates_and_withdrawal_keep_history(settings) -> None:
    m = "2017-05-10 09:00"
    with Warehouse(settings) as wh:
        first = feed_merge(wh, [course("C1", closed_date=None, modified_at=m)],
                           [attendee("C1", IDS[0], modified_at=m), attendee("C1", IDS[1], modified_at=m)], 1)
        assert first["courses_inserted"] == 1 and first["attendance_inserted"] == 2
        # the course is still open: a new title is an update, recorded with its before and after
        upd = feed_merge(wh, [course("C1", closed_date=None, title="新名稱", modified_at=m)], [], 2)
        assert upd["courses_updated"] == 1
        # unchanged rows again: nothing at all
        assert feed_merge(wh, [course("C1", closed_date=None, title="新名稱", modified_at=m)], [], 3)[
            "courses_updated"] == 0
        # one teacher withdrawn, then the whole course
        gone = feed_merge(wh, [], [attendee("C1", IDS[1], modified_at=m, is_deleted="Y")], 4)
        assert gone["attendance_withdrawn"] == 1
        gone = feed_merge(wh, [course("C1", closed_date=None, title="新名稱", modified_at=m, is_deleted="1")], [], 5)
        assert gone["courses_withdrawn"] == 1 and gone["attendance_withdrawn"] == 1
        assert wh.con.execute("SELECT count(*) FROM courses").fetchone()[0] == 0
        assert wh.con.execute("SELECT count(*) FROM attendance").fetchone()[0] == 0
        hist = wh.con.execute("""SELECT record, action, source, source_id, before_json, after_json
                                 FROM history ORDER BY changed_at, record DESC""").fetchall()
    assert [(r[0], r[1], r[3]) for r in hist] == [
        ("course", "update", "T001-20170602"),
        ("attendance", "withdraw", "T001-20170604"),
        ("course", "withdraw", "T001-20170605"), ("attendance", "withdraw", "T001-20170605")]
    assert all(r[2] == "feed" for r in hist)
    assert json.loads(hist[0][4])["title"] == "素養導向教學設計工作坊C1" and json.loads(hist[0][5])["title"] == "新名稱"
    assert hist[2][5] is None and json.loads(hist[2][4])["course_code"] == "C1"
    assert all(IDS[0] not in (r[4] or "") for r in hist)  # pseudonymised in history too


def test_an_older_warehouse_gains_new_columns_when_opened(tmp_path) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE courses (unit_code VARCHAR, course_code VARCHAR)")
    con.execute("INSERT INTO courses VALUES ('T001', 'C1')")
    con.close()
    with Warehouse(path) as wh:
        cols = {r[0] for r in wh.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'courses' "
            "AND table_schema = 'main'").fetchall()}
        assert {"first_loaded_at", "hours", "audience"} <= cols
        assert wh.con.execute("SELECT unit_code, course_code FROM courses").fetchall() == [("T001", "C1")]
