"""The planning survey's tables: a revision replaces the plans of its school year and kind as a whole
(inside the upload's transaction), the replaced rows move to the history, and any earlier as-of can
be read back (`plans_at`). Both backends: plain SQL, staged Arrow tables (COPY on PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from inservice.warehouse import ddl
from inservice.warehouse.store import Warehouse

TABLE = {"school": "school_plans", "teacher": "teacher_plans"}
_INTEGER = ("school_year", "students", "teachers")


def data_columns(kind: str) -> list[str]:
    """The plan's own columns (what the file gives), in declared order: without upload_id/loaded_at."""
    table = ddl.SCHOOL_PLANS if kind == "school" else ddl.TEACHER_PLANS
    return [c.name for c in table.columns if c.name not in ("upload_id", "loaded_at")]


def schools_filed(wh: Warehouse, area: str, school_year: int) -> pa.Array:
    """School codes with a school plan in force for the year (PW3)."""
    schema = ddl.AREAS[area]
    return wh.table(f"SELECT DISTINCT school_code FROM {schema}.school_plans WHERE school_year = ?",
                    [school_year])["school_code"].combine_chunks().cast(pa.string())


def replace_revision(wh: Warehouse, area: str, kind: str, school_year: int, accepted: pa.Table, upload: dict,
                     counts: dict, now: datetime) -> dict:
    """Call inside the upload's transaction: the plans of (school_year, kind) in force move to the
    history, the accepted rows become the plans in force, the revision is registered. Returns
    {"revision", "replaced_rows", "inserted_rows"}."""
    con, schema = wh.con, ddl.AREAS[area]
    table = TABLE[kind]
    cols = data_columns(kind)
    names = ", ".join(f'"{c}"' for c in cols)
    replaced = int(con.execute(f"""INSERT INTO {schema}.{table}_history ({names}, upload_id, loaded_at,
            replaced_at, replaced_by)
        SELECT {names}, upload_id, loaded_at, ?, ? FROM {schema}.{table} WHERE school_year = ?""",
                               [now, upload["upload_id"], school_year]).fetchone()[0])
    con.execute(f"DELETE FROM {schema}.{table} WHERE school_year = ?", [school_year])
    con.register("stage_plans", accepted.select(cols))
    try:
        select = ", ".join(f'CAST("{c}" AS INTEGER)' if c in _INTEGER else f'"{c}"' for c in cols)
        inserted = int(con.execute(f"""INSERT INTO {schema}.{table} ({names}, upload_id, loaded_at)
            SELECT {select}, ?, ? FROM stage_plans""", [upload["upload_id"], now]).fetchone()[0])
    finally:
        con.unregister("stage_plans")
    con.execute(f"""UPDATE {schema}.plan_revisions SET replaced_at = ?
        WHERE school_year = ? AND kind = ? AND replaced_at IS NULL""", [now, school_year, kind])
    revision = con.execute(f"""SELECT coalesce(max(revision), 0) + 1 FROM {schema}.plan_revisions
        WHERE school_year = ? AND kind = ?""", [school_year, kind]).fetchone()[0]
    con.execute(f"INSERT INTO {schema}.plan_revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [school_year, kind, revision, upload["upload_id"], upload["file_name"], upload["content_hash"],
                 counts["received"], counts["accepted"], counts["rejected"], now])
    return {"revision": int(revision), "replaced_rows": replaced, "inserted_rows": inserted}


def plans_at(kind: str, as_of_param: str = "?", schema: str = "main") -> str:
    """DuckDB SQL of the plans of `kind` in force at an as-of time (`as_of_param` three times): the rows
    loaded by the end of that second (an as-of is whole seconds) from the plans in force or, if
    replaced since, from the history."""
    table = TABLE[kind]
    names = ", ".join(f'"{c}"' for c in data_columns(kind))
    end = f"({as_of_param} + INTERVAL 1 SECOND)"
    return (f"SELECT {names}, upload_id FROM {schema}.{table} WHERE loaded_at < {end} "
            f"UNION ALL SELECT {names}, upload_id FROM {schema}.{table}_history "
            f"WHERE loaded_at < {end} AND replaced_at >= {end}")
