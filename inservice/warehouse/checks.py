"""Warehouse invariants as plain functions: `(passed, details)` over a warehouse connection.

Dagster wraps them as blocking asset checks (inservice/assets/warehouse.py); anything else (a
script, a test, an audit) can call them on `Warehouse(...).con`. Keys are not enforced by DuckDB
constraints (see ddl.py), so these checks are what proves them. Details never quote a value that
could be personal data: they name tables, columns, keys and counts.

The publishing gate (`require_passing`) checks only what changed since it last passed (`changes`):
per writing upload id, a signature of its rows (count, first and last write time, and a row mark that
any insert, delete or move changes: DuckDB's row ids, PostgreSQL's writing transaction ids); the
course keys that existed, as hashes, so a course removed since is noticed. Every write path of the
loader (uploads, feeds, corrections, replays, backfill) writes rows with a new upload id and write
time, so its rows are checked again; so is any insert or delete made by hand. Dagster's asset checks
after each upload run read the same scope (`current_scope`) but record nothing; called without a scope
(`failing`, a PostgreSQL read-only session) every check reads whole tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from inservice.errors import OperatorError
from inservice.validations import national_id
from inservice.warehouse import ddl
from inservice.warehouse.backend import Connection, backend_of, regex_matches, text_type_names

NATIONAL_ID = national_id.TOKEN  # the spec's national ID / resident certificate shape, as the rules use it
EXAMPLES = 10  # keys listed in details; counts are always complete

COURSE_KEY = ddl.COURSES.key  # declared with the tables (PostgreSQL enforces them with unique indexes)
ATTENDANCE_KEY = ddl.ATTENDANCE.key

Outcome = tuple[bool, dict]


def _areas() -> list[str]:
    return list(ddl.AREAS.values())


def _examples(con: Connection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(f"{sql} LIMIT {EXAMPLES}", params or [])
    names = [d[0] for d in cur.description]
    return [{k: (v if isinstance(v, int | str | None) else str(v)) for k, v in zip(names, row, strict=True)}
            for row in cur.fetchall()]


@dataclass(frozen=True)
class Scope:
    """The rows of the written tables (courses, attendance per area) a check must read: per "schema.table",
    the upload ids whose rows changed since the last pass (None: every row). A table not listed is
    read whole. `removed`: "schema.courses" → SQL listing hashes of course keys gone since."""

    changed: dict[str, tuple[str | None, ...] | None] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    row_groups: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # DuckDB: rowid ranges changed
    staged: dict[str, str] = field(default_factory=dict)  # DuckDB: a temp table of those rows (and `_rid`)

    def rows(self, table: str, alias: str = "") -> str:
        """A filter on `table`'s rows: those written since (true when the table is read whole)."""
        if table not in self.changed or self.changed[table] is None:
            return "true"
        parts = self.filters(table, alias)
        return "(" + " OR ".join(parts) + ")" if parts else "false"

    def filters(self, table: str, alias: str = "") -> list[str]:
        """The filters whose union is `rows` (the upload ids changed, those without one, the row
        groups changed in place), each one a scan can push down by itself."""
        ids = self.changed.get(table) or ()
        a = f"{alias}." if alias else ""
        named = [ddl.sql_text(i) for i in ids if i is not None]
        return ([f"{a}upload_id IN ({', '.join(named)})"] if named else []) + (
            [f"{a}upload_id IS NULL"] if None in ids else []) + [
            f"{a}rowid BETWEEN {lo} AND {hi}" for lo, hi in self.row_groups.get(table, [])]

    def untouched(self, table: str) -> bool:
        return self.rows(table) == "false"

    def source(self, table: str) -> str:
        """`table`'s rows written since, as a relation (the table itself when read whole)."""
        where = self.rows(table)
        if where == "true":
            return table
        return self.staged.get(table) or f"(SELECT * FROM {table} WHERE {where})"


def _key_rows(con: Connection, table: str, key: list[str], scope: Scope) -> str:
    """PostgreSQL: `table`'s rows that share the (unit_code, course_code) of a row written since (every
    row that can share a key with one), found through the key's unique index."""
    pair = ", ".join(f'"{k}"' for k in key[:2])
    pairs = f"SELECT DISTINCT {pair} FROM {table} WHERE {scope.rows(table)}"
    return f"(SELECT * FROM {table} WHERE ({pair}) IN ({pairs})) t"


