"""Rows of the analysts' reference tables (ddl.REFERENCE_TABLES) and the school register's first state,
derived from the code lists and reference data in `inservice/schemas` (never typed twice).

The reference tables are rewritten whenever what the code declares differs from what the warehouse
holds (a fingerprint in warehouse_meta), so a new release's code lists reach the analysts by
themselves. The school register is seeded once, from the shipped MOE list, when it is created; later
MOE lists come in through `inservice schools import` (registers/schools.py), with their dates.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

import pyarrow as pa

from inservice.schemas import codelists, reference, rules
from inservice.warehouse import ddl
from inservice.warehouse.backend import Connection

FINGERPRINT = "reference_tables"  # warehouse_meta: the fingerprint of the rows last written


def _codes(name: str) -> pa.Table:
    items = codelists.codelist(name)
    return pa.table({"code": [c.code for c in items], "label": [c.label for c in items],
                     "ord": pa.array(range(len(items)), pa.int32())})


@cache
def reference_rows() -> dict[str, pa.Table]:
    """Table name → its rows, in declared column order."""
    import csv
    from importlib import resources

    with resources.files("inservice.schemas").joinpath("data/counties.csv").open(encoding="utf-8") as fh:
        english = {r["county_code"]: r["county_name_en"] for r in csv.DictReader(fh)}
    counties = codelists.counties()
    order = {c: i for i, c in enumerate(codelists.COUNTY_ORDER)}
    counties = tuple(sorted(counties, key=lambda c: order.get(c.code, 999)))
    classes = codelists.CLASS_TYPES
    all_rules = list(rules.RULES.values())
    inst = reference.training_institutions()
    return {
        ddl.REF_COUNTIES.name: pa.table({
            "code": [c.code for c in counties], "label": [c.label for c in counties],
            "label_en": [english.get(c.code, "National and Preschool Education Administration") for c in counties],
            "full_name": [c.aliases[0] if c.aliases else c.label for c in counties],
            "ord": pa.array(range(len(counties)), pa.int32())}),
        ddl.REF_COUNTY_LEGACY.name: pa.table({
            "legacy_code": list(codelists.LEGACY_COUNTIES),
            "legacy_label": [v[0] for v in codelists.LEGACY_COUNTIES.values()],
            "code": [v[1] for v in codelists.LEGACY_COUNTIES.values()]}),
        ddl.REF_LEVELS.name: _codes("level"),
        ddl.REF_CLASS_TYPES.name: pa.table({
            "code": [c.code for c in classes], "label": [c.label for c in classes],
            "ord": pa.array(range(len(classes)), pa.int32()),
            "degree": [c.code in codelists.DEGREE_CLASS_TYPES for c in classes]}),
        ddl.REF_CATEGORIES.name: _codes("category"),
        ddl.REF_ORGANIZER_TYPES.name: _codes("organizer_type"),
        ddl.REF_DELIVERIES.name: _codes("delivery"),
        ddl.REF_TIME_SLOTS.name: _codes("time_slot"),
        ddl.REF_RULES.name: pa.table({
            "rule": [r.id for r in all_rules], "severity": [r.severity for r in all_rules],
            "message_zh": [r.zh for r in all_rules], "message_en": [r.en for r in all_rules]}),
        ddl.REF_TRAINING_INSTITUTIONS.name: inst.select([c.name for c in ddl.REF_TRAINING_INSTITUTIONS.columns]),
    }



@cache
def fingerprint() -> str:
    """Of this release's reference rows (json of every row)."""
    rows = reference_rows()
    text = json.dumps({k: v.to_pylist() for k, v in sorted(rows.items())}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_reference(con: Connection, rows: dict[str, pa.Table]) -> None:
    """Replace every reference table's rows (in the caller's transaction)."""
    for name, table in rows.items():
        con.execute(f"DELETE FROM main.{name}")
        con.register("ref_rows", table)
        try:
            con.execute(f"INSERT INTO main.{name} SELECT * FROM ref_rows")
        finally:
            con.unregister("ref_rows")


def seed_schools(con: Connection) -> None:
    """The school register's first state: the shipped MOE list, valid since before any record."""
    s = reference.schools()
    n = s.num_rows
    seed = s.select(["school_code", "school_name", "county_code", "level", "ownership"])
    for col in ("valid_from", "valid_to"):
        seed = seed.append_column(col, pa.nulls(n, pa.date32()))
    con.register("seed_schools", seed)
    try:
        con.execute("INSERT INTO main.school_register SELECT * FROM seed_schools")
    finally:
        con.unregister("seed_schools")
