"""Reference data shipped with the project: the MOE school list (W04, statistics)."""

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