def _attendance_key_hash(alias: str = "") -> str:
    a = f"{alias}." if alias else ""
    return f"CAST(hash({a}unit_code, {a}course_code, {a}teacher_key) >> 1 AS BIGINT)"


def _hashed_key_rows(con: Connection, table: str, key: list[str], scope: Scope) -> str:
    """DuckDB: `table`'s rows that may share a key with a row written since. A duplicate needs a row
    written since; its twin is either written since too, or a verified row whose key hash was kept
    (gate_attendance_keys, by row id). Only the keys found either way (a hash may collide) are then
    looked up in the table, so its teacher_key column is read only when there is a candidate."""
    staged = scope.staged[table]
    cols = ", ".join(f'"{k}"' for k in key)
    pair = ", ".join(f'"{k}"' for k in key[:2])
    con.execute(f"""CREATE OR REPLACE TEMP TABLE gate_candidates AS
        SELECT DISTINCT {pair} FROM (
            SELECT {cols} FROM {staged} GROUP BY {cols} HAVING count(*) > 1
            UNION ALL
            SELECT {cols} FROM {staged} s WHERE {_attendance_key_hash('s')} IN (
                SELECT key_hash FROM {ATTENDANCE_KEYS} k WHERE k.table_name = '{table}'
                  AND NOT EXISTS (SELECT 1 FROM {staged} r WHERE r._rid = k.row_id)))""")
    if not con.execute("SELECT count(*) FROM gate_candidates").fetchall()[0][0]:
        return f"(SELECT {cols} FROM {table} WHERE false) t"
    return f"(SELECT {cols} FROM {table} SEMI JOIN gate_candidates USING ({pair})) t"


def duplicate_keys(con: Connection, table: str, key: Iterable[str], scope: Scope | None = None) -> Outcome:
    """No two rows of `table` (in any area) share `key`. With a scope: only keys of rows written since
    (a duplicate always involves a row written after the last pass)."""
    key = list(key)
    cols = ", ".join(f'"{k}"' for k in key)
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for schema in _areas():
        name = f"{schema}.{table}"
        if scope is not None and scope.untouched(name):
            counts[schema] = 0
            continue
        if scope is not None and name in scope.staged and table == "attendance":
            source = _hashed_key_rows(con, name, key, scope)
        elif scope is not None and scope.rows(name) != "true" and backend_of(con).server:
            source = _key_rows(con, name, key, scope)
        else:
            source = name
        grouped = f"SELECT {cols}, count(*) AS copies FROM {source} GROUP BY {cols} HAVING count(*) > 1"
        counts[schema] = con.execute(f"SELECT count(*) FROM ({grouped}) d").fetchall()[0][0]
        if counts[schema]:
            examples += [{"area": schema, **e} for e in _examples(con, f"{grouped} ORDER BY {cols}")]
    total = sum(counts.values())
    return total == 0, {"table": table, "key": list(key), "duplicated_keys": total, "by_area": counts,
                        "examples": examples[:EXAMPLES]}


def courses_unique(con: Connection, scope: Scope | None = None) -> Outcome:
    return duplicate_keys(con, "courses", COURSE_KEY, scope)


def attendance_unique(con: Connection, scope: Scope | None = None) -> Outcome:
    return duplicate_keys(con, "attendance", ATTENDANCE_KEY, scope)


def attendance_has_course(con: Connection, scope: Scope | None = None) -> Outcome:
    """Every attendance row's (unit_code, course_code) is a course of the same area. With a scope: the
    attendance rows written since, and the rows of courses removed since."""
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for schema in _areas():
        att, courses = f"{schema}.attendance", f"{schema}.courses"
        source = att
        if scope is not None:
            source = scope.source(att)
            if courses in scope.removed:  # and the rows of a course removed since
                of_removed = f"{_key_hash(con)} IN ({scope.removed[courses]})"
                if att in scope.staged:
                    source = f"(SELECT * FROM {source} UNION SELECT rowid AS _rid, * FROM {att} WHERE {of_removed})"
                elif source != att:
                    source = f"(SELECT * FROM {att} WHERE {scope.rows(att)} OR {of_removed})"
            elif scope.untouched(att):
                counts[schema] = 0
                continue
        orphans = f"""SELECT a.unit_code, a.course_code, count(*) AS rows FROM {source} a
            WHERE NOT EXISTS (SELECT 1 FROM {courses} c
                              WHERE c.unit_code = a.unit_code AND c.course_code = a.course_code)
            GROUP BY a.unit_code, a.course_code"""
        counts[schema] = con.execute(f"SELECT coalesce(sum(rows), 0) FROM ({orphans}) o").fetchall()[0][0]
        if counts[schema]:
            examples += [{"area": schema, **e} for e in _examples(con, f"{orphans} ORDER BY 1, 2")]
    total = int(sum(counts.values()))
    return total == 0, {"orphan_rows": total, "by_area": {k: int(v) for k, v in counts.items()},
                        "examples": examples[:EXAMPLES]}


