"""Daily database feeds against the real PostgreSQL and MariaDB servers of this machine.

Every test gets its own databases (random names, dropped afterwards). A server that does not
answer fails the test loudly: nothing here is skipped.
"""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from inservice import cli
from inservice.config import TAIPEI, Settings
from inservice.feeds import FeedRunner, FeedUnavailable
from inservice.feeds import register as feed_register
from inservice.feeds.core import batches
from inservice.feeds.source import Chunk, map_table, masked_url, pull_query, to_text
from inservice.loaders.base import canonical_table
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.warehouse.store import Warehouse
from tests.builders import make_id

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends

PG_ADMIN = os.environ.get("INSERVICE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MY_ADMIN = os.environ.get("INSERVICE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/")
UNIT = "T009"
ENV = "FEED_T009_URL"
KEY = "feed-test-pseudonym-key-0123456789"

_RNG = random.Random(9)
T = [make_id(_RNG) for _ in range(20)]  # teachers T[0]… (valid IDs)
BAD_ID = T[3][:-1] + str((int(T[3][-1]) + 1) % 10)  # checksum off by one: A03


# --- servers and databases ---------------------------------------------------------------------------
def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                            connect_args={"connect_timeout": 10})


def _reachable(engine: sa.Engine, what: str) -> None:
    try:
        with engine.connect() as c:
            c.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:  # fail, never skip: CI must notice a missing server
        pytest.fail(f"{what} is not reachable ({engine.url.render_as_string(hide_password=True)}): {exc.orig}")


@pytest.fixture
def pg() -> Iterator[URL]:
    """A fresh PostgreSQL database (trust auth); its URL."""
    admin = _admin(PG_ADMIN)
    _reachable(admin, "PostgreSQL")
    name = f"feedtest_{secrets.token_hex(4)}"
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(PG_ADMIN).set(database=name)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def mysql() -> Iterator[tuple[URL, URL]]:
    """A fresh MariaDB database and a reader with a password: (admin URL on it, reader URL)."""
    admin = _admin(MY_ADMIN)
    _reachable(admin, "MariaDB")
    tag = secrets.token_hex(4)
    name, user, password = f"feedtest_{tag}", f"feeder_{tag}", f"Pw-{secrets.token_hex(8)}"
    base = make_url(MY_ADMIN).set(database=name, query={"charset": "utf8mb4"})
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            c.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
            c.exec_driver_sql(f"GRANT SELECT ON `{name}`.* TO '{user}'@'%%'")
        yield base, base.set(username=user, password=password)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            c.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


def partner(url: URL) -> sa.Engine:
    """The partner's own engine (writes its tables); MariaDB sessions in Taipei time, as its app."""
    engine = sa.create_engine(url, poolclass=NullPool)
    if engine.dialect.name in ("mysql", "mariadb"):
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.cursor().execute("SET time_zone = '+08:00'"))
    return engine


# --- the partner's tables ------------------------------------------------------------------------------
PG_DDL = [
    """CREATE TABLE inservice_courses (unit_code varchar(12), course_code varchar(30), title text,
        organizer text, organizer_type varchar(4), county_code varchar(8), start_date date, end_date date,
        hours numeric(6,2), class_type varchar(2), category varchar(2), delivery varchar(2), time_slot varchar(2),
        audience text, tags text, closed_date date, modified_at timestamptz, is_deleted boolean)""",
    """CREATE TABLE inservice_attendance (unit_code varchar(12), course_code varchar(30), national_id varchar(12),
        name text, school_code varchar(8), hours_granted numeric(5,1), completed varchar(8),
        modified_at timestamp, is_deleted boolean, note text)""",
]
# MariaDB: dates and numbers partly as text (ROC dates are legal), booleans as TINYINT and BIT
MY_DDL = [
    """CREATE TABLE inservice_courses (unit_code varchar(12), course_code varchar(30), title varchar(300),
        organizer varchar(200), organizer_type varchar(4), county_code varchar(8), start_date varchar(20),
        end_date date, hours decimal(5,1), class_type varchar(2), category varchar(2), delivery varchar(2),
        time_slot varchar(2), audience varchar(50), tags varchar(50), closed_date date, modified_at datetime,
        is_deleted tinyint(1))""",
    """CREATE TABLE inservice_attendance (unit_code varchar(12), course_code varchar(30),
        national_id varchar(12), name varchar(60), school_code varchar(8), hours_granted varchar(10),
        completed tinyint(1), modified_at timestamp NULL DEFAULT NULL, is_deleted bit(1), note varchar(20))""",
]


def create_tables(engine: sa.Engine) -> None:
    with engine.begin() as c:
        for stmt in (PG_DDL if engine.dialect.name == "postgresql" else MY_DDL):
            c.exec_driver_sql(stmt)


