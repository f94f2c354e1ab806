"""Lights per organizer (業務帳號燈號, spec §7), the one definition every user of them shares: the
warehouse's view of counting spans, the rule C11, the monthly statistics and `inservice lights`.

A course counts toward its organizer's light (organizer = 開課單位 within its sending unit) on day D
when it is not a degree programme (class types 2, 3), started in D's calendar year, ended more than
7 days before D and is not closed on D (no closed_date, or one after D). Put as a span of days: from
end_date + 8 to the earlier of 31 December of its start year and the day before it was closed — so
"the light on day D" is a count of the spans holding D, for any D.
"""

from __future__ import annotations

from inservice.schemas.codelists import DEGREE_CLASS_TYPES
from inservice.schemas.rules import LIGHT_GRACE_DAYS, LIGHT_RED_AT

_DEGREE = ", ".join(f"'{t}'" for t in sorted(DEGREE_CLASS_TYPES))


def span_columns(alias: str = "c") -> str:
    """`counts_from`, `counts_until` of a course row (portable to DuckDB and PostgreSQL)."""
    return (f"CAST({alias}.end_date + {LIGHT_GRACE_DAYS + 1} AS DATE) AS counts_from, "
            f"CAST(least(make_date(CAST(extract(year FROM {alias}.start_date) AS INTEGER), 12, 31), "
            f"coalesce({alias}.closed_date - 1, DATE '9999-12-31')) AS DATE) AS counts_until")


def counted(alias: str = "c") -> str:
    """Course rows that can count at all: not a degree programme, not withdrawn, dates known."""
    return (f"coalesce({alias}.class_type, '') NOT IN ({_DEGREE}) AND NOT coalesce({alias}.is_deleted, false) "
            f"AND {alias}.end_date IS NOT NULL AND {alias}.start_date IS NOT NULL")


def spans_sql(source: str, alias: str = "c") -> str:
    """unit_code, organizer, course_code, class_type, end_date, closed_date and the span of each course
    of `source` that counts on some day (an empty span — closed within 7 days — is left out)."""
    return f"""SELECT * FROM (SELECT {alias}.unit_code, {alias}.organizer, {alias}.course_code,
        {alias}.class_type, {alias}.start_date, {alias}.end_date, {alias}.closed_date, {span_columns(alias)}
        FROM {source} {alias} WHERE {counted(alias)}) spans WHERE counts_from <= counts_until"""


def light_sql(count: str) -> str:
    """The light of a count of unclosed courses, as a code: green, yellow, red."""
    return f"CASE WHEN {count} = 0 THEN 'green' WHEN {count} < {LIGHT_RED_AT} THEN 'yellow' ELSE 'red' END"