def cutoff_respected(con: Connection, cutoff: date) -> Outcome:
    """No course starts on or before the archive cutoff unless an archive exception covered it
    when its upload was received (the same window the C07 rule uses: letter_date..valid_until)."""
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for schema in _areas():
        uncovered = f"""SELECT c.unit_code, c.course_code, c.start_date, c.upload_id
            FROM {schema}.courses c LEFT JOIN main.uploads u ON u.upload_id = c.upload_id
            WHERE c.start_date <= ? AND NOT EXISTS (
                SELECT 1 FROM main.archive_exceptions e
                WHERE e.unit_code = c.unit_code AND (e.course_code IS NULL OR e.course_code = c.course_code)
                  AND CAST(coalesce(timezone('Asia/Taipei', u.received_at), timezone('Asia/Taipei', c.loaded_at))
                           AS DATE) BETWEEN e.letter_date AND e.valid_until)"""
        counts[schema] = con.execute(f"SELECT count(*) FROM ({uncovered}) u", [cutoff]).fetchall()[0][0]
        if counts[schema]:
            examples += [{"area": schema, **e} for e in _examples(con, f"{uncovered} ORDER BY 1, 2", [cutoff])]
    total = sum(counts.values())
    return total == 0, {"cutoff": cutoff.isoformat(), "uncovered_courses": total, "by_area": counts,
                        "examples": examples[:EXAMPLES]}


def text_columns(con: Connection) -> dict[str, list[str]]:
    """Every VARCHAR column of every base table, as {"schema.table": [columns]}."""
    types = ", ".join(f"'{t}'" for t in text_type_names(con))
    rows = con.execute(f"""SELECT c.table_schema, c.table_name, c.column_name
        FROM information_schema.columns c JOIN information_schema.tables t
          ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE t.table_type = 'BASE TABLE' AND c.data_type IN ({types}) AND c.table_catalog = current_database()
          AND c.table_schema IN ('main', 'testing')
        ORDER BY c.table_schema, c.table_name, c.ordinal_position""").fetchall()
    out: dict[str, list[str]] = {}
    for schema, table, column in rows:
        out.setdefault(f"{schema}.{table}", []).append(column)
    return out


def raw_national_ids(con: Connection, tables: Iterable[str] | None = None,
                     exclude: Iterable[str] = (), scope: Scope | None = None) -> Outcome:
    """No text column holds something shaped like a national ID. `tables` ("schema.table") limits
    the scan (default: every table of the warehouse), `exclude` leaves some out, `scope` limits the
    written tables to their rows written since. One scan per table."""
    columns = text_columns(con)
    wanted = set(tables) if tables is not None else set(columns)
    wanted -= set(exclude)
    hits: dict[str, int] = {}
    for name in sorted(wanted & set(columns)):
        cols = columns[name]
        matches = [regex_matches(con, '"' + c + '"', NATIONAL_ID) for c in cols]
        counts = ", ".join(f"count(*) FILTER (WHERE {m})" for m in matches)
        if scope is not None and scope.untouched(name):
            continue
        row = con.execute(f"SELECT {counts} FROM {scope.source(name) if scope else name} t").fetchall()[0]
        hits.update({f"{name}.{c}": n for c, n in zip(cols, row, strict=True) if n})
    return not hits, {"pattern": NATIONAL_ID, "tables_scanned": sorted(wanted & set(columns)),
                      "rows_with_ids_by_column": hits}


