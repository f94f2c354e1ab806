"""The warehouse: register, state queries and the upload merge, on either backend.

The SQL here is written once; `backend.py` picks DuckDB (embedded default) or PostgreSQL, and
`postgres.py` holds what PostgreSQL does differently. One writer at a time: on DuckDB the CLI holds
the file for one command and Dagster serialises writers through a pool; on PostgreSQL writing
transactions also take an advisory lock. Every upload is merged in one transaction: all its
accepted rows or none.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from inservice.config import Settings
from inservice.schemas import codelists
from inservice.schemas.codelists import county_names
from inservice.schemas.fields import UNIT_CODE
from inservice.schemas.reference import school_codes
from inservice.validations import lights, normalize
from inservice.validations.engine import ATTENDANCE_CONTENT, COURSE_CONTENT, Exceptions, Validated
from inservice.validations.findings import for_analysts
from inservice.warehouse import ddl, reference
from inservice.warehouse.backend import (  # noqa: F401 (WarehouseBusy: callers catch it from here)
    Connection,
    WarehouseBusy,
    WarehouseUrl,
    backend_of,
    connect,
)

UNIT_STATES = ("testing", "production", "sealed")
ROW_JSON = "CAST(to_json({}) AS VARCHAR)"  # a whole row as JSON text (history); portable to both backends
CHANNELS = ("file", "db")
UNIT_COLUMNS = "unit_code, name, channel, state, joined, county_code, operator"
KEY_RANGE_UNITS = 64  # beyond this many units a look-up names none (the zone maps of a clustered table)
COMMIT_SEQ = "commit_seq"  # warehouse_meta: DuckDB's count of committed writes (is the analysts' copy current?)


def actor() -> str:
    """Who makes a register change, for its log: INSERVICE_ACTOR (Dagster jobs set it), else the OS user."""
    import getpass

    try:
        return os.environ.get("INSERVICE_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (a container)
        return f"uid:{os.getuid()}"


def failpoint(name: str) -> None:
    """Test hook: `INSERVICE_FAILPOINT=name` kills the process here (proves all-or-nothing loads)."""
    if os.environ.get("INSERVICE_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Unit:
    unit_code: str
    name: str
    channel: str
    state: str
    joined: date
    county_code: str | None = None
    operator: str | None = None

    @property
    def area(self) -> str:
        return "testing" if self.state == "testing" else "production"


@dataclass
class MergeCounts:
    courses_inserted: int = 0
    courses_updated: int = 0
    attendance_inserted: int = 0
    attendance_updated: int = 0
    courses_withdrawn: int = 0
    attendance_withdrawn: int = 0


@dataclass(frozen=True)
class Source:
    """Where a change came from, as the history records it."""

    kind: str  # "upload" | "feed" | "correction" | "backfill"
    id: str  # upload id, feed-day id, or correction row id
    letter_no: str | None = None  # approval letter (corrections)


class WarehouseError(Exception):
    pass


class Warehouse:
    def __init__(self, target: Settings | Path | str, read_only: bool = False, wait: float | None = None) -> None:
        """`target`: Settings (its INSERVICE_WAREHOUSE_URL or DuckDB default), a DuckDB file, or a URL;
        `wait`: seconds to wait for a DuckDB file another process holds (default INSERVICE_LOCK_TIMEOUT)."""
        self.url = WarehouseUrl.parse(target.warehouse_url if isinstance(target, Settings) else target)
        self.settings = target if isinstance(target, Settings) else None
        self.con: Connection = connect(self.url, read_only=read_only, wait=wait)
        self.backend = backend_of(self.con)
        self.read_only = read_only
        self.committed = False  # a write was committed: the writer's session refreshes analysts' access
        if not read_only:
            self.ensure_tables()

    @staticmethod
    def exists(settings: Settings) -> bool:
        """Is there a warehouse to read (its tables created: the file, or the schema on the server)?"""
        url = WarehouseUrl.parse(settings.warehouse_url)
        if url.backend.embedded:
            return Path(url.target).exists()
        con = connect(url, read_only=True)
        try:
            return con.execute("SELECT to_regclass('main.units') IS NOT NULL").fetchall()[0][0]
        finally:
            con.close()

    @property
    def path(self) -> Path:
        return Path(self.url.target)

    def ensure_tables(self) -> None:
        """Create what is missing; an existing warehouse costs one catalog query and one meta read.

        A new school register starts as the shipped MOE list; the reference tables are rewritten when
        the code lists of this release differ from what they hold."""
        existing = set(self.con.execute("""SELECT table_schema, table_name, column_name
            FROM information_schema.columns WHERE table_schema IN ('main', 'testing')""").fetchall())
        tables = {(s, t) for s, t, _ in existing}
        todo = ddl.missing_columns(existing) + ddl.statements(tables)
        rows = reference.reference_rows()
        fingerprint = reference.fingerprint()
        if not todo and self.meta(reference.FINGERPRINT) == fingerprint:
            return
        if todo and self.backend.server:  # with the tables they index (IF NOT EXISTS: after a migration too)
            todo += ddl.index_statements()
        with self.transaction():  # one transaction: a new warehouse's ~200 statements commit once
            for stmt in todo:
                self.con.execute(stmt)
            if ("main", ddl.SCHOOL_REGISTER.name) not in tables:
                reference.seed_schools(self.con)
            if ("main", ddl.UNIT_VERSIONS.name) not in tables:  # a warehouse from before: units as they are now
                self.con.execute("""INSERT INTO unit_versions SELECT unit_code, name, operator, channel, county_code,
                    NULL, NULL FROM units""")
            reference.write_reference(self.con, rows)
            self.put_meta(reference.FINGERPRINT, fingerprint)
            if ("main", ddl.TAGS.name) not in tables:
                self._seed_tags()
        self.committed = False  # creating tables is not a load: no analyst copy for it

    @property
    def alive(self) -> bool:
        """False once the server ended the connection (PostgreSQL): nothing more can be done on it."""
        return not getattr(getattr(self.con, "raw", None), "closed", 0)

    def close(self) -> None:
        """Close the connection. Analysts' access is not refreshed here: a writer opens the warehouse
        with `analyst.WriteSession`, whose end is the explicit step after its commits."""
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- unit register (changes after registration: inservice/registers/units.py) ---------------
    def add_unit(self, code: str, name: str, channel: str, state: str, joined: date, county: str | None = None,
                 operator: str | None = None, by: str | None = None) -> None:
        """Register a unit: its row, its first version (unit_versions) and a `register` line in the
        state log, in one transaction. `county` (spec §3.1 code) decides which county exports it."""
        with self.transaction():
            self.insert_unit(code, name, channel, state, joined, county, operator, by)

    def insert_unit(self, code: str, name: str, channel: str, state: str, joined: date, county: str | None = None,
                    operator: str | None = None, by: str | None = None) -> None:
        """`add_unit` inside the caller's transaction (the backfill registers units with its rows)."""
        if channel not in CHANNELS or state not in UNIT_STATES:
            raise WarehouseError(f"channel must be one of {CHANNELS}, state one of {UNIT_STATES}")
        if not re.fullmatch(UNIT_CODE, code):  # it names an inbox folder too
            raise WarehouseError(f"unit code {code!r} is not an upper-case letter and 3–9 letters or digits")
        if county is not None and county not in county_names():
            raise WarehouseError(f"unknown county code {county!r} (spec §3.1, e.g. 63000 臺北市, 10016 澎湖縣)")
        if self.unit(code) is not None:  # a state change needs a letter and goes to the log
            raise WarehouseError(f"unit {code} is already registered (change its state with `units set-state`)")
        self.con.execute("""INSERT INTO units (unit_code, name, channel, state, joined, updated_at, county_code,
            operator) VALUES (?, ?, ?, ?, ?, now(), ?, ?)""", [code, name, channel, state, joined, county, operator])
        self.con.execute("""INSERT INTO unit_versions (unit_code, name, operator, channel, county_code, valid_from,
            valid_to) VALUES (?, ?, ?, ?, ?, NULL, NULL)""", [code, name, operator, channel, county])
        self.con.execute("""INSERT INTO unit_state_log (unit_code, from_state, to_state, letter_no, reason,
            changed_at, field, old_value, new_value, effective_date, changed_by)
            VALUES (?, NULL, ?, NULL, 'register', now(), NULL, NULL, ?, ?, ?)""",
                         [code, state, name, joined, by or actor()])

    def _unit_columns(self) -> str:
        """UNIT_COLUMNS; on a warehouse from before a column, opened read-only (not migrated), NULL for it."""
        if not self.read_only:
            return UNIT_COLUMNS
        have = {r[0] for r in self.con.execute("""SELECT column_name FROM information_schema.columns
            WHERE table_schema = 'main' AND table_name = 'units'""").fetchall()}
        return ", ".join(c if c in have else f"NULL AS {c}" for c in UNIT_COLUMNS.split(", "))

    def unit(self, code: str) -> Unit | None:
        rows = self.con.execute(f"SELECT {self._unit_columns()} FROM units WHERE unit_code = ?", [code]).fetchall()
        return Unit(*rows[0]) if rows else None

    def units(self) -> list[Unit]:
        rows = self.con.execute(f"SELECT {self._unit_columns()} FROM units ORDER BY 1").fetchall()
        return [Unit(*r) for r in rows]

    # --- the tag register (registers/tags.py changes it) ----------------------------------------
    def _seed_tags(self) -> None:
        """The eight tags of spec §3.8 (valid from 2013-01-01, no end), logged as the seed."""
        seed = normalize.tag_seed().to_pylist()
        for t in seed:
            self.con.execute("INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                             [t["code"], t["short_label"], t["full_name"], codelists.TAGS_BASIS, t["valid_from"],
                              None, t["position"]])
            self.con.execute("INSERT INTO tag_log VALUES (?, 'seed', ?, ?, ?, ?, NULL, 'spec', now())",
                             [t["code"], t["short_label"], t["full_name"], codelists.TAGS_BASIS, t["valid_from"]])

    def tag_register(self) -> pa.Table:
        """The register as the rule engine reads it (normalize.TAG_REGISTER); a warehouse from before the
        register, opened read-only (a self-check), reads the seed."""
        if self.read_only and not self.con.execute("""SELECT count(*) FROM information_schema.tables
                WHERE table_schema = 'main' AND table_name = 'tags'""").fetchone()[0]:
            return normalize.tag_seed()
        names = ", ".join(normalize.TAG_REGISTER.names)
        rows = self.con.execute(f"SELECT {names} FROM main.tags ORDER BY position").fetchall()  # a few dozen
        return pa.Table.from_pylist([dict(zip(normalize.TAG_REGISTER.names, r, strict=True)) for r in rows],
                                    schema=normalize.TAG_REGISTER)

    # --- the warehouse's own records (warehouse_meta: not an analyst table) ----------------------
    def meta(self, name: str) -> str | None:
        if self.read_only and not self.con.execute("""SELECT count(*) FROM information_schema.tables
                WHERE table_schema = 'main' AND table_name = 'warehouse_meta'""").fetchall()[0][0]:
            return None  # a warehouse from before the table, opened read-only (a self-check)
        rows = self.con.execute("SELECT value FROM warehouse_meta WHERE name = ?", [name]).fetchall()  # to the end:
        return rows[0][0] if rows else None  # DuckDB refuses other work beside an unfinished result

    def put_meta(self, name: str, value: str) -> None:
        """Record `value` for `name`, replacing an earlier one (in the caller's transaction, if any)."""
        if not self.con.execute("UPDATE warehouse_meta SET value = ?, updated_at = now() WHERE name = ? RETURNING 1",
                                [value, name]).fetchall():
            self.con.execute("INSERT INTO warehouse_meta VALUES (?, ?, now())", [name, value])

    def set_meta_once(self, name: str, value: str) -> str:
        """Record `value` unless `name` already has one; returns the value recorded (writers are
        serialised, so two first uses cannot both record)."""
        with self.transaction():
            current = self.meta(name)
            if current is None:
                self.con.execute("INSERT INTO warehouse_meta VALUES (?, ?, now())", [name, value])
        return value if current is None else current

    # --- archive exceptions --------------------------------------------------------------------
    def add_exception(self, unit: str, course_code: str | None, letter_no: str, letter_date: date,
                      valid_until: date) -> int:
        with self.transaction():
            next_id = self.con.execute(
                "SELECT coalesce(max(exception_id), 0) + 1 FROM archive_exceptions").fetchall()[0][0]
            self.con.execute("INSERT INTO archive_exceptions VALUES (?, ?, ?, ?, ?, ?, now())",
                             [next_id, unit, course_code, letter_no, letter_date, valid_until])
        return next_id

    def remove_exception(self, exception_id: int) -> bool:
        with self.transaction():
            n = self.con.execute("DELETE FROM archive_exceptions WHERE exception_id = ? RETURNING 1",
                                 [exception_id]).fetchall()
        return bool(n)

    def exceptions(self) -> list[dict]:
        cur = self.con.execute("""SELECT exception_id, unit_code, course_code, letter_no, letter_date, valid_until
            FROM archive_exceptions ORDER BY exception_id""")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def exceptions_for(self, unit: str, on: date) -> Exceptions:
        rows = self.con.execute("""SELECT course_code FROM archive_exceptions
            WHERE unit_code = ? AND valid_until >= ? AND letter_date <= ?""", [unit, on, on]).fetchall()
        codes = frozenset(r[0] for r in rows if r[0] is not None)
        return Exceptions(all_courses=any(r[0] is None for r in rows), course_codes=codes)

    # --- uploads ----------------------------------------------------------------------------------
    def loaded_upload(self, unit: str, content_hash: str, area: str) -> dict | None:
        """The first loaded upload of these bytes for the unit in the area: its id and receipt paths."""
        cur = self.con.execute("""SELECT upload_id, receipt_json, receipt_xlsx FROM uploads WHERE unit_code = ?
            AND content_hash = ? AND area = ? AND status = 'loaded' ORDER BY processed_at LIMIT 1""",
                               [unit, content_hash, area])
        rows = cur.fetchall()  # fetched to the end: DuckDB refuses other work beside an unfinished result
        return dict(zip(("upload_id", "receipt_json", "receipt_xlsx"), rows[0], strict=True)) if rows else None

    def upload_id_taken(self, upload_id: str) -> bool:
        return bool(self.con.execute("SELECT 1 FROM uploads WHERE upload_id = ?", [upload_id]).fetchall())

    def receipt_name_taken(self, json_path: str) -> bool:
        """Is a receipt path already some upload's (committed, its file perhaps not yet renamed into place)?"""
        return bool(self.con.execute("SELECT 1 FROM uploads WHERE receipt_json = ?", [json_path]).fetchall())

    def receipt_document(self, upload_id: str) -> str | None:
        """The JSON receipt as it was sent (upload_receipts; a feed batch's copy holds that batch's
        findings), or None (uploads before it was kept)."""
        rows = self.con.execute("SELECT receipt FROM upload_receipts WHERE upload_id = ? ORDER BY written_at DESC "
                                "LIMIT 1", [upload_id]).fetchall()
        return rows[0][0] if rows else None

    # --- WarehouseState (what the rule engine reads) -------------------------------------------
    def state(self, area: str) -> AreaState:
        return AreaState(self.con, ddl.AREAS[area])

    # --- the merge -----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
            if self.backend.embedded:  # numbered with the rows it commits (no copy on PostgreSQL)
                self._count_commit()
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()
        self.committed = True

    def _count_commit(self) -> None:
        self.put_meta(COMMIT_SEQ, str(int(self.meta(COMMIT_SEQ) or 0) + 1))

    def record_upload(self, upload: dict, findings: pa.Table, validated: Validated | None, area: str | None,
                      now: datetime, in_transaction: Callable[[Connection], None] | None = None,
                      receipt: str | None = None) -> MergeCounts:
        """Write the upload row, its findings, (if loaded) its accepted rows and (if given) its
        receipt's JSON, atomically.

        `in_transaction` runs inside the same transaction (a feed's watermark: it moves with the
        rows it covers, or not at all)."""
        with self.transaction():
            counts = self.write_upload(upload, findings, validated, area, now, receipt)
            if in_transaction is not None:
                in_transaction(self.con)
            failpoint("merge.before_commit")
        return counts

    def write_upload(self, upload: dict, findings: pa.Table, validated: Validated | None, area: str | None,
                     now: datetime, receipt: str | None = None) -> MergeCounts:
        """`record_upload`'s writes, inside the caller's transaction; `receipt`, the JSON receipt, is
        kept in upload_receipts. `area` None: the unit is not registered (only the upload row and its
        findings are written)."""
        counts = MergeCounts()
        if validated is not None and upload["status"] == "loaded":
            assert area is not None, "a loaded upload is a registered unit's: it has an area"
            kind = "feed" if upload.get("channel") == "db" else "replay" if upload.get("replay_of") else "upload"
            counts = self.merge(validated, area, Source(kind, upload["upload_id"]), now)
            if kind == "replay":  # what a re-evaluation brought in is in the courses' history too
                schema = ddl.AREAS[area]
                self.record_history(f"{schema}.courses", f"FROM {schema}.courses t WHERE t.upload_id = ? "
                              "AND t.first_loaded_at = ?", "replay", "NULL", ROW_JSON.format("t"),
                              Source(kind, upload["upload_id"]), now, [upload["upload_id"], now])
        row = {**upload, **counts.__dict__}
        cols = [c.name for c in ddl.UPLOADS.columns]
        self.con.execute(f"INSERT INTO uploads ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [row.get(c) for c in cols])
        if self.backend.embedded:  # the unit's uploads part of the analysts' access (analyst.py)
            self.con.execute("INSERT INTO main.analyst_pending VALUES ('uploads', ?, ?, NULL, NULL, false)",
                             [row.get("unit_code"), row.get("processed_at") or now])
        self.con.register("new_findings", for_analysts(findings))  # the receipt alone quotes values
        self.con.execute("""INSERT INTO findings SELECT ?, record, "row", field, rule, severity,
            course_code, message_zh, message_en FROM new_findings""", [upload["upload_id"]])
        self.con.unregister("new_findings")
        if receipt is not None:
            self.con.execute("INSERT INTO upload_receipts VALUES (?, ?, ?)", [upload["upload_id"], receipt, now])
        return counts

    def merge(self, v: Validated, area: str, source: Source, now: datetime) -> MergeCounts:
        """The one merge of every channel (call inside a transaction): withdrawals, then upserts.

        A row with is_deleted leaves the analyst tables (a withdrawn course takes its attendance
        with it); every update and withdrawal of a loaded row is kept in `history`."""
        con, schema = self.con, ddl.AREAS[area]
        courses = v.accepted_courses.select(["unit_code", "course_code", *COURSE_CONTENT, "modified_at"])
        att = v.accepted_attendance.select(["unit_code", "course_code", "teacher_key", *ATTENDANCE_CONTENT,
                                            "modified_at"])
        con.register("stage_c", courses)
        con.register("stage_a", att)
        # the common case: nothing withdrawn, so the staged rows are the live rows (no copies)
        withdrawing = any(t.num_rows and pc.any(pc.fill_null(t["is_deleted"], False)).as_py() for t in (courses, att))
        live_c, live_a = ("live_c", "live_a") if withdrawing else ("stage_c", "stage_a")
        withdrawn_att = withdrawn_c = 0
        try:
            if withdrawing:
                con.execute("""CREATE OR REPLACE TEMP TABLE gone_c AS
                    SELECT unit_code, course_code FROM stage_c WHERE is_deleted""")
                con.execute(f"""CREATE OR REPLACE TEMP TABLE gone_a AS
                    SELECT unit_code, course_code, teacher_key FROM stage_a WHERE is_deleted
                    UNION ALL SELECT a.unit_code, a.course_code, a.teacher_key FROM {schema}.attendance a
                    JOIN gone_c USING (unit_code, course_code)""")
                withdrawn_att = self._withdraw(f"{schema}.attendance", "gone_a", list(ddl.ATTENDANCE.key), source,
                                               now)
                withdrawn_c = self._withdraw(f"{schema}.courses", "gone_c", list(ddl.COURSES.key), source, now)
                con.execute("""CREATE OR REPLACE TEMP TABLE live_c AS SELECT * FROM stage_c WHERE NOT is_deleted""")
                con.execute("""CREATE OR REPLACE TEMP TABLE live_a AS SELECT * FROM stage_a a WHERE NOT is_deleted
                    AND NOT EXISTS (SELECT 1 FROM gone_c g WHERE g.unit_code = a.unit_code
                                    AND g.course_code = a.course_code)""")
            c_ins, c_upd = self.upsert(f"{schema}.courses", live_c, list(ddl.COURSES.key),
                                       [*COURSE_CONTENT, "modified_at"], COURSE_CONTENT, source, now)
            failpoint("merge.after_courses")
            a_ins, a_upd = self.upsert(f"{schema}.attendance", live_a, list(ddl.ATTENDANCE.key),
                                        [*ATTENDANCE_CONTENT, "modified_at"], ATTENDANCE_CONTENT, source, now)
        finally:
            con.unregister("stage_c")
            con.unregister("stage_a")
            for temp in ("gone_c", "gone_a", "live_c", "live_a") if withdrawing else ():
                con.execute(f"DROP TABLE IF EXISTS {temp}")  # not kept until the next merge
        return MergeCounts(c_ins, c_upd, a_ins, a_upd, withdrawn_c, withdrawn_att)

    def record_history(self, target: str, select_from: str, action: str, before: str, after: str,
                       source: Source, now: datetime, params: list | None = None) -> None:
        schema, table = target.split(".")
        record = "course" if table == "courses" else "attendance"
        teacher = "t.teacher_key" if record == "attendance" else "NULL"
        self.con.execute(f"""INSERT INTO {schema}.history SELECT '{record}', t.unit_code, t.course_code,
            {teacher}, '{action}', {before}, {after}, ?, ?, ?, ? {select_from}""",
                         [source.kind, source.id, source.letter_no, now, *(params or [])])

    def note_change(self, target: str, rows: str, now: datetime, deleted: bool = False,
                    replaces: bool = True) -> None:
        """DuckDB, production area: record in `analyst_pending`, in the change's own transaction, which
        units' analyst parts it touched (the table's and the history's; rows written at `now` or
        later), whether it changed or removed existing rows (`replaces`; else it only added rows)
        and, for a deletion, the keys it removed (`rows` holds unit_code, course_code and, for
        attendance, teacher_key). The analysts' refresh writes those parts only (analyst.py)."""
        schema, table = target.split(".")
        if self.backend.server or schema != "main":
            return
        self.con.execute(f"""INSERT INTO main.analyst_pending SELECT DISTINCT t.tbl, s.unit_code,
            CAST(? AS TIMESTAMPTZ), NULL, NULL, t.replaces FROM {rows} s,
            (VALUES ('{table}', {replaces or deleted}), ('history', false)) t(tbl, replaces)""", [now])
        if deleted:
            teacher = "teacher_key" if table == "attendance" else "NULL"
            self.con.execute(f"""INSERT INTO main.analyst_pending SELECT '{table}', unit_code,
                CAST(? AS TIMESTAMPTZ), course_code, {teacher}, true FROM {rows}""", [now])

    def _withdraw(self, target: str, gone: str, keys: list[str], source: Source, now: datetime) -> int:
        on = " AND ".join(f't."{k}" = g."{k}"' for k in keys) + f" AND {self.key_range(gone)}"
        self.record_history(target, f"FROM {target} t JOIN {gone} g ON {on}", "withdraw", ROW_JSON.format("t"), "NULL",
                      source, now)
        self.note_change(target, gone, now, deleted=True)
        return int(self.con.execute(f"""DELETE FROM {target} t USING {gone} g WHERE {on}""").fetchall()[0][0])

    def key_range(self, rows: str, alias: str = "t") -> str:
        return key_range(self.con, rows, alias)

    def cluster(self) -> dict[str, int]:
        """DuckDB: store courses and attendance (both areas) in key order, so that the merge and the
        rules, which read the keys an upload carries, skip by zone maps the row groups of other keys
        (uploads append in arrival order; run this now and then, e.g. monthly: `inservice warehouse
        cluster`). The rows stay the same; one transaction per table. Returns rows per table."""
        if self.backend.server:
            return {}  # PostgreSQL walks its key index
        done = {}
        for schema in ddl.AREAS.values():
            for table in (ddl.COURSES, ddl.ATTENDANCE):
                name = f"{schema}.{table.name}"
                with self.transaction():
                    top = self.con.execute(f"SELECT max(rowid) FROM {name}").fetchall()[0][0]
                    if top is None:
                        continue
                    order = ", ".join(f'"{k}"' for k in table.key)
                    n = self.con.execute(f"INSERT INTO {name} SELECT * FROM {name} ORDER BY {order}").fetchall()[0][0]
                    self.con.execute(f"DELETE FROM {name} WHERE rowid <= ?", [top]).fetchall()
                done[name] = int(n)
        self.con.execute("CHECKPOINT")
        return done

    def upsert(self, target: str, stage: str, keys: list[str], columns: list[str], compared: list[str],
                source: Source, now: datetime, action: str = "update") -> tuple[int, int]:
        """Set-based upsert bounded by the stage: history and update for rows whose content differs,
        then insert the new keys (anti-join). No enforced key: the anti-join keeps keys unique, an
        asset check proves it.

        The warehouse is read once, for the rows of the stage's (unit_code, course_code) pairs
        (`_near`); history, update and anti-join then work on that small set, never on the whole
        table, so an upload costs what it carries, not what the warehouse holds."""
        if not self.con.execute(f"SELECT count(*) FROM {stage}").fetchall()[0][0]:
            return 0, 0
        cols = self._near(target, stage)
        on = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
        differs = " OR ".join(f't."{c}" IS DISTINCT FROM s."{c}"' for c in compared)
        old = f"(SELECT {cols} FROM merge_near) t"  # the target's columns only: history's JSON as before
        self.record_history(target, f"FROM {old} JOIN {stage} s ON {on} WHERE {differs}", action,
                      ROW_JSON.format("t"), ROW_JSON.format("s"), source, now)
        updated = 0
        self.con.execute(f"""CREATE OR REPLACE TEMP TABLE merge_changed AS SELECT t._rid, s.*
            FROM merge_near t JOIN {stage} s ON {on} WHERE {differs}""")
        if self.con.execute("SELECT count(*) FROM merge_changed").fetchall()[0][0]:
            sets = ", ".join(f'"{c}" = s."{c}"' for c in columns)
            # DuckDB: by row id, which prunes the scan to the changed rows' row groups; PostgreSQL: by
            # the key, through its unique index
            match = on if self.backend.server else "t.rowid = s._rid"
            updated = self.con.execute(f"""UPDATE {target} t SET {sets}, upload_id = ?, loaded_at = ?
                FROM merge_changed s WHERE {match}""", [source.id, now]).fetchall()[0][0]
        all_cols = [*keys, *columns]
        names = ", ".join(f'"{c}"' for c in all_cols)
        inserted = self.con.execute(f"""INSERT INTO {target} ({names}, upload_id, loaded_at, first_loaded_at)
            SELECT {", ".join(f's."{c}"' for c in all_cols)}, ?, ?, ? FROM {stage} s
            WHERE NOT EXISTS (SELECT 1 FROM merge_near t WHERE {on})""", [source.id, now, now]).fetchall()[0][0]
        for temp in ("merge_near", "merge_changed"):
            self.con.execute(f"DROP TABLE IF EXISTS {temp}").fetchall()
        if inserted or updated:
            self.note_change(target, stage, now, replaces=bool(updated))
        return int(inserted), int(updated)

    def _near(self, target: str, stage: str) -> str:
        """`merge_near`: the target's rows of the (unit_code, course_code) pairs the stage carries, with
        `_rid`, their row id; returns the target's column list. Every key of both tables starts with
        that pair, so these are all the rows the stage can match. DuckDB reads the two key columns
        first (a narrow scan, pruned by zone maps where the table is sorted by key, as a backfill
        leaves it) and then fetches whole rows by row id; PostgreSQL walks its key index."""
        con = self.con
        result = con.execute(f"SELECT * FROM {target} LIMIT 0")
        names = [d[0] for d in result.description]
        result.fetchall()  # DuckDB refuses other work beside an unfinished result
        cols = ", ".join(f'"{c}"' for c in names)
        pairs = f"SELECT DISTINCT unit_code, course_code FROM {stage}"
        if self.backend.server:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE merge_near AS SELECT t.ctid AS _rid, {cols} FROM {target} t
                WHERE (t.unit_code, t.course_code) IN ({pairs})""")
            return cols
        con.execute(f"""CREATE OR REPLACE TEMP TABLE merge_rids AS SELECT t.rowid AS _rid FROM {target} t
            SEMI JOIN ({pairs}) k USING (unit_code, course_code) WHERE {self.key_range(stage)}""")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE merge_near AS SELECT t.rowid AS _rid, {cols} FROM {target} t
            WHERE t.rowid IN (SELECT _rid FROM merge_rids)""")
        con.execute("DROP TABLE merge_rids").fetchall()
        return cols

    def table(self, sql: str, params: list | None = None) -> pa.Table:
        return self.con.sql(sql, params=params).to_arrow_table()