def insert(engine: sa.Engine, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    with engine.begin() as c:
        t = sa.Table(table, sa.MetaData(), autoload_with=c)
        c.execute(t.insert(), rows)


def execute(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as c:
        c.execute(sa.text(sql), params)


def course(code: str, at: datetime | None, pg: bool, **over: object) -> dict:
    row = {"unit_code": UNIT, "course_code": code, "title": f"素養導向教學設計工作坊{code}",
           "organizer": "國立臺灣師範大學", "organizer_type": "3", "county_code": "63000",
           "start_date": date(2017, 5, 10), "end_date": date(2017, 5, 10), "hours": Decimal("6"),
           "class_type": "1", "category": "A", "delivery": "3", "time_slot": "1", "audience": "E;J", "tags": "T2",
           "closed_date": date(2017, 5, 12), "modified_at": at, "is_deleted": False}
    row.update(over)
    if pg and row["modified_at"] is not None:
        row["modified_at"] = row["modified_at"].replace(tzinfo=TAIPEI)  # timestamptz
    if not pg:
        if isinstance(row["start_date"], date):  # text column: the ROC form of the spec
            d = row["start_date"]
            row["start_date"] = f"{d.year - 1911}/{d.month:02d}/{d.day:02d}"
        row["is_deleted"] = int(bool(row["is_deleted"]))
    return row


def attendee(code: str, nid: str | None, at: datetime | None, pg: bool, **over: object) -> dict:
    row = {"unit_code": UNIT, "course_code": code, "national_id": nid, "name": "王小明", "school_code": "423605",
           "hours_granted": "6", "completed": "Y", "modified_at": at, "is_deleted": False, "note": "x"}
    row.update(over)
    if pg:
        hg = row["hours_granted"]
        row["hours_granted"] = Decimal(str(hg)) if hg is not None else None
    else:
        row["completed"] = {"Y": 1, "N": 0}.get(row["completed"], row["completed"])
        row["is_deleted"] = b"\x01" if row["is_deleted"] else b"\x00"
    return row


DAY1 = datetime(2017, 6, 1, 0, 0)  # run-1 rows: one hour apart from here
DAY2 = datetime(2017, 7, 1, 9, 0)  # run-2 changes


def day1_rows(pg: bool) -> tuple[list[dict], list[dict]]:
    """Spec-shaped rows with every row rule's defect (C10 is for files only)."""
    hours = iter(range(1000))

    def at() -> datetime:
        return DAY1 + timedelta(hours=next(hours))

    c = lambda code, **o: course(code, at(), pg, **o)  # noqa: E731
    courses = [
        c("G1"), c("G2", start_date=date(2017, 5, 15), end_date=date(2017, 5, 16), hours=Decimal("12"),
                   closed_date=None),
        c("G3", title="素養導向教學設計工作坊G1"),  # another session of G1 (same organizer, title, day): W05
        c("G4", start_date=date(2017, 5, 20), end_date=date(2017, 5, 20), closed_date=None),
        c("G5", start_date=date(2017, 5, 21), end_date=date(2017, 5, 21), closed_date=None),
        c("B01", title=None),  # C01
        c("B02", **({"hours": Decimal("6.25")} if pg else {"start_date": "notadate"})),  # C02
        c("B03", organizer_type="9"),  # C03
        c("B04", start_date=date(2017, 5, 11), end_date=date(2017, 5, 10)),  # C04
        c("B05", hours=Decimal("0")),  # C05
        c("B06"), c("B06", title="重複"),  # C06 (the second)
        c("B07", start_date=date(2012, 6, 1), end_date=date(2012, 6, 1), closed_date=date(2012, 6, 2)),  # C07
        c("B09", closed_date=date(2017, 5, 1)),  # C09
        c("W01", title="校務會議暨素養導向教學研習"),  # W01
        c("W02", title="106學年度第1次校務會議"),  # W01 + W02
        c("W03", closed_date=date(2017, 5, 25)),  # W03
        course("NM", None, pg),  # C01 modified_at (re-read every run until filled in)
    ]
    courses[0]["title"] = "素養導向教學設計工作坊G1"
    a = lambda code, nid, **o: attendee(code, nid, at(), pg, **o)  # noqa: E731
    attendance = [
        a("G1", T[0]), a("G1", T[1]), a("G1", T[2], name=None),  # A01
        a("G1", BAD_ID),  # A03
        a("G1", T[4], hours_granted="7"),  # A06
        a("G1", T[0]),  # A07
        a("G1", T[5], school_code="ZZZZZZ"),  # W04
        a("G1", T[15], **({"completed": "maybe"} if pg else {"hours_granted": "abc"})),  # A02
        a("G3", T[1]),  # W05 (and G1's T1)
        a("NOPE", T[6]),  # A04
        a("B03", T[7]),  # A05
        a("G4", T[10]),
        a("G5", T[0], hours_granted="6"), a("G5", T[8]),
        attendee("G2", T[14], None, pg),  # A01 modified_at
        a("G2", T[8]),  # the newest row of day 1: the only one inside run 2's overlap window
    ]
    return courses, attendance


DAY1_FINDINGS = {
    ("C01", "B01"), ("C01", "NM"), ("C02", "B02"), ("C03", "B03"), ("C04", "B04"), ("C05", "B05"), ("C06", "B06"),
    ("C07", "B07"), ("C09", "B09"), ("W01", "W01"), ("W01", "W02"), ("W02", "W02"), ("W03", "W03"),
    ("A01", "G1"), ("A01", "G2"), ("A02", "G1"), ("A03", "G1"), ("A04", "NOPE"), ("A05", "B03"), ("A06", "G1"),
    ("A07", "G1"), ("W04", "G1"), ("W05", "G1"), ("W05", "G3"),
}


def apply_day2(engine: sa.Engine, pg: bool, watermark: datetime) -> None:
    """Changes after run 1, each with a later modified_at, plus two late commits."""
    ts = (lambda v: v.replace(tzinfo=TAIPEI)) if pg else (lambda v: v)
    yes = True if pg else 1
    execute(engine, "UPDATE inservice_courses SET title = :t, modified_at = :m WHERE course_code = 'G2'",
            t="差異化教學工作坊", m=ts(DAY2))  # open course: an update (history)
    execute(engine, "UPDATE inservice_courses SET title = :t, modified_at = :m WHERE course_code = 'G3'",
            t="改名", m=ts(DAY2))  # closed in the warehouse: C08
    execute(engine, "UPDATE inservice_courses SET is_deleted = :y, modified_at = :m WHERE course_code = 'G5'",
            y=yes, m=ts(DAY2))  # withdrawn with its attendance
    execute(engine, "UPDATE inservice_attendance SET is_deleted = :y, modified_at = :m "
                    "WHERE course_code = 'G2' AND national_id = :n", y=True if pg else b"\x01", m=DAY2, n=T[8])
    insert(engine, "inservice_courses", [course("N1", DAY2, pg, start_date=date(2017, 6, 20),
                                                end_date=date(2017, 6, 20), closed_date=None, title="新課程")])
    insert(engine, "inservice_attendance", [
        attendee("N1", T[0], DAY2, pg),
        attendee("G1", T[9], DAY2, pg),  # a new row on a course closed in the warehouse: A08
        attendee("G4", T[11], DAY2, pg),  # course not in this pull, in the warehouse: fine
        attendee("G4", T[12], watermark - timedelta(minutes=5), pg),  # late commit inside the overlap: taken
        attendee("G4", T[13], watermark - timedelta(minutes=60), pg),  # late commit before it: not read
    ])


DAY2_FINDINGS = {("C08", "G3"), ("C01", "NM"), ("A08", "G1"), ("A01", "G2")}


# --- running -----------------------------------------------------------------------------------------------
@pytest.fixture
def fhome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_url: str | None) -> Settings:
    home = tmp_path / "home"
    monkeypatch.setenv("INSERVICE_HOME", str(home))
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    monkeypatch.delenv("INSERVICE_ARCHIVE_CUTOFF", raising=False)
    return Settings.from_env(home)


def partner_with_day1(url: URL, pg: bool) -> tuple[sa.Engine, list[dict], list[dict]]:
    """A partner database with the feed's two tables holding day 1's rows."""
    db = partner(url)
    create_tables(db)
    courses, attendance = day1_rows(pg)
    insert(db, "inservice_courses", courses)
    insert(db, "inservice_attendance", attendance)
    return db, courses, attendance


def setup_unit(settings: Settings, url: URL, monkeypatch: pytest.MonkeyPatch, state: str = "production",
               register_unit: bool = True) -> None:
    monkeypatch.setenv(ENV, url.render_as_string(hide_password=False))
    with Warehouse(settings) as wh:
        if register_unit:
            wh.add_unit(UNIT, "feed unit", "db", state, date(2017, 1, 1))
        feed_register.add_feed(wh, feed_register.FeedSpec(UNIT, ENV))


def cli_run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(args))
    return code, out.getvalue()