# --- the blocking checks, declared once: Dagster's asset checks and the publishing gate use this list ---
_PER_TABLE = [f"{s}.{t}" for s in ddl.AREAS.values() for t in ("courses", "attendance")]
# the gate's own hashes (their only text is the name of the table they describe): not scanned for IDs
_GATE_HASHES = [f"main.{ddl.GATE_COURSE_KEYS.name}", f"main.{ddl.GATE_ATTENDANCE_KEYS.name}"]


class Run(Protocol):
    def __call__(self, con: Connection, cutoff: date, scope: Scope | None = None) -> Outcome: ...


@dataclass(frozen=True)
class BlockingCheck:
    table: str  # the warehouse asset it guards: courses, attendance or upload_log
    name: str
    description: str
    run: Run  # (connection, archive cutoff, scope: None = whole tables)

    @property
    def key(self) -> str:
        return f"{self.table}.{self.name}"


BLOCKING = [
    BlockingCheck("courses", "unique_key", "no two courses share unit_code + course_code",
                  lambda con, _, scope=None: courses_unique(con, scope)),
    BlockingCheck("courses", "cutoff_respected",
                  "no course starts on or before the archive cutoff unless an archive exception covered it",
                  lambda con, cutoff, scope=None: cutoff_respected(con, cutoff)),  # cheap: always whole
    BlockingCheck("courses", "no_national_id", "no text column of courses holds a raw national ID",
                  lambda con, _, scope=None: raw_national_ids(con, ["main.courses", "testing.courses"], (), scope)),
    BlockingCheck("attendance", "unique_key", "no two attendance rows share unit_code + course_code + teacher_key",
                  lambda con, _, scope=None: attendance_unique(con, scope)),
    BlockingCheck("attendance", "has_course", "every attendance row has its course",
                  lambda con, _, scope=None: attendance_has_course(con, scope)),
    BlockingCheck("attendance", "no_national_id", "no text column of attendance holds a raw national ID",
                  lambda con, _, scope=None: raw_national_ids(con, ["main.attendance", "testing.attendance"], (),
                                                              scope)),
    # every other table (uploads, findings, units, exceptions, stat_*, and any added later): whole
    BlockingCheck("upload_log", "no_national_id",
                  "no text column of any other warehouse table holds a raw national ID",
                  lambda con, _, scope=None: raw_national_ids(con, None, [*_PER_TABLE, *_GATE_HASHES])),
]


# the planning survey's tables (Dagster: checks of the plan_tables asset); the gate runs them too
PLAN_BLOCKING = [
    BlockingCheck("plan_tables", "school_plans_unique_key",
                  "no two school plans in force share school_year + school_code + domain",
                  lambda con, _, scope=None: duplicate_keys(con, "school_plans", ddl.SCHOOL_PLANS.key)),
    BlockingCheck("plan_tables", "teacher_plans_unique_key",
                  "no two teacher plans in force share school_year + teacher_key + domain",
                  lambda con, _, scope=None: duplicate_keys(con, "teacher_plans", ddl.TEACHER_PLANS.key)),
]


class ChecksFailed(OperatorError):
    """A publication was refused because the warehouse fails a blocking check: nothing was written.
    The CLI exits 3 (a person must fix the data first; retrying does not help)."""

    exit_code = 3

    def __init__(self, what: str, failed: list[tuple[BlockingCheck, dict]]) -> None:
        names = ", ".join(c.key for c, _ in failed)
        super().__init__(f"{what} not published: the warehouse fails blocking check(s) {names}; "
                         f"nothing was written. Fix the rows the check names (Dagster: the check's "
                         f"metadata), then publish again.")
        self.what = what
        self.failed = failed


def failing(con: Connection, cutoff: date, scope: Scope | None = None) -> list[tuple[BlockingCheck, dict]]:
    """The blocking checks that fail now, with their details (which never quote personal data).
    Without a scope every check reads whole tables."""
    out = []
    for check in (*BLOCKING, *PLAN_BLOCKING):
        passed, details = check.run(con, cutoff, scope)
        if not passed:
            out.append((check, details))
    return out


def require_passing(con: Connection, cutoff: date, what: str) -> None:
    """The publishing gate: every path that publishes (CLI, Dagster asset, job, schedule, backfill)
    calls this before it computes or writes anything. It checks what changed since it last passed
    (`changes`) and, passing, records the warehouse as verified."""
    writable = _writable(con)
    seen = _seen(con, writable)
    failed = failing(con, cutoff, seen.scope)
    if failed:
        raise ChecksFailed(what, failed)
    if writable:  # a read-only session (the county export) checks, but leaves the record to writers
        seen.record(con)


