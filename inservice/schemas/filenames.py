"""File uploads' names and deadline (spec §1.1): `<unit_code>_<YYYYMM>[_<n>].<ext>`, on time until
23:59:59 Asia/Taipei on the 5th of the month after the data month."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time

from inservice.schemas.fields import UNIT_CODE
from inservice.schemas.timezone import TAIPEI

FILE_EXTENSIONS = (".xlsx", ".xls", ".xml", ".mdb", ".accdb")  # compared case-insensitively
# [0-9], not \d: "２０１７" or "٢٠１７" are digits to Python's \d but no data month
FILE_NAME = re.compile(
    rf"^(?P<unit>{UNIT_CODE})_(?P<year>[0-9]{{4}})(?P<month>[0-9]{{2}})(?:_(?P<n>[1-9][0-9]*))?\.(?P<ext>[A-Za-z]+)$")
YEARS = range(1912, 9999)  # ROC year 1 on; the last month's deadline must be a date
DEADLINE_DAY = 5  # of the month after the data month
FILE_NAME_FORM = "<unit_code>_<YYYYMM>[_<n>].<ext>"


@dataclass(frozen=True)
class FileName:
    unit: str
    month: str  # "YYYY-MM"


def parse_file_name(name: str) -> FileName | None:
    """The unit and data month a file name gives, or None when it is not of the spec's form."""
    m = FILE_NAME.match(name)
    if not m or f".{m['ext'].lower()}" not in FILE_EXTENSIONS or not 1 <= int(m["month"]) <= 12 \
            or int(m["year"]) not in YEARS:
        return None
    return FileName(m["unit"], f"{m['year']}-{m['month']}")


def deadline(month: str) -> datetime:
    """A data month ("YYYY-MM") is on time until 23:59:59 Asia/Taipei on the 5th of the next month."""
    y, m = (int(x) for x in month.split("-"))
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return datetime.combine(date(ny, nm, DEADLINE_DAY), time(23, 59, 59), TAIPEI)
