"""Warehouse group: the tables the core merges into, with the checks that guard publishing.

Materializing one of these reads the table (row counts); it writes nothing. The checks are the
plain functions of inservice.warehouse.checks, all blocking: a failure stops every downstream
(publish) asset in the same run. The checked tables are already written when a check fails
(the core merges straight into them), so a failure means: stop publishing and fix the data.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg

from inservice.assets.shared import OWNERS, RETRY, WAREHOUSE_POOL, InserviceResource, table_schema
from inservice.assets.uploads import partner_upload, unsorted_upload
from inservice.warehouse import checks, ddl


def _count(inservice: InserviceResource, sql: str) -> list[tuple]:
    with inservice.warehouse(read_only=True) as wh:
        return wh.con.execute(sql).fetchall()


def _table_asset(name: str, table: ddl.Table, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name, group_name="warehouse", deps=[partner_upload, unsorted_upload], pool=WAREHOUSE_POOL,
        retry_policy=RETRY, owners=OWNERS, kinds={"duckdb", "table"}, description=description,
        metadata={"dagster/column_schema": table_schema(table), "dagster/table_name": f"main.{table.name}"},
    )
    def _asset(inservice: InserviceResource) -> dg.MaterializeResult:
        [(prod, test, units)] = _count(inservice, f"""SELECT
            (SELECT count(*) FROM main.{table.name}), (SELECT count(*) FROM testing.{table.name}),
            (SELECT count(DISTINCT unit_code) FROM main.{table.name})""")
        return dg.MaterializeResult(metadata={"dagster/row_count": prod, "rows_testing_area": test,
                                              "units": units})

    return _asset


courses = _table_asset("courses", ddl.COURSES,
                       "Accepted courses (研習課程), one row per unit_code + course_code; testing units' rows "
                       "are in testing.courses. Source of the monthly statistics.")
attendance = _table_asset("attendance", ddl.ATTENDANCE,
                          "Accepted attendance (研習名單), one row per unit_code + course_code + teacher_key "
                          "(a keyed pseudonym: no national ID or name is stored).")


@dg.asset(
    group_name="warehouse", deps=[partner_upload, unsorted_upload], pool=WAREHOUSE_POOL, retry_policy=RETRY,
    owners=OWNERS, kinds={"duckdb", "table"},
    description="The upload log (uploads: one row per processed file, with its receipt paths) and its "
                "findings (one row per refused or flagged row, in Chinese and English).",
    metadata={"dagster/column_schema": table_schema(ddl.UPLOADS), "dagster/table_name": "main.uploads"},
)
def upload_log(inservice: InserviceResource) -> dg.MaterializeResult:
    rows = _count(inservice, "SELECT status, count(*) FROM main.uploads GROUP BY 1 ORDER BY 1")
    [(findings,)] = _count(inservice, "SELECT count(*) FROM main.findings")
    by_status = {s: n for s, n in rows}
    return dg.MaterializeResult(metadata={"dagster/row_count": sum(by_status.values()),
                                          **{f"uploads_{s}": n for s, n in by_status.items()},
                                          "findings": findings})


# --- checks ---------------------------------------------------------------------------------------
def _result(outcome: tuple[bool, dict], what: str) -> dg.AssetCheckResult:
    passed, details = outcome
    meta = {k: (v if isinstance(v, int | float | str) else dg.MetadataValue.json(v)) for k, v in details.items()}
    return dg.AssetCheckResult(passed=passed, metadata=meta, description=what if passed else f"FAILED: {what}")


def blocking_check(asset: dg.AssetsDefinition, check: checks.BlockingCheck) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=check.name, description=check.description, blocking=True,
                    pool=WAREHOUSE_POOL, retry_policy=RETRY)
    def _asset_check(inservice: InserviceResource) -> dg.AssetCheckResult:
        cutoff = inservice.settings().archive_cutoff  # INSERVICE_ARCHIVE_CUTOFF, as the core applies it
        with inservice.warehouse(read_only=True) as wh:
            # only what changed since the publishing gate last passed (whole tables before it ever did)
            return _result(check.run(wh.con, cutoff, checks.current_scope(wh.con)), check.description)

    return _asset_check


WAREHOUSE_ASSETS = [courses, attendance, upload_log]
# the same list the publishing gate runs (inservice.warehouse.checks.BLOCKING): declared once
WAREHOUSE_CHECKS = [blocking_check({a.key.path[-1]: a for a in WAREHOUSE_ASSETS}[c.table], c) for c in checks.BLOCKING]
