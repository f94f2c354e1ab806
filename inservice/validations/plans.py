"""Rules of the planning survey (planning-survey.md §4), in the engine's style: field rules are the
engine's own (`field_rules`: P01 required, P02 unparseable, P03 code, P06 national ID); the rules
across rows (P07, P08, PW3) are DuckDB SQL over the same Arrow table. No per-row Python.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from inservice.loaders.base import ROW
from inservice.schemas import reference
from inservice.schemas.plans import (
    CHOICE_FIELDS,
    INTEGER_FIELDS,
    MAX_PLANNED_HOURS,
    RECORD_TYPES,
    filing_deadline,
)
from inservice.validations import national_id
from inservice.validations.engine import field_rules, national_ids, value_detail
from inservice.validations.findings import Findings, error_rows
from inservice.validations.pseudonym import Pseudonymiser

# Columns kept per kind (the warehouse's, less upload_id/loaded_at), in the declared order.
SCHOOL_COLUMNS = ("school_year", "school_code", "school_level", "students", "teachers", "domain", "planned_hours",
                  *CHOICE_FIELDS, "submitted_at")
TEACHER_COLUMNS = ("school_year", "teacher_key", "school_code", "domain", "planned_hours", *CHOICE_FIELDS,
                   "submitted_at")
COLUMNS = {"school": SCHOOL_COLUMNS, "teacher": TEACHER_COLUMNS}


@dataclass
class PlanContext:
    school_year: int  # the file name's
    kind: str  # "school" | "teacher"
    pseudonymiser: Pseudonymiser
    # PW3: the school codes that filed a school plan for the year (None: no warehouse, rule skipped)
    schools_filed: Callable[[], pa.Array] | None = None


@dataclass
class ValidatedPlans:
    rows: pa.Table  # typed (teacher plans: teacher_key and id_masked, no raw ID); `_ok` marks accepted rows
    findings: pa.Table

    @cached_property
    def accepted(self) -> pa.Table:
        return self.rows.filter(self.rows["_ok"])


def _whole(values: pa.Array) -> pa.Array:
    """Present numbers that are not whole, or negative (students, teachers, school year)."""
    return pc.fill_null(pc.or_(pc.not_equal(pc.floor(values), values), pc.less(values, 0)), False)


def _keys(pseudonymiser: Pseudonymiser, ids: pa.Array) -> pa.Array:
    """The pseudonyms of `ids`, each distinct ID hashed once (a teacher's rows repeat the ID per domain)."""
    distinct = pc.unique(ids)
    return pc.take(pseudonymiser.keys(distinct), pc.index_in(ids, distinct))


def validate_plans(raw: pa.Table, ctx: PlanContext) -> ValidatedPlans:
    rt = RECORD_TYPES[ctx.kind]
    out = Findings()
    teacher = ctx.kind == "teacher"
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashed = pool.submit(_keys, ctx.pseudonymiser, national_ids(raw["national_id"].combine_chunks())) \
            if teacher else None
        typed = field_rules(rt, raw, "file", out, id_rule="P06", key_field=None)
        rows = typed[ROW]
        codes = pa.nulls(len(rows), pa.string())
        for name in INTEGER_FIELDS:
            if name in typed:
                src = raw[name].combine_chunks()
                out.add(rt.name, "P02", _whole(typed[name]), rows, codes, rt.field(name),
                        value_detail(src, False, "zh"), value_detail(src, False, "en"))
        year = typed["school_year"]
        out.add(rt.name, "P04", pc.and_(pc.invert(_whole(year)), pc.not_equal(year, float(ctx.school_year))),
                rows, codes, rt.field("school_year"), f"檔名學年度 {ctx.school_year}",
                f"the file name's {ctx.school_year}")
        hours = typed["planned_hours"]
        src = raw["planned_hours"].combine_chunks()
        out.add(rt.name, "P05", pc.or_(pc.less_equal(hours, 0), pc.greater(hours, MAX_PLANNED_HOURS)), rows, codes,
                rt.field("planned_hours"), value_detail(src, False, "zh"), value_detail(src, False, "en"))
        school = typed["school_code"]
        unknown = pc.and_(pc.match_substring_regex(school, r"^[0-9A-Z]{6}$"),
                          pc.invert(pc.is_in(school, reference.school_codes())))
        out.add(rt.name, "PW1", unknown, rows, codes, rt.field("school_code"), value_detail(school, False, "zh"),
                value_detail(school, False, "en"))
        deadline = pa.scalar(filing_deadline(ctx.school_year, ctx.kind), pa.timestamp("s"))
        out.add(rt.name, "PW2", pc.greater(typed["submitted_at"], deadline), rows, codes, rt.field("submitted_at"),
                f"期限 {deadline.as_py():%Y-%m-%d}", f"deadline {deadline.as_py():%Y-%m-%d}")
        columns = {c: typed[c] for c in COLUMNS[ctx.kind] if c in typed}
        if teacher:
            assert hashed is not None  # submitted above for a teacher export
            valid = typed["_id_valid"]
            columns = {"school_year": typed["school_year"],
                       "teacher_key": pc.if_else(valid, hashed.result(), pa.scalar(None, pa.string())),
                       "id_masked": national_id.mask(typed["national_id"]),
                       **{c: v for c, v in columns.items() if c != "school_year"}}
    table = pa.table({ROW: rows, **columns})
    con = duckdb.connect()
    try:
        con.register("plans", table)
        key = "teacher_key" if teacher else "school_code"
        # P07: the same (school, domain) or (teacher, domain) again; the first row is kept
        dup = con.sql(f"""SELECT {ROW} FROM plans WHERE {key} IS NOT NULL AND domain IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY {key}, domain ORDER BY {ROW}) > 1""").to_arrow_table()
        out.add(rt.name, "P07", pc.is_in(rows, dup[ROW].combine_chunks()), rows, codes,
                rt.field("national_id" if teacher else "school_code"))
        if not teacher:  # P08: a school's level, students and teachers must agree on all its rows
            split = con.sql(f"""SELECT p.{ROW} FROM plans p JOIN (
                    SELECT school_code FROM plans WHERE school_code IS NOT NULL AND school_level IS NOT NULL
                      AND students IS NOT NULL AND teachers IS NOT NULL GROUP BY school_code
                    HAVING count(DISTINCT (school_level, students, teachers)) > 1) s USING (school_code)
                """).to_arrow_table()
            out.add(rt.name, "P08", pc.is_in(rows, split[ROW].combine_chunks()), rows, codes,
                    rt.field("school_code"))
        elif ctx.schools_filed is not None:  # PW3: the teacher's school filed no school plan that year
            filed = ctx.schools_filed()
            well_formed = pc.match_substring_regex(school, r"^[0-9A-Z]{6}$")
            out.add(rt.name, "PW3", pc.and_(well_formed, pc.invert(pc.is_in(school, filed))), rows, codes,
                    rt.field("school_code"), value_detail(school, False, "zh"), value_detail(school, False, "en"))
    finally:
        con.close()
    findings = out.table()
    bad = error_rows(findings, rt.name)
    return ValidatedPlans(table.append_column("_ok", pc.invert(pc.is_in(rows, bad))), findings)