def _seen(con: Connection, writable: bool) -> Seen:
    if not writable and (backend_of(con).server or not _has_record(con)):
        return Seen(None)  # read-only: PostgreSQL keeps no temp table; a warehouse from before the record
    return changes(con)


def current_scope(con: Connection) -> Scope | None:
    """What changed since the gate last passed (None: read whole tables), for a check run outside the
    gate — Dagster's asset checks after each upload run, which then cost what the upload wrote, not
    what the warehouse holds. They record nothing: only a passing publication gate does."""
    return _seen(con, _writable(con)).scope


def _has_record(con: Connection) -> bool:
    return bool(con.execute("""SELECT count(*) FROM information_schema.tables
        WHERE table_schema = 'main' AND table_name = ?""", [VERIFIED]).fetchall()[0][0])


def _writable(con: Connection) -> bool:
    if backend_of(con).server:
        return con.execute("SHOW default_transaction_read_only").fetchall()[0][0] == "off"
    return not con.execute("SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
                           ).fetchall()[0][0]


# --- what changed since the gate last passed -----------------------------------------------------------
VERIFIED = ddl.GATE_VERIFIED.name
COURSE_KEYS = ddl.GATE_COURSE_KEYS.name
ATTENDANCE_KEYS = ddl.GATE_ATTENDANCE_KEYS.name
MAX_IDS = 2000  # more upload ids changed than this (a warehouse rewritten): whole-table reads are as cheap


def _key_hash(con: Connection, alias: str = "") -> str:
    """A 63-bit hash of a row's (unit_code, course_code)."""
    a = f"{alias}." if alias else ""
    text = f"{a}unit_code || chr(1) || {a}course_code"
    if backend_of(con).server:
        return f"hashtextextended({text}, 0)"
    return f"CAST(hash({text}) >> 1 AS BIGINT)"


def _signatures(con: Connection) -> None:
    """`gate_sig`: per written table, two kinds of signature.

    - per upload id: its rows' count, first and last write time, and the sum of a row mark that any
      insert, delete or move of a row changes (DuckDB: the row id; PostgreSQL: the row version's xmin,
      which every UPDATE renews, by hand too);
    - DuckDB, per row group (its rowid range): a hash of where its column segments are stored and of
      their statistics (min, max, string lengths, pending updates). An UPDATE in place, which keeps
      upload id, write time and row id, still leaves updates pending or rewrites the segment."""
    server = backend_of(con).server
    mark = "sum(CAST(CAST(xmin AS text) AS bigint))" if server else "sum(rowid)"
    parts = [f"""SELECT '{t}' AS table_name, 'upload' AS kind, upload_id AS part, count(*) AS n_rows,
        min(loaded_at) AS first_loaded, max(loaded_at) AS last_loaded, CAST({mark} AS BIGINT) AS mark
        FROM {t} GROUP BY upload_id""" for t in _PER_TABLE]
    if not server:
        parts += [f"""SELECT '{t}', 'row_group', CAST(start AS VARCHAR) || '-' || CAST(start + n - 1 AS VARCHAR),
                n, NULL::TIMESTAMPTZ, NULL::TIMESTAMPTZ, fp
            FROM (SELECT *, sum(n) OVER (ORDER BY row_group_id) - n AS start FROM (
                SELECT row_group_id, max(start + count) FILTER (WHERE column_id = 0) AS n,
                       CAST(hash(list(concat_ws(':', column_path, segment_id, block_id, block_offset, count,
                                                has_updates, persistent, CAST(stats AS VARCHAR))
                                      ORDER BY column_path, segment_id, start)) >> 1 AS BIGINT) AS fp
                FROM pragma_storage_info('{t}') GROUP BY row_group_id))""" for t in _PER_TABLE]
    con.execute("DROP TABLE IF EXISTS gate_sig")
    con.execute(f"CREATE TEMP TABLE gate_sig AS {' UNION ALL '.join(parts)}")