def key_range(con: Connection, rows: str, alias: str = "t") -> str:
    """DuckDB: the units (and, for one unit, the course-code range) that `rows` carries, as constants
    on `alias`, so that a scan's zone maps skip the row groups of other keys where the table is stored
    in key order (`Warehouse.cluster`). TRUE on PostgreSQL (its key index) or for many units."""
    if backend_of(con).server:
        return "TRUE"
    found = con.execute(f"""SELECT unit_code, min(course_code), max(course_code) FROM {rows}
        GROUP BY ALL LIMIT {KEY_RANGE_UNITS + 1}""").fetchall()
    if not found or len(found) > KEY_RANGE_UNITS or any(u is None for u, _, _ in found):
        return "TRUE"
    if len(found) == 1 and found[0][1] is not None:
        unit, low, high = found[0]
        return (f"{alias}.unit_code = {ddl.sql_text(unit)} AND {alias}.course_code "
                f"BETWEEN {ddl.sql_text(low)} AND {ddl.sql_text(high)}")
    return f"{alias}.unit_code IN ({', '.join(ddl.sql_text(u) for u, _, _ in found)})"


class AreaState:
    """The engine's view of one area of the warehouse (implements validations.engine.WarehouseState)."""

    def __init__(self, con: Connection, schema: str) -> None:
        self.con = con
        self.schema = schema

    def _with_codes(self, table: str, select: str, unit: str, codes: pa.Array) -> pa.Table:
        """`select` of the unit's rows of `table` with these course codes. DuckDB: their row ids by the two
        key columns first, then those rows alone (reading every column of the unit's rows costs more)."""
        self.con.register("wanted_codes", pa.table({"course_code": codes}))
        try:
            if backend_of(self.con).server:
                return self.con.sql(f"""SELECT {select} FROM {self.schema}.{table} WHERE unit_code = ?
                    AND course_code IN (SELECT course_code FROM wanted_codes)""", params=[unit]).to_arrow_table()
            bounds = pc.min_max(codes).as_py() if len(codes) else {}
            low, high = bounds.get("min"), bounds.get("max")
            span = f" AND course_code BETWEEN {ddl.sql_text(low)} AND {ddl.sql_text(high)}" \
                if low is not None and high is not None else ""  # constants: zone maps of a clustered table
            rids = self.con.sql(f"""SELECT rowid AS rid FROM {self.schema}.{table}
                WHERE unit_code = {ddl.sql_text(unit)} {span}
                AND course_code IN (SELECT course_code FROM wanted_codes)""").to_arrow_table()
        finally:
            self.con.unregister("wanted_codes")
        self.con.register("wanted_rids", rids)
        try:
            return self.con.sql(f"""SELECT {select} FROM {self.schema}.{table}
                WHERE rowid IN (SELECT rid FROM wanted_rids)""").to_arrow_table()
        finally:
            self.con.unregister("wanted_rids")

    def existing_courses(self, unit: str, codes: pa.Array) -> pa.Table:
        cols = ", ".join(f'"{c}"' for c in COURSE_CONTENT if c != "hours")
        return self._with_codes("courses", f"course_code, {cols}, CAST(hours AS FLOAT8) AS hours", unit, codes)

    def existing_attendance(self, unit: str, codes: pa.Array) -> pa.Table:
        return self._with_codes("attendance", """course_code, teacher_key, school_code,
            CAST(hours_granted AS FLOAT8) AS hours_granted, completed, is_deleted""", unit, codes)

    def schools(self) -> pa.Table:
        """The school register (one for both areas), every version. A warehouse from before the register,
        opened read-only (a self-check), has none yet: the shipped list, valid throughout."""
        if not self.con.execute("""SELECT count(*) FROM information_schema.tables
                WHERE table_schema = 'main' AND table_name = 'school_register'""").fetchall()[0][0]:
            codes = school_codes()
            return pa.table({"school_code": codes, "valid_from": pa.nulls(len(codes), pa.date32()),
                             "valid_to": pa.nulls(len(codes), pa.date32())})
        return self.con.sql("SELECT school_code, valid_from, valid_to FROM main.school_register").to_arrow_table()

    def unclosed_courses(self, unit: str, on: date) -> pa.Table:
        rows = self.con.execute(f"""SELECT course_code, organizer FROM ({lights.spans_sql(f"{self.schema}.courses")}) s
            WHERE unit_code = ? AND CAST(? AS DATE) BETWEEN counts_from AND counts_until""", [unit, on]).fetchall()
        return pa.table({"course_code": pa.array([r[0] for r in rows], pa.string()),  # one unit's: few rows
                         "organizer": pa.array([r[1] for r in rows], pa.string())})

    def sessions(self, organizer_titles: pa.Table) -> pa.Table:
        """Sessions of these (organizer, title) pairs with their attendees, those overlapping the pair's
        first_day..last_day (W05 needs no other). PostgreSQL joins through
        its indexes; DuckDB finds the courses first, then their attendance rows' ids by the two key
        columns alone, then reads those rows (the attendance table is never joined whole)."""
        if backend_of(self.con).server:
            self.con.register("wanted_pairs", organizer_titles)
            try:
                return self.con.sql(f"""SELECT c.unit_code, c.course_code, c.organizer, c.title,
                    c.start_date, c.end_date, a.teacher_key
                    FROM {self.schema}.courses c JOIN wanted_pairs p USING (organizer, title)
                    JOIN {self.schema}.attendance a USING (unit_code, course_code)
                    WHERE c.start_date <= p.last_day AND c.end_date >= p.first_day
                    AND NOT coalesce(c.is_deleted, false) AND NOT coalesce(a.is_deleted, false)""").to_arrow_table()
            finally:
                self.con.unregister("wanted_pairs")
        con = self.con
        con.register("wanted_pairs", organizer_titles)
        try:
            found = con.sql(f"""SELECT c.unit_code, c.course_code, c.organizer, c.title, c.start_date, c.end_date
                FROM {self.schema}.courses c JOIN wanted_pairs p USING (organizer, title)
                WHERE c.start_date <= p.last_day AND c.end_date >= p.first_day
                AND NOT coalesce(c.is_deleted, false)""").to_arrow_table()
        finally:
            con.unregister("wanted_pairs")
        con.register("session_courses", found)
        try:
            rids = con.sql(f"""SELECT a.rowid AS rid FROM {self.schema}.attendance a
                SEMI JOIN session_courses USING (unit_code, course_code)
                WHERE {key_range(con, "session_courses", "a")}""").to_arrow_table()
            con.register("session_rids", rids)
            try:  # by row id alone: joined here, DuckDB would scan the whole table again
                att = con.sql(f"""SELECT unit_code, course_code, teacher_key FROM {self.schema}.attendance
                    WHERE rowid IN (SELECT rid FROM session_rids)
                    AND NOT coalesce(is_deleted, false)""").to_arrow_table()
            finally:
                con.unregister("session_rids")
        finally:
            con.unregister("session_courses")
        return att.join(found, ["unit_code", "course_code"]).select(
            ["unit_code", "course_code", "organizer", "title", "start_date", "end_date", "teacher_key"])