def run_json(*extra: str) -> dict:
    code, out = cli_run("feeds", "run", UNIT, "--json", *extra)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 1  # one receipt
    return json.loads(lines[0])


def rules(receipt: dict) -> set[tuple[str, str]]:
    return {(f["rule"], f["course_code"]) for f in receipt["findings"] if f["record"] != "file"}


def wh_rows(settings: Settings, sql: str) -> list[tuple]:
    with Warehouse(settings, read_only=True) as wh:
        return wh.con.execute(sql).fetchall()


def mark(settings: Settings, area: str = "production") -> feed_register.Watermark:
    with Warehouse(settings, read_only=True) as wh:
        return feed_register.watermark(wh.con, UNIT, area)


CONTENT = {
    "courses": "unit_code, course_code, title, organizer, organizer_type, county_code, start_date, end_date, hours, "
               "class_type, category, delivery, time_slot, audience, tags, closed_date, modified_at, is_deleted",
    "attendance": "unit_code, course_code, teacher_key, school_code, hours_granted, completed, modified_at, "
                  "is_deleted",
}


def content(settings: Settings) -> dict[str, list[tuple]]:
    return {t: wh_rows(settings, f"SELECT {cols} FROM {t} ORDER BY {cols}") for t, cols in CONTENT.items()}