@dataclass
class Seen:
    """The warehouse as the gate found it: what to check (`scope`; None: nothing was verified before,
    every check reads whole tables); `record` then keeps the signatures read before the checks."""

    scope: Scope | None

    def record(self, con: Connection) -> None:
        """The gate passed: record the signatures read before the checks (a write since has another
        signature, so it is checked next time) and the course keys as they are now."""
        if self.scope is not None and not self.scope.removed and all(
                self.scope.untouched(t) for t in _PER_TABLE):
            return  # nothing written since the last pass: the record stands
        con.begin()
        try:
            con.execute(f"DELETE FROM {VERIFIED}")
            con.execute(f"INSERT INTO {VERIFIED} SELECT * FROM gate_sig")
            for schema in _areas():
                name = f"{schema}.courses"
                if self.scope is None or self.scope.rows(name) != "false" or name in self.scope.removed:
                    con.execute(f"DELETE FROM {COURSE_KEYS} WHERE table_name = ?", [name])
                    con.execute(f"INSERT INTO {COURSE_KEYS} SELECT ?, {_key_hash(con)} FROM {name}", [name])
                att = f"{schema}.attendance"
                if backend_of(con).server:
                    continue
                if self.scope is None or self.scope.rows(att) == "true":
                    con.execute(f"DELETE FROM {ATTENDANCE_KEYS} WHERE table_name = ?", [att])
                    con.execute(f"""INSERT INTO {ATTENDANCE_KEYS}
                        SELECT ?, rowid, {_attendance_key_hash()} FROM {att}""", [att])
                elif att in self.scope.staged:
                    staged = self.scope.staged[att]
                    con.execute(f"""DELETE FROM {ATTENDANCE_KEYS} WHERE table_name = ?
                        AND row_id IN (SELECT _rid FROM {staged})""", [att])
                    con.execute(f"""INSERT INTO {ATTENDANCE_KEYS}
                        SELECT ?, _rid, {_attendance_key_hash()} FROM {staged}""", [att])
        except BaseException:
            con.rollback()
            raise
        con.commit()
        con.execute("DROP TABLE IF EXISTS gate_sig")


def changes(con: Connection) -> Seen:
    """Compare each written table's signatures with those recorded when the gate last passed (a writer's
    connection: it keeps them in a temporary table until `Seen.record`)."""
    _signatures(con)
    if not con.execute(f"SELECT count(*) FROM {VERIFIED}").fetchall()[0][0]:
        return Seen(None)
    # EXCEPT compares NULLs as equal and hashes (PostgreSQL cannot hash IS NOT DISTINCT FROM)
    cols = "table_name, kind, part, n_rows, first_loaded, last_loaded, mark"
    rows = con.execute(f"""SELECT table_name, kind, part FROM (
            SELECT {cols} FROM gate_sig EXCEPT SELECT {cols} FROM {VERIFIED}) d ORDER BY 1, 2, 3""").fetchall()
    ids: dict[str, list[str | None]] = {t: [] for t in _PER_TABLE}
    groups: dict[str, list[tuple[int, int]]] = {t: [] for t in _PER_TABLE}
    for t, kind, part in rows:
        if kind == "upload":
            ids[t].append(part)
        else:
            lo, hi = part.split("-")
            groups[t].append((int(lo), int(hi)))
    changed: dict[str, tuple[str | None, ...] | None] = {
        t: tuple(v) if len(v) + len(groups[t]) <= MAX_IDS else None for t, v in ids.items()}
    removed: dict[str, str] = {}
    for schema in _areas():
        name = f"{schema}.courses"
        if changed[name] == () and not groups[name]:
            continue  # no row added, moved, deleted or changed in place: no key can be gone
        gone = f"""SELECT key_hash FROM {COURSE_KEYS} WHERE table_name = '{name}'
            EXCEPT SELECT {_key_hash(con)} FROM {name}"""
        if con.execute(f"SELECT count(*) FROM ({gone}) g").fetchall()[0][0]:
            removed[name] = gone
            changed[name] = None  # a key gone: perhaps changed in place, so courses are read whole
    seen = Scope(changed, removed, groups)
    if not backend_of(con).server:  # each table's rows written since, read once (filters the scan can push down)
        for t in _PER_TABLE:
            where = seen.rows(t)
            if where in ("true", "false"):
                continue
            name = "gate_new_" + t.replace(".", "_")
            con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS " + " UNION ".join(
                f"SELECT rowid AS _rid, * FROM {t} WHERE {p}" for p in seen.filters(t)))
            seen.staged[t] = name
    return Seen(seen)
