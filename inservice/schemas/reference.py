"""Reference data shipped with the project: the MOE school list (the school register's first state:
W04, statistics) and the teacher-training universities and subject centres (statistics of not-closed
courses)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import pyarrow as pa
import pyarrow.csv as pacsv


@cache
def schools() -> pa.Table:
    """school_code, school_name, county_code, level, ownership — all strings."""
    path = resources.files("inservice.schemas").joinpath("data/schools.csv")
    with path.open("rb") as fh:
        opts = pacsv.ConvertOptions(column_types={
            c: pa.string() for c in ("school_code", "school_name", "county_code", "level", "ownership")
        })
        return pacsv.read_csv(fh, convert_options=opts)


@cache
def school_codes() -> pa.Array:
    return schools().column("school_code").combine_chunks()


@cache
def training_institutions() -> pa.Table:
    """institution_id, name, kind (university | subject_centre), county_code — all strings."""
    path = resources.files("inservice.schemas").joinpath("data/training_institutions.csv")
    with path.open("rb") as fh:
        opts = pacsv.ConvertOptions(column_types={
            c: pa.string() for c in ("institution_id", "name", "kind", "county_code")})
        return pacsv.read_csv(fh, convert_options=opts)
