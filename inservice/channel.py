"""The channel kernel: what file uploads (ingest, inbox), feeds and corrections do alike, written once —
the receipt time, the content hash, the file name's F03, the sender's registration (F05/F06) and
the F04 check of the rows' unit codes. Receipts themselves (counts, paths, files) are in `receipts`.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from inservice.config import TAIPEI, Settings
from inservice.loaders.base import RawUpload, UploadRefused
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.schemas.filenames import FILE_NAME_FORM, FileName, parse_file_name
from inservice.schemas.text import fold
from inservice.validations.engine import Context
from inservice.validations.pseudonym import Pseudonymiser
from inservice.warehouse.store import Unit, Warehouse


def rule_context(settings: Settings, wh: Warehouse | None, unit: str, channel: str, received_on: date,
                 pseudonymiser: Pseudonymiser, exceptions_on: date | None = None, **extra: Any) -> Context:
    """The rule engine's context as every channel gives it (uploads, feeds, corrections, backfill): the
    archive cutoff and C11's start from the settings; the unit's archive exceptions (in force on
    `exceptions_on`, default the day received) and the tag register from the warehouse. Without a
    warehouse (a self-check): no exceptions, the spec's seed of tags."""
    ctx = Context(unit=unit, channel=channel, received_on=received_on, pseudonymiser=pseudonymiser,
                  cutoff=settings.archive_cutoff, c11_from=settings.c11_from, **extra)
    if wh is not None:
        ctx.tags = wh.tag_register()
        ctx.exceptions = wh.exceptions_for(unit, exceptions_on or received_on)
    return ctx


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_received_at(value: datetime | str | None) -> datetime:
    """ISO-8601; a value without offset is Asia/Taipei wall time; None is now."""
    if value is None:
        return datetime.now(TAIPEI)
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt if dt.tzinfo else dt.replace(tzinfo=TAIPEI)


def file_name(name: str) -> FileName:
    """The unit and data month of a file upload's name, or F03."""
    parsed = parse_file_name(name)
    if parsed is None:
        raise UploadRefused("F03", f"檔名「{name}」不符 <單位代碼>_<YYYYMM>[_<n>].<副檔名>",
                            f"file name '{name}' is not {FILE_NAME_FORM}")
    return parsed


def unit_refusal(code: str, unit: Unit | None) -> UploadRefused | None:
    """F05 unknown unit, F06 sealed unit: the register's answer for every channel."""
    if unit is None:
        return UploadRefused("F05", f"單位代碼 {code} 未登錄", f"unit {code} is not registered")
    if unit.state == "sealed":
        return UploadRefused("F06", f"單位 {code} 已封存，須重新申請", f"unit {code} is sealed; it must re-apply")
    return None


def registered_unit(warehouse: Warehouse, code: str) -> Unit:
    """The sender's registration, or its refusal (F05, F06)."""
    unit = warehouse.unit(code)
    refusal = unit_refusal(code, unit)
    if refusal is not None:
        raise refusal
    assert unit is not None  # unit_refusal refuses a missing one
    return unit


def unit_rows_refusal(raw: RawUpload, unit: str) -> UploadRefused | None:
    """F04 (rows): the rows whose unit_code is not the sending unit's, as the refusal's findings.
    Missing codes are C01/A01 instead."""
    offending: list[dict] = []
    for rt, table in ((COURSE, raw.courses), (ATTENDANCE, raw.attendance)):
        codes = fold(table["unit_code"].combine_chunks())
        bad = pc.fill_null(pc.not_equal(codes, unit), False)
        rows = pc.filter(table["_row"].combine_chunks(), bad).to_pylist()
        values = pc.filter(codes, bad).to_pylist()
        course_codes = pc.filter(table["course_code"].combine_chunks(), bad).to_pylist()
        offending += [{
            "record": rt.name, "row": r, "field": "unit_code", "rule": "F04", "severity": "error",
            "course_code": c, "message_zh": f"傳報單位不符：單位代碼「{v}」不是傳報單位 {unit}",
            "message_en": f"the data is not the sending unit's: unit_code '{v}' is not {unit}",
        } for r, v, c in zip(rows, values, course_codes, strict=True)]
    if not offending:
        return None
    return UploadRefused("F04", f"{len(offending)} 列的單位代碼不是 {unit}",
                         f"{len(offending)} row(s) carry a unit_code other than {unit}", findings=offending)
