"""A course and its attendance as they stood on a date, rebuilt from `history`.

Every update, withdrawal and correction of a loaded row leaves its before- and after-image in
`history` (inserts leave none: a row's `first_loaded_at` says when it arrived). So the state of
one row at the end of day D (Asia/Taipei) is:
  - the before-image of its earliest change after D, if it changed after D (a withdrawn row comes
    back this way; a correction's `add` has no before-image: the row did not exist yet);
  - else the current row;
and in both cases only if that image was first loaded by D (a row withdrawn and later sent
again is a new row, with a new first_loaded_at).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

from inservice.config import TAIPEI
from inservice.warehouse import ddl
from inservice.warehouse.backend import Connection, insertion_order, json_text

# $1 record, $2 unit, $3 course, $4 the first instant after D. Insertion order breaks ties in time.
STATE_AT_SQL = """
WITH changes AS (
    SELECT coalesce(teacher_key, '') AS k, before_json,
           row_number() OVER (PARTITION BY coalesce(teacher_key, '') ORDER BY changed_at, {order}) AS n
    FROM {schema}.history
    WHERE record = $1 AND unit_code = $2 AND course_code = $3 AND changed_at >= $4),
earliest AS (SELECT k, before_json FROM changes WHERE n = 1),
present AS (SELECT coalesce({teacher}, '') AS k, CAST(to_json(t) AS VARCHAR) AS j
            FROM {schema}.{table} t WHERE unit_code = $2 AND course_code = $3),
state AS (SELECT CASE WHEN e.k IS NOT NULL THEN e.before_json ELSE p.j END AS j
          FROM earliest e FULL JOIN present p ON e.k = p.k)
SELECT j FROM state
WHERE j IS NOT NULL
  AND coalesce(CAST({first_loaded} AS TIMESTAMPTZ) < $4, true)
ORDER BY j
"""

NOW = None  # `at=None`: the current state


def end_of_day(at: date | None) -> datetime:
    """The first instant after day `at` in Asia/Taipei (far future for the current state)."""
    if at is None:
        return datetime(9999, 1, 1, tzinfo=TAIPEI)
    return datetime.combine(at + timedelta(days=1), time(0), TAIPEI)


def state_at(con: Connection, record: str, unit: str, course: str, at: date | None,
             area: str = "production") -> list[dict]:
    """The rows of one course (record "course": at most one; "attendance": its list) at the end of `at`."""
    schema = ddl.AREAS[area]
    table, teacher = ("courses", "NULL") if record == "course" else ("attendance", "t.teacher_key")
    sql = STATE_AT_SQL.format(schema=schema, table=table, teacher=teacher, order=insertion_order(con),
                              first_loaded=json_text(con, "j", "first_loaded_at"))
    rows = con.execute(sql, [record, unit, course, end_of_day(at)]).fetchall()
    return [json.loads(j) for (j,) in rows]


def changes(con: Connection, unit: str, course: str, area: str = "production") -> list[dict]:
    """The change log of a course and its attendance: what changed, when, from where, under which letter."""
    schema = ddl.AREAS[area]
    order = insertion_order(con)
    cur = con.execute(f"""SELECT record, teacher_key, action, before_json, after_json, source, source_id, letter_no,
        changed_at FROM {schema}.history WHERE unit_code = ? AND course_code = ? ORDER BY changed_at, {order}""",
                      [unit, course])
    out = []
    for record, teacher, action, before, after, source, source_id, letter, changed_at in cur.fetchall():
        b, a = json.loads(before) if before else {}, json.loads(after) if after else {}
        skip = {"upload_id", "loaded_at", "first_loaded_at"}
        fields = sorted(k for k in set(b) | set(a) if k not in skip and b.get(k) != a.get(k)) if b and a else []
        out.append({
            "changed_at": changed_at.astimezone(TAIPEI).isoformat(), "record": record,
            "teacher_key": teacher, "action": action, "fields": fields,
            "before": {k: b.get(k) for k in fields}, "after": {k: a.get(k) for k in fields},
            "source": source, "source_id": source_id, "letter_no": letter,
        })
    return out


def units_with_course(con: Connection, course: str, area: str = "production") -> list[str]:
    schema = ddl.AREAS[area]
    rows = con.execute(f"""SELECT unit_code FROM {schema}.courses WHERE course_code = $1
        UNION SELECT unit_code FROM {schema}.history WHERE course_code = $1 ORDER BY 1""", [course]).fetchall()
    return [r[0] for r in rows]


def course_history(con: Connection, unit: str, course: str, at: date | None = None,
                   area: str = "production") -> dict:
    """The course, its attendance (pseudonymised) and its change log, as of the end of `at`."""
    courses = state_at(con, "course", unit, course, at, area)
    attendance = state_at(con, "attendance", unit, course, at, area)
    keep = ("teacher_key", "school_code", "hours_granted", "completed", "first_loaded_at", "upload_id")
    log = changes(con, unit, course, area)
    if at is not None:
        limit = end_of_day(at)
        log = [c for c in log if datetime.fromisoformat(c["changed_at"]) < limit]
    return {
        "unit_code": unit, "course_code": course, "area": area, "at": at.isoformat() if at else None,
        "course": courses[0] if courses else None,
        "attendance": {"count": len(attendance), "rows": [{k: r.get(k) for k in keep} for r in attendance]},
        "changes": log,
    }
