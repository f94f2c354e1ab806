"""The planning survey's tables: a revision replaces the plans of its school year and kind as a whole
(inside the upload's transaction), the rows it does not repeat move to the history, and any earlier
as-of can be read back (`plans_at`). Both backends: plain SQL, staged Arrow tables (COPY on PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from inservice.warehouse import ddl
from inservice.warehouse.store import Warehouse

TABLE = {"school": "school_plans", "teacher": "teacher_plans"}


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
    """Call inside the upload's transaction: the accepted rows become the plans in force of
    (school_year, kind), the revision is registered. Only what changed moves: a row in force that the
    new export repeats exactly stays (with the upload and load time that first brought it), the others
    move to the history (replaced now), and the new export's other rows are inserted. So each version
    of a row is stored once and any earlier as-of still reads exactly the rows then in force.
    Returns {"revision", "replaced_rows" (the earlier revision's rows, all replaced), "inserted_rows"
    (this revision's), "unchanged_rows" (repeated exactly: kept in place, not copied)}."""
    con, schema = wh.con, ddl.AREAS[area]
    table = TABLE[kind]
    spec = ddl.SCHOOL_PLANS if kind == "school" else ddl.TEACHER_PLANS
    types = {c.name: c.type for c in spec.columns}
    cols = data_columns(kind)
    names = ", ".join(f'"{c}"' for c in cols)
    # the key (never null in a plan) joins by hash on either backend; the other columns null-safely
    same = " AND ".join(f's."{c}" = t."{c}"' if c in spec.key else f's."{c}" IS NOT DISTINCT FROM t."{c}"'
                        for c in cols)
    staged = "(SELECT " + ", ".join(f'CAST("{c}" AS {types[c]}) AS "{c}"' for c in cols) + " FROM stage_plans)"
    key = ", ".join(f't."{k}"' for k in spec.key)
    on_key = " AND ".join(f'g."{k}" = t."{k}"' for k in spec.key)
    before = int(con.execute(f"SELECT count(*) FROM {schema}.{table} WHERE school_year = ?",
                             [school_year]).fetchall()[0][0])
    con.register("stage_plans", accepted.select(cols))
    try:
        # the keys of the rows in force that the export does not repeat exactly, found once: usually
        # few, so moving them to the history and deleting them are small joins
        gone = wh.table(f"""SELECT {key} FROM {schema}.{table} t
            WHERE t.school_year = ? AND NOT EXISTS (SELECT 1 FROM {staged} s WHERE {same})""", [school_year])
        if gone.num_rows:
            con.register("plan_gone", gone)
            try:
                con.execute(f"""INSERT INTO {schema}.{table}_history ({names}, upload_id, loaded_at, replaced_at,
                        replaced_by)
                    SELECT {", ".join(f't."{c}"' for c in cols)}, t.upload_id, t.loaded_at, ?, ?
                    FROM {schema}.{table} t JOIN plan_gone g ON {on_key}""", [now, upload["upload_id"]]).fetchall()
                con.execute(f"""DELETE FROM {schema}.{table} t
                    WHERE EXISTS (SELECT 1 FROM plan_gone g WHERE {on_key})""").fetchall()
            finally:
                con.unregister("plan_gone")
        inserted = int(con.execute(f"""INSERT INTO {schema}.{table} ({names}, upload_id, loaded_at)
            SELECT {names}, ?, ? FROM {staged} s
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.{table} t WHERE t.school_year = ? AND {same})""",
                                   [upload["upload_id"], now, school_year]).fetchall()[0][0])
    finally:
        con.unregister("stage_plans")
    con.execute(f"""UPDATE {schema}.plan_revisions SET replaced_at = ?
        WHERE school_year = ? AND kind = ? AND replaced_at IS NULL""", [now, school_year, kind])
    revision = con.execute(f"""SELECT coalesce(max(revision), 0) + 1 FROM {schema}.plan_revisions
        WHERE school_year = ? AND kind = ?""", [school_year, kind]).fetchall()[0][0]
    con.execute(f"INSERT INTO {schema}.plan_revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [school_year, kind, revision, upload["upload_id"], upload["file_name"], upload["content_hash"],
                 counts["received"], counts["accepted"], counts["rejected"], now])
    return {"revision": int(revision), "replaced_rows": before, "inserted_rows": accepted.num_rows,
            "unchanged_rows": accepted.num_rows - inserted}


def plans_at(kind: str, as_of_param: str = "?", schema: str = "main") -> str:
    """DuckDB SQL of the plans of `kind` in force at an as-of instant (`as_of_param` three times): the
    rows loaded by then, from the plans in force or, if replaced since, from the history. An as-of and
    the load times are microseconds, so a revision loaded after a publication never belongs to it."""
    table = TABLE[kind]
    names = ", ".join(f'"{c}"' for c in data_columns(kind))
    at = as_of_param
    return (f"SELECT {names}, upload_id FROM {schema}.{table} WHERE loaded_at <= {at} "
            f"UNION ALL SELECT {names}, upload_id FROM {schema}.{table}_history "
            f"WHERE loaded_at <= {at} AND replaced_at > {at}")
