"""Warehouse invariants as plain functions: `(passed, details)` over a warehouse connection.

Dagster wraps them as blocking asset checks (inservice/assets/warehouse.py); anything else (a
script, a test, an audit) can call them on `Warehouse(...).con`. Keys are not enforced by DuckDB
constraints (see ddl.py), so these checks are what proves them. Details never quote a value that
could be personal data: they name tables, columns, keys and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from inservice.errors import OperatorError
from inservice.validations import national_id
from inservice.warehouse import ddl
from inservice.warehouse.backend import Connection, regex_matches, text_type_names

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


def duplicate_keys(con: Connection, table: str, key: Iterable[str]) -> Outcome:
    """No two rows of `table` (in any area) share `key`."""
    cols = ", ".join(f'"{k}"' for k in key)
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for schema in _areas():
        grouped = f"SELECT {cols}, count(*) AS copies FROM {schema}.{table} GROUP BY {cols} HAVING count(*) > 1"
        counts[schema] = con.execute(f"SELECT count(*) FROM ({grouped}) d").fetchall()[0][0]
        if counts[schema]:
            examples += [{"area": schema, **e} for e in _examples(con, f"{grouped} ORDER BY {cols}")]
    total = sum(counts.values())
    return total == 0, {"table": table, "key": list(key), "duplicated_keys": total, "by_area": counts,
                        "examples": examples[:EXAMPLES]}


def courses_unique(con: Connection) -> Outcome:
    return duplicate_keys(con, "courses", COURSE_KEY)


def attendance_unique(con: Connection) -> Outcome:
    return duplicate_keys(con, "attendance", ATTENDANCE_KEY)


def attendance_has_course(con: Connection) -> Outcome:
    """Every attendance row's (unit_code, course_code) is a course of the same area."""
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for schema in _areas():
        orphans = f"""SELECT a.unit_code, a.course_code, count(*) AS rows FROM {schema}.attendance a
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.courses c
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
                     exclude: Iterable[str] = ()) -> Outcome:
    """No text column holds something shaped like a national ID. `tables` ("schema.table") limits
    the scan (default: every table of the warehouse), `exclude` leaves some out. One scan per table."""
    columns = text_columns(con)
    wanted = set(tables) if tables is not None else set(columns)
    wanted -= set(exclude)
    hits: dict[str, int] = {}
    for name in sorted(wanted & set(columns)):
        cols = columns[name]
        matches = [regex_matches(con, '"' + c + '"', NATIONAL_ID) for c in cols]
        counts = ", ".join(f"count(*) FILTER (WHERE {m})" for m in matches)
        row = con.execute(f"SELECT {counts} FROM {name}").fetchall()[0]
        hits.update({f"{name}.{c}": n for c, n in zip(cols, row, strict=True) if n})
    return not hits, {"pattern": NATIONAL_ID, "tables_scanned": sorted(wanted & set(columns)),
                      "rows_with_ids_by_column": hits}


# --- the blocking checks, declared once: Dagster's asset checks and the publishing gate use this list ---
_PER_TABLE = [f"{s}.{t}" for s in ddl.AREAS.values() for t in ("courses", "attendance")]


@dataclass(frozen=True)
class BlockingCheck:
    table: str  # the warehouse asset it guards: courses, attendance or upload_log
    name: str
    description: str
    run: Callable[[Connection, date], Outcome]  # (connection, archive cutoff)

    @property
    def key(self) -> str:
        return f"{self.table}.{self.name}"


BLOCKING = [
    BlockingCheck("courses", "unique_key", "no two courses share unit_code + course_code",
                  lambda con, _: courses_unique(con)),
    BlockingCheck("courses", "cutoff_respected",
                  "no course starts on or before the archive cutoff unless an archive exception covered it",
                  cutoff_respected),
    BlockingCheck("courses", "no_national_id", "no text column of courses holds a raw national ID",
                  lambda con, _: raw_national_ids(con, ["main.courses", "testing.courses"])),
    BlockingCheck("attendance", "unique_key", "no two attendance rows share unit_code + course_code + teacher_key",
                  lambda con, _: attendance_unique(con)),
    BlockingCheck("attendance", "has_course", "every attendance row has its course",
                  lambda con, _: attendance_has_course(con)),
    BlockingCheck("attendance", "no_national_id", "no text column of attendance holds a raw national ID",
                  lambda con, _: raw_national_ids(con, ["main.attendance", "testing.attendance"])),
    # every other table (uploads, findings, units, exceptions, stat_*, and any added later)
    BlockingCheck("upload_log", "no_national_id",
                  "no text column of any other warehouse table holds a raw national ID",
                  lambda con, _: raw_national_ids(con, None, _PER_TABLE)),
]


# the planning survey's tables (Dagster: checks of the plan_tables asset); the gate runs them too
PLAN_BLOCKING = [
    BlockingCheck("plan_tables", "school_plans_unique_key",
                  "no two school plans in force share school_year + school_code + domain",
                  lambda con, _: duplicate_keys(con, "school_plans", ddl.SCHOOL_PLANS.key)),
    BlockingCheck("plan_tables", "teacher_plans_unique_key",
                  "no two teacher plans in force share school_year + teacher_key + domain",
                  lambda con, _: duplicate_keys(con, "teacher_plans", ddl.TEACHER_PLANS.key)),
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


def failing(con: Connection, cutoff: date) -> list[tuple[BlockingCheck, dict]]:
    """The blocking checks that fail now, with their details (which never quote personal data)."""
    out = []
    for check in (*BLOCKING, *PLAN_BLOCKING):
        passed, details = check.run(con, cutoff)
        if not passed:
            out.append((check, details))
    return out


def require_passing(con: Connection, cutoff: date, what: str) -> None:
    """The publishing gate: every path that publishes (CLI, Dagster asset, job, schedule, backfill)
    calls this before it computes or writes anything."""
    failed = failing(con, cutoff)
    if failed:
        raise ChecksFailed(what, failed)