def all_text(settings: Settings, receipt_files: list[str]) -> str:
    """Every text the feed left behind: warehouse text columns, receipts (JSON and the workbook's XML)."""
    parts = []
    with Warehouse(settings, read_only=True) as wh:
        cols = wh.con.execute("""SELECT table_schema, table_name, column_name FROM information_schema.columns
                                 WHERE data_type = 'VARCHAR'""").fetchall()
        for schema, table, column in cols:
            parts += [str(v) for (v,) in wh.con.execute(f'SELECT DISTINCT "{column}" FROM {schema}.{table}').fetchall()]
    for f in receipt_files:
        if f.endswith(".json"):
            parts.append(Path(f).read_text(encoding="utf-8"))
        else:
            with zipfile.ZipFile(f) as z:
                parts += [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
    return "\n".join(parts)


# --- the tests -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_feed_rules_increments_and_history(server: str, request: pytest.FixtureRequest, fhome: Settings,
                                           monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    if server == "postgresql":
        owner = reader = request.getfixturevalue("pg")
    else:
        owner, reader = request.getfixturevalue("mysql")
    is_pg = server == "postgresql"
    db, courses, attendance = partner_with_day1(owner, is_pg)
    setup_unit(fhome, reader, monkeypatch)

    # run 1: everything, every rule, in one receipt of the file receipt's shape
    r1 = run_json("--day", "2017-06-02")
    assert list(r1)[:10] == ["file", "unit", "month", "status", "refusal", "received_at", "on_time", "courses",
                             "attendance", "findings"]
    assert (r1["file"], r1["month"], r1["status"], r1["refusal"], r1["on_time"]) == (
        "feed:T009:2017-06-02", "2017-06", "loaded", None, True)
    assert rules(r1) == DAY1_FINDINGS
    assert r1["courses"] == {"received": 18, "accepted": 9, "rejected": 9}
    assert r1["attendance"] == {"received": 16, "accepted": 8, "rejected": 8}
    # the partner's extra column is ignored with a warning; attendance findings carry the masked ID
    assert [f["rule"] for f in r1["findings"] if f["record"] == "file"] == ["F07"]
    a06 = next(f for f in r1["findings"] if f["rule"] == "A06")
    assert a06["id_masked"] == f"{T[4][:3]}*****{T[4][-2:]}" and a06["id_masked"] in a06["message_en"]
    json_path, xlsx_path = map(Path, r1["receipt_files"])
    assert json_path.parent == fhome.outbox / UNIT and json_path.name.startswith("feed-2017-06-02.")
    assert json_path.exists() and xlsx_path.exists()
    newest_day1 = DAY1 + timedelta(hours=31)  # 17 courses, then 15 attendance rows, an hour apart
    assert mark(fhome).watermark == newest_day1  # the newest modified_at taken
    # times arrive as Asia/Taipei wall time (PostgreSQL timestamptz, MariaDB TIMESTAMP alike)
    assert wh_rows(fhome, "SELECT modified_at FROM courses WHERE course_code = 'G1'") == [(DAY1,)]
    assert wh_rows(fhome, "SELECT min(modified_at) FROM attendance") == [(DAY1 + timedelta(hours=17),)]
    assert wh_rows(fhome, "SELECT count(*), count(DISTINCT course_code) FROM courses") == [(9, 9)]
    assert wh_rows(fhome, "SELECT channel, status, file_name FROM uploads") == [("db", "loaded", r1["file"])]

    # run 1 again at once: only the overlap window (the newest row) and rows without modified_at
    again = run_json()
    assert again["courses"]["received"] == 1 and again["attendance"]["received"] == 2
    assert again["merge"] == dict.fromkeys(again["merge"], 0)

    # run 2: only the changes are taken
    apply_day2(db, is_pg, newest_day1)
    r2 = run_json("--day", "2017-07-01")
    assert rules(r2) == DAY2_FINDINGS
    assert r2["courses"] == {"received": 5, "accepted": 3, "rejected": 2}  # G2 G3 G5 N1 NM
    assert r2["attendance"] == {"received": 6, "accepted": 4, "rejected": 2}  # N1 G1 G4×2 G2(del) G2(null)
    assert r2["merge"] == {"courses_inserted": 1, "courses_updated": 1, "attendance_inserted": 3,
                           "attendance_updated": 0, "courses_withdrawn": 1, "attendance_withdrawn": 3}
    assert mark(fhome).watermark == DAY2
    assert wh_rows(fhome, "SELECT title FROM courses WHERE course_code IN ('G2', 'G3') ORDER BY 1") == [
        ("差異化教學工作坊",), ("素養導向教學設計工作坊G1",)]  # G2 updated, G3 locked (C08)
    assert wh_rows(fhome, "SELECT count(*) FROM courses WHERE course_code = 'G5'") == [(0,)]
    assert wh_rows(fhome, "SELECT course_code, count(*) FROM attendance GROUP BY 1 ORDER BY 1") == [
        ("G1", 3), ("G3", 1), ("G4", 3), ("N1", 1)]  # G4: T10, T11 and the late T12, not T13
    hist = wh_rows(fhome, "SELECT record, course_code, action, source FROM history ORDER BY 1, 2, 3, 4")
    assert hist == [("attendance", "G2", "withdraw", "feed"), ("attendance", "G5", "withdraw", "feed"),
                    ("attendance", "G5", "withdraw", "feed"), ("course", "G2", "update", "feed"),
                    ("course", "G5", "withdraw", "feed")]

    # the password is nowhere: receipts, warehouse, output
    files = [*r1["receipt_files"], *r2["receipt_files"]]
    captured = capfd.readouterr()
    if reader.password:
        secret = str(reader.password)
        assert secret not in all_text(fhome, files) and secret not in captured.out + captured.err
        assert "***" in r1["feed"]["source"]
    code, listing = cli_run("feeds", "list")
    assert code == 0 and f"{UNIT}\t${ENV}" in listing and "2017-07-01 09:00:00" in listing


def big_partner(url: URL) -> sa.Engine:
    """30 courses × 100 attendance rows with tie groups across batch limits, a rejected course whose
    attendance spans batches (A05 in later batches), closed courses with attendance in later batches
    (no A08) and a few invalid IDs."""
    db = partner(url)
    create_tables(db)
    rng = random.Random(3)
    courses = [course(f"K{i:02d}", DAY1 + timedelta(minutes=i), True, title=f"課程{i}",
                      **({"organizer_type": "9"} if i == 7 else {})) for i in range(30)]
    rows = []
    for j in range(3000):
        nid = make_id(rng)
        if j % 401 == 0:
            nid = nid[:-1] + str((int(nid[-1]) + 1) % 10)
        # blocks of 7 rows share a modified_at: batch limits fall inside tie groups
        rows.append(attendee(f"K{j % 30:02d}", nid, DAY1 + timedelta(hours=1, minutes=j // 7), True))
    insert(db, "inservice_courses", courses)
    insert(db, "inservice_attendance", rows)
    return db


def cli_subprocess(settings: Settings, env_url: URL, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "INSERVICE_HOME": str(settings.home), ENV: env_url.render_as_string(False),
                "INSERVICE_PSEUDONYM_KEY": KEY, "INSERVICE_WAREHOUSE_URL": settings.warehouse or "", **env}
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], env=full_env, capture_output=True,
                          text=True, timeout=300)


def rejected_rows(settings: Settings) -> set[tuple]:
    """Every refused row, by record, course and (for attendance) masked ID — not by pull position."""
    found = wh_rows(settings, """SELECT record, course_code, message_en FROM findings
                                 WHERE severity = 'error' AND record <> 'file'""")
    return {(rec, code, msg.rsplit("(ID ", 1)[-1] if rec == "attendance" else "") for rec, code, msg in found}


@pytest.mark.slow
def test_batches_equal_one_pull_and_a_killed_pull_resumes(pg: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          new_settings: Callable[[Path], Settings]) -> None:
    big_partner(pg)
    homes = {}
    for name in ("whole", "batched", "killed_after", "killed_inside"):
        homes[name] = s = new_settings(tmp_path / name)
        monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
        setup_unit(s, pg, monkeypatch)
    with Warehouse(homes["whole"]) as wh:
        whole = FeedRunner(homes["whole"], wh, batch_rows=10**6).run(UNIT, date(2017, 6, 2))
    with Warehouse(homes["batched"]) as wh:
        batched = FeedRunner(homes["batched"], wh, batch_rows=400, chunk_rows=150).run(UNIT, date(2017, 6, 2))
    assert whole["feed"]["batches"] == 1 and batched["feed"]["batches"] >= 7
    assert rules(whole) == rules(batched) and ("A05", "K07") in rules(batched)
    assert not any(f["rule"] == "A08" for f in batched["findings"])
    for part in ("courses", "attendance"):
        assert whole[part] == batched[part]
    assert content(homes["whole"]) == content(homes["batched"])
    assert mark(homes["whole"]).watermark == mark(homes["batched"]).watermark
    assert wh_rows(homes["batched"], "SELECT count(*), count(DISTINCT upload_id) FROM uploads") == [
        (batched["feed"]["batches"],) * 2]
    # each batch's copy of the receipt (upload_receipts) holds that batch's findings: together, the file's
    with Warehouse(homes["batched"], read_only=True) as wh:
        ids = [u for (u,) in wh.con.execute("SELECT upload_id FROM uploads ORDER BY processed_at").fetchall()]
        copies = [json.loads(wh.receipt_document(u) or "null") for u in ids]
    listed = json.loads(Path(batched["receipt_files"][0]).read_text(encoding="utf-8"))["findings"]
    assert [f for c in copies for f in c["findings"]] == listed and len(listed) == batched["findings_total"]

    # a process killed after batch 2, and one killed inside batch 3's transaction: the re-run completes
    env = {"INSERVICE_FEED_BATCH_ROWS": "400", "INSERVICE_FEED_CHUNK_ROWS": "150"}
    for name, failpoint, committed in (("killed_after", "feed.after_batch.2", 2),
                                       ("killed_inside", "feed.before_commit.3", 2)):
        s = homes[name]
        killed = cli_subprocess(s, pg, "feeds", "run", UNIT, "--json", INSERVICE_FAILPOINT=failpoint, **env)
        assert killed.returncode == -9, killed.stderr
        assert wh_rows(s, "SELECT count(*) FROM uploads") == [(committed,)]
        half = mark(s).watermark
        assert half is not None and half < mark(homes["whole"]).watermark
        done = cli_subprocess(s, pg, "feeds", "run", UNIT, "--json", **env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["feed"]["complete"] is True
        assert content(s) == content(homes["whole"])
        assert mark(s).watermark == mark(homes["whole"]).watermark
        assert rejected_rows(s) == rejected_rows(homes["whole"])


@pytest.mark.slow
def test_link_dropped_mid_read_keeps_whole_batches_and_resumes(pg: URL, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                new_settings: Callable[[Path], Settings]) -> None:
    """The partner's server ends the connection in the middle of the attendance stream (the view
    terminates its own backend at row 1000): batches before stay, the watermark covers only them,
    the run is retryable, and the retry completes to the same warehouse as an unbroken pull."""
    db = big_partner(pg)
    for sql in (
        "ALTER TABLE inservice_attendance RENAME TO att_t",
        "ALTER TABLE att_t ADD COLUMN id bigserial",  # numbered in insertion (= modified_at) order
        "CREATE INDEX ON att_t (modified_at NULLS FIRST)",
        """CREATE FUNCTION feed_cut(n bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true'""",
        """CREATE VIEW inservice_attendance AS SELECT unit_code, course_code, national_id, name, school_code,
           hours_granted, completed, modified_at, is_deleted FROM att_t WHERE feed_cut(id)""",
        f'ALTER DATABASE "{pg.database}" SET enable_sort = off',  # stream the view in index order
        f'ALTER DATABASE "{pg.database}" SET enable_seqscan = off',
    ):
        execute(db, sql)
    whole_home, home = new_settings(tmp_path / "whole"), new_settings(tmp_path / "cut")
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    for s in (whole_home, home):
        setup_unit(s, pg, monkeypatch)
    with Warehouse(whole_home) as wh:
        FeedRunner(whole_home, wh, batch_rows=10**6).run(UNIT)
    execute(db, """CREATE OR REPLACE FUNCTION feed_cut(n bigint) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN IF n = 1000 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN true; END $$""")
    with Warehouse(home) as wh, pytest.raises(FeedUnavailable) as err:
        FeedRunner(home, wh, batch_rows=300, chunk_rows=100).run(UNIT)
    receipt = err.value.receipt
    assert (receipt["status"], receipt["refusal"], receipt["feed"]["complete"]) == ("loaded", "F01", False)
    assert "will be retried" in receipt["findings"][-1]["message_en"]
    committed = wh_rows(home, "SELECT count(*) FROM uploads WHERE status = 'loaded'")[0][0]
    assert committed >= 1 and wh_rows(home, "SELECT count(*) FROM uploads WHERE status = 'refused'") == [(1,)]
    loaded = wh_rows(home, "SELECT count(*) FROM attendance")[0][0]
    assert 0 < loaded < 1000
    newest = wh_rows(home, "SELECT max(modified_at) FROM attendance")[0][0]
    assert newest <= mark(home).watermark < mark(whole_home).watermark and mark(home).complete is False
    execute(db, "CREATE OR REPLACE FUNCTION feed_cut(n bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true'")
    with Warehouse(home) as wh:
        again = FeedRunner(home, wh, batch_rows=300, chunk_rows=100).run(UNIT)
    assert again["feed"]["resumed"] is True and again["feed"]["complete"] is True
    assert content(home) == content(whole_home) and mark(home).watermark == mark(whole_home).watermark
    assert rejected_rows(home) == rejected_rows(whole_home)


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_receipt_lists_every_refused_row_not_held_in_memory(pg: URL, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull with hundreds of refused rows over many batches keeps only 5 row findings in memory;
    the JSON receipt, the workbook and `feeds run --json` still list every refused row (row, field,
    rule), once each, copied through read buffers smaller than a finding."""
    from openpyxl import load_workbook

    from inservice.feeds import core, spill

    db = partner(pg)
    create_tables(db)
    insert(db, "inservice_courses", [course(f"K{i}", DAY1, True) for i in range(3)])
    rng = random.Random(11)
    rows, expected = [], set()
    for j in range(700):
        nid, code = make_id(rng), f"K{j % 3}"
        if j % 3 == 1:
            nid = nid[:-1] + str((int(nid[-1]) + 1) % 10)
            expected.add((j + 1, "national_id", "A03"))  # row: the position in the pull (modified_at order)
        elif j % 5 == 0:
            code = f"NOPE{j}"
            expected.add((j + 1, "course_code", "A04"))
        rows.append(attendee(code, nid, DAY1 + timedelta(hours=1, minutes=j), True))
    insert(db, "inservice_attendance", rows)
    monkeypatch.setattr(spill, "READ_BYTES", 97)

    def refused(findings: list[dict]) -> list[tuple]:
        return [(f["row"], f["field"], f["rule"]) for f in findings if f["record"] == "attendance"]

    direct = Settings.from_env(tmp_path / "direct")
    monkeypatch.setenv("INSERVICE_PSEUDONYM_KEY", KEY)
    setup_unit(direct, pg, monkeypatch)
    with Warehouse(direct.warehouse_path) as wh:
        r = FeedRunner(direct, wh, batch_rows=100, chunk_rows=40, findings_kept=5).run(UNIT, date(2017, 6, 2))
    assert r["status"] == "loaded" and r["feed"]["batches"] == 7
    assert r["attendance"]["rejected"] == len(expected) > 300
    assert len(refused(r["findings"])) == 5 and r["findings_total"] == len(expected) + 1  # + the F07 note
    assert [f["rule"] for f in r["findings"] if f["record"] == "file"] == ["F07"]
    json_path, xlsx_path = map(Path, r["receipt_files"])
    on_file = json.loads(json_path.read_text(encoding="utf-8"))
    assert sorted(refused(on_file["findings"])) == sorted(expected)
    assert all(f["id_masked"] and f["id_masked"] in f["message_en"] for f in on_file["findings"]
               if f["record"] == "attendance")
    sheet = load_workbook(xlsx_path, read_only=True)["檢核結果 Findings"]
    # the 欄位 column shows the label and the code (研習代碼 course_code)
    listed = [(row, field and field.split(" ")[-1], rule)
              for row, record, field, rule, *_ in sheet.iter_rows(min_row=2, values_only=True) if record == "研習名單"]
    assert sorted(listed) == sorted(expected)

    # the CLI prints every finding too, read back from the receipt
    monkeypatch.setattr(core, "FINDINGS_KEPT", 5)
    monkeypatch.setattr(core, "BATCH_ROWS", 100)
    home = Settings.from_env(tmp_path / "cli")
    monkeypatch.setenv("INSERVICE_HOME", str(home.home))
    setup_unit(home, pg, monkeypatch)
    printed = run_json("--day", "2017-06-02")
    assert printed["findings_total"] == len(printed["findings"]) == len(expected) + 1
    assert sorted(refused(printed["findings"])) == sorted(expected)


def test_batch_cutting_keeps_tie_groups_whole() -> None:
    def chunk(stamps: list[int | None]) -> Chunk:
        table = canonical_table(ATTENDANCE, pa.array(range(1, len(stamps) + 1), pa.int64()), {})
        ts = [None if s is None else DAY1 + timedelta(minutes=s) for s in stamps]
        return Chunk(table, pa.array(ts, pa.timestamp("us")))

    stamps = [None, None, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5]
    chunks = iter([chunk(stamps[i:i + 3]) for i in range(0, len(stamps), 3)])
    def minutes(b: Chunk) -> list[int | None]:
        return [None if t is None else int((t - DAY1).total_seconds() // 60) for t in b.modified.to_pylist()]

    out = [(minutes(b), last) for b, last in batches(chunks, 4)]
    assert [m for m, _ in out] == [stamps[:5], stamps[5:10], stamps[10:]]  # 5 ≥ 4: the 1s stay together
    assert [last for _, last in out] == [False, False, True]
    assert [(b.num_rows, last) for b, last in batches(iter([]), 4)] == [(0, True)]  # nothing new: one empty batch


def test_partner_unreachable_is_recorded_and_retryable(pg: URL, fhome: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    db, courses, attendance = partner_with_day1(pg, True)
    setup_unit(fhome, pg, monkeypatch)
    assert run_json()["status"] == "loaded"
    before, wm = content(fhome), mark(fhome)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv(ENV, pg.set(port=closed, password="s3cret-pw").render_as_string(False))
    with Warehouse(fhome) as wh, pytest.raises(FeedUnavailable) as err:
        FeedRunner(fhome, wh).run(UNIT)
    assert isinstance(err.value, ConnectionError)  # what the Dagster retry policy retries
    receipt = err.value.receipt
    assert (receipt["status"], receipt["refusal"]) == ("refused", "F01")
    assert "Connection refused" in receipt["findings"][0]["message_en"]
    assert "s3cret-pw" not in json.dumps(receipt) and "***" in receipt["findings"][0]["message_en"]
    code, out = cli_run("feeds", "run", UNIT, "--json")
    assert code == 75 and json.loads(out)["refusal"] == "F01"  # EX_TEMPFAIL: try again later
    assert content(fhome) == before and mark(fhome) == wm
    assert wh_rows(fhome, "SELECT channel, status, refusal FROM uploads WHERE status = 'refused'") == [
        ("db", "refused", "F01")] * 2
    assert "s3cret-pw" not in all_text(fhome, receipt["receipt_files"])


def test_wrong_password_is_refused_not_retried(mysql: tuple[URL, URL], fhome: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    owner, reader = mysql
    create_tables(partner(owner))
    wrong = reader.set(password="Wrong-Password-123")
    setup_unit(fhome, wrong, monkeypatch)
    r = run_json()
    assert (r["status"], r["refusal"]) == ("refused", "F01")
    message = r["findings"][0]["message_en"]
    assert "Access denied" in message and "will be retried" not in message
    assert "Wrong-Password-123" not in json.dumps(r, ensure_ascii=False)
    assert "Wrong-Password-123" not in all_text(fhome, r["receipt_files"])
    assert mark(fhome).updated_at is None and wh_rows(fhome, "SELECT count(*) FROM courses") == [(0,)]


@pytest.mark.slow
def test_structure_faults_name_table_and_column(pg: URL, fhome: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    db = partner(pg)
    setup_unit(fhome, pg, monkeypatch)
    execute(db, PG_DDL[0])

    def refused() -> dict:
        r = run_json()
        assert (r["status"], r["refusal"]) == ("refused", "F07"), r
        return r["findings"][0]

    assert "inservice_attendance is missing" in refused()["message_en"]
    execute(db, PG_DDL[1].replace("national_id varchar(12),", ""))
    f = refused()
    assert f["field"] == "national_id" and "national_id" in f["message_en"]
    execute(db, "DROP TABLE inservice_attendance")
    execute(db, PG_DDL[1].replace("name text", "name bytea"))
    f = refused()
    assert "column name" in f["message_en"] and "BYTEA" in f["message_en"]
    execute(db, "DROP TABLE inservice_attendance")
    execute(db, PG_DDL[1].replace("modified_at timestamp", "modified_at text"))
    assert "modified_at must be a date-time column" in refused()["message_en"]
    # the table in another schema, named as schema.table in the register, with upper-case columns
    execute(db, "CREATE SCHEMA partner")
    execute(db, 'CREATE TABLE partner.att AS SELECT unit_code AS "UNIT_CODE", course_code, national_id, name, '
                "school_code, hours_granted, completed, modified_at::timestamp AS modified_at, is_deleted "
                "FROM inservice_attendance")
    with Warehouse(fhome) as wh:
        feed_register.add_feed(wh, feed_register.FeedSpec(UNIT, ENV, attendance_table="partner.att"))
    r = run_json()
    assert r["status"] == "loaded" and mark(fhome).updated_at is not None
    assert wh_rows(fhome, "SELECT count(*) FROM uploads WHERE refusal = 'F07'") == [(4,)]


def test_unit_register_states(pg: URL, fhome: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    db = partner(pg)
    create_tables(db)
    insert(db, "inservice_courses", [course("G1", DAY1, True)])
    insert(db, "inservice_attendance", [attendee("G1", T[0], DAY1, True)])
    setup_unit(fhome, pg, monkeypatch, register_unit=False)
    r = run_json()
    assert (r["status"], r["refusal"]) == ("refused", "F05")
    with Warehouse(fhome) as wh:
        wh.add_unit(UNIT, "feed unit", "db", "sealed", date(2017, 1, 1))
    sealed = run_json()
    assert sealed["refusal"] == "F06"
    # both recorded as a file upload's are: the pull's row (F05: in no area), its finding, its receipt's copy
    assert wh_rows(fhome, "SELECT upload_id, channel, refusal, status, area FROM uploads ORDER BY processed_at") == [
        (r["upload_id"], "db", "F05", "refused", None), (sealed["upload_id"], "db", "F06", "refused", "production")]
    assert wh_rows(fhome, "SELECT upload_id, rule, severity FROM findings ORDER BY upload_id") == sorted([
        (r["upload_id"], "F05", "error"), (sealed["upload_id"], "F06", "error")])
    with Warehouse(fhome, read_only=True) as wh:
        for receipt in (r, sealed):
            kept = json.loads(wh.receipt_document(receipt["upload_id"]) or "null")
            assert kept == json.loads(Path(receipt["receipt_files"][0]).read_text(encoding="utf-8"))
    with Warehouse(fhome) as wh:  # the state as the lifecycle commands leave it
        wh.con.execute("UPDATE units SET state = 'testing' WHERE unit_code = ?", [UNIT])
    r = run_json()
    assert (r["status"], r["area"]) == ("loaded", "testing")
    with Warehouse(fhome, read_only=True) as wh:  # one batch: its copy is the receipt file
        assert json.loads(wh.receipt_document(r["upload_id"]) or "null") == json.loads(
            Path(r["receipt_files"][0]).read_text(encoding="utf-8"))
    assert wh_rows(fhome, "SELECT count(*) FROM testing.courses") == [(1,)]
    assert wh_rows(fhome, "SELECT count(*) FROM main.courses") == [(0,)]
    assert mark(fhome, "testing").watermark == DAY1 and mark(fhome, "production").watermark is None
    # F04: a row of another unit refuses the pull; nothing of it loads, the watermark stays
    insert(db, "inservice_courses", [course("X1", DAY2, True, unit_code="T999"), course("X2", DAY2, True)])
    r = run_json()
    assert (r["status"], r["refusal"]) == ("refused", "F04")
    assert [(f["rule"], f["course_code"], f["field"]) for f in r["findings"]] == [("F04", "X1", "unit_code")]
    assert mark(fhome, "testing").watermark == DAY1
    assert wh_rows(fhome, "SELECT count(*) FROM testing.courses") == [(1,)]
    # the register takes a variable's name, never a URL (whose password would sit in a table)
    code, _ = cli_run("feeds", "add", UNIT, "--url-env", str(pg))
    assert code == 1


def test_sql_server_queries_compile_and_values_convert() -> None:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.mssql import BIT, DATETIME2, DATETIMEOFFSET, NVARCHAR
    from sqlalchemy.dialects.mssql import pyodbc as mssql_pyodbc

    dialect = mssql_pyodbc.dialect()
    types = {"modified_at": DATETIMEOFFSET(), "is_deleted": BIT(), "completed": BIT()}
    table = sa.Table("inservice_attendance", sa.MetaData(),
                     *(sa.Column(f.code.upper() if f.code == "name" else f.code, types.get(f.code, NVARCHAR(60)))
                       for f in ATTENDANCE.fields), sa.Column("order", NVARCHAR(10)), schema="dbo")
    m = map_table(ATTENDANCE, "dbo.inservice_attendance", table, dialect)
    sql = str(pull_query(m, "mssql", datetime(2017, 6, 1, 9, 0)).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}))
    assert "FROM dbo.inservice_attendance" in sql and "[NAME] AS name" in sql
    assert "WHERE dbo.inservice_attendance.modified_at > '2017-06-01 09:00:00' OR " \
           "dbo.inservice_attendance.modified_at IS NULL" in sql
    assert sql.rstrip().endswith("ORDER BY dbo.inservice_attendance.modified_at ASC")
    assert "[order]" not in sql  # unknown columns are not read (a warning names them)
    assert m.notes and "order" in m.notes[0]["message_en"]
    courses = sa.Table("inservice_courses", sa.MetaData(),
                       *(sa.Column(f.code, DATETIME2() if f.code == "modified_at" else NVARCHAR(200))
                         for f in COURSE.fields))
    sql = str(pull_query(map_table(COURSE, "inservice_courses", courses, dialect), "mssql", None).compile(
        dialect=dialect))
    assert "WHERE" not in sql and "ORDER BY inservice_courses.modified_at ASC" in sql
    # PostgreSQL puts NULLs last unless told
    pg_dialect = postgresql.psycopg2.dialect()
    pgsql = str(pull_query(map_table(COURSE, "inservice_courses", courses, pg_dialect), "postgresql", None).compile(
        dialect=pg_dialect))
    assert pgsql.rstrip().endswith("ORDER BY inservice_courses.modified_at NULLS FIRST")
    # driver values → canonical text, as pyodbc returns them
    aware = datetime(2017, 6, 1, 1, 0, tzinfo=UTC)
    assert to_text([aware, None]).to_pylist() == ["2017-06-01 09:00:00", None]
    assert to_text([Decimal("6.0"), Decimal("12.5")]).to_pylist() == ["6.0", "12.5"]
    assert to_text([True, False, None]).to_pylist() == ["true", "false", None]
    assert to_text([date(2017, 6, 1), "0000-00-00"]).to_pylist() == ["2017-06-01", "0000-00-00"]
    assert to_text([b"\x01", b"\x00"]).to_pylist() == ["1", "0"]
    url = make_url("mssql+pyodbc://feeder:pa55word@host/db?driver=ODBC+Driver+18+for+SQL+Server")
    assert "pa55word" not in masked_url(url)
    odbc = URL.create("mssql+pyodbc", query={"odbc_connect": "DRIVER={ODBC Driver 18};SERVER=h;UID=u;PWD=pa55word"})
    assert "pa55word" not in masked_url(odbc)


def test_dagster_partitions_schedule_sensor_and_retry(pg: URL, fhome: Settings, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")
    import dagster as dg

    from inservice.assets import feeds as fa
    from inservice.assets.shared import InserviceResource
    from inservice.pipelines import feeds as fp

    db = partner(pg)
    create_tables(db)
    insert(db, "inservice_courses", [course("G1", DAY1, True)])
    insert(db, "inservice_attendance", [attendee("G1", T[0], DAY1, True)])
    setup_unit(fhome, pg, monkeypatch)
    resources = {"inservice": InserviceResource()}
    defs = dg.Definitions(assets=fa.FEED_ASSETS, jobs=fp.FEED_JOBS, schedules=fp.FEED_SCHEDULES,
                          sensors=fp.FEED_SENSORS, resources=resources)
    defs.resolve_all_job_defs()
    assert fa.partner_feed.op.pool == "warehouse"
    assert fa.partner_feed.op.retry_policy.backoff == dg.Backoff.EXPONENTIAL
    schedule = defs.resolve_schedule_def("feed_daily_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "Asia/Taipei")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = fp.feed_register_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert result.dynamic_partitions_requests[0].partition_keys == [UNIT]
        instance.add_dynamic_partitions(fa.FEED_UNITS.name, [UNIT])
        at = datetime(2017, 6, 3, 2, 0, tzinfo=TAIPEI)
        requests = fp.feed_daily_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))
        assert [r.partition_key for r in requests] == ["2017-06-02|T009"]  # the day just ended
        key = dg.MultiPartitionKey({"unit": UNIT, "day": "2017-06-02"})
        done = dg.materialize(fa.FEED_ASSETS, partition_key=key, instance=instance, resources=resources)
        meta = done.asset_materializations_for_node("partner_feed")[0].metadata
        assert meta["status"].value == "loaded" and meta["attendance_accepted"].value == 1
        # partner down: the asset raises a ConnectionError, which its RetryPolicy retries
        monkeypatch.setenv(ENV, pg.set(port=1).render_as_string(False))
        ctx = dg.build_asset_context(partition_key=key, resources=resources, instance=instance)
        with pytest.raises(ConnectionError):
            fa.partner_feed(ctx, fa.FeedConfig())


def test_control_characters_from_a_partner_database_are_findings(mysql: tuple[URL, URL], fhome: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB text may hold NUL and other control characters, which PostgreSQL text cannot: such a
    value is C02/A02 and shown as U+FFFD; the rest loads into either warehouse and the receipt is written."""
    owner, reader = mysql
    db = partner(owner)
    create_tables(db)
    insert(db, "inservice_courses", [course("K1", DAY1, False, title="素養\x00導向"), course("K2", DAY1, False)])
    insert(db, "inservice_attendance", [attendee("K2", T[0], DAY1, False, name="王\x01明"),
                                        attendee("K2", T[1], DAY1, False)])
    setup_unit(fhome, reader, monkeypatch)
    r = run_json()
    assert r["status"] == "loaded"
    assert {(f["rule"], f["field"], f["course_code"]) for f in r["findings"] if f["record"] != "file"} == {
        ("C02", "title", "K1"), ("A02", "name", "K2")}
    assert r["courses"]["accepted"] == 1 and r["attendance"]["accepted"] == 1
    title = next(f for f in r["findings"] if f["rule"] == "C02")
    assert "「素養\ufffd導向」（含控制字元）" in title["message_zh"]
    assert Path(r["receipt_files"][1]).stat().st_size > 0
    assert wh_rows(fhome, "SELECT course_code FROM courses") == [("K2",)]
    assert "\x00" not in all_text(fhome, r["receipt_files"])


def test_c11_red_organizers_closing_and_registering_in_one_feed_run(pg: URL, fhome: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec 1.1 C11 through a real feed: two red organizers of the unit (5 courses each ended more than
    7 days ago, not closed). In one run the first closes one course and registers a new one — the closing
    counts first, so its registration is accepted — while the second only registers: refused C11, its
    attendance A05. The next day the first organizer (now yellow) registers again: accepted."""
    engine = partner(pg)
    create_tables(engine)
    o1, o2 = "國立臺灣師範大學", "臺北市教師研習中心"
    day1 = datetime(2017, 11, 1, 9, 0)
    old = {"start_date": date(2017, 10, 2), "end_date": date(2017, 10, 2), "closed_date": None}
    insert(engine, "inservice_courses", [course(f"A{i}", day1, True, organizer=o1, **old) for i in range(1, 6)]
           + [course(f"B{i}", day1, True, organizer=o2, **old) for i in range(1, 6)])
    setup_unit(fhome, pg, monkeypatch)
    with Warehouse(fhome) as wh:
        first = FeedRunner(fhome, wh).run(UNIT, received_at="2017-11-14T02:00:00+08:00")
    assert first["courses"]["accepted"] == 10 and rules(first) == set()

    day2 = datetime(2017, 11, 14, 10, 0)
    execute(engine, "UPDATE inservice_courses SET closed_date = '2017-11-14', modified_at = :at "
                    "WHERE course_code = 'A1'", at=day2.replace(tzinfo=TAIPEI))
    new = {"start_date": date(2017, 12, 1), "end_date": date(2017, 12, 1), "closed_date": None}
    insert(engine, "inservice_courses", [course("N1", day2, True, organizer=o1, **new),
                                         course("N2", day2, True, organizer=o2, **new)])
    insert(engine, "inservice_attendance", [attendee("N2", make_id(random.Random(11)), day2, True,
                                                     hours_granted="0", completed="N")])
    with Warehouse(fhome) as wh:
        second = FeedRunner(fhome, wh).run(UNIT, received_at="2017-11-15T02:00:00+08:00")
    assert rules(second) == {("C11", "N2"), ("A05", "N2"), ("W03", "A1")}  # (A1 closed late: a warning)
    [c11] = [f for f in second["findings"] if f["rule"] == "C11"]
    assert c11["field"] == "organizer" and o2 in c11["message_zh"] and "5" in c11["message_zh"]
    assert wh_rows(fhome, "SELECT course_code, closed_date FROM courses WHERE course_code IN ('A1', 'N1', 'N2') "
                          "ORDER BY 1") == [("A1", date(2017, 11, 14)), ("N1", None)]

    day3 = datetime(2017, 11, 15, 10, 0)
    insert(engine, "inservice_courses", [course("N3", day3, True, organizer=o1, **new)])
    with Warehouse(fhome) as wh:
        third = FeedRunner(fhome, wh).run(UNIT, received_at="2017-11-16T02:00:00+08:00")
    assert ("C11", "N3") not in rules(third) and ("C11", "N2") in rules(third)  # N2 is still new, still red
