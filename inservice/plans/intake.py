"""A planning survey export from the `PLAN` inbox to the plan tables and a receipt.

The upload machinery, reused whole (inservice.ingest.Ingestor): the sender's registration (F05/F06),
the inbox (F04), the same bytes again (F08, against `uploads`, also decided again under the writer's
lock), the limits (F09), the receipt JSON + workbook staged beside the merge and kept in the
warehouse, the `uploads`/`findings` rows, one transaction. What differs is the file's shape (one
record type, `PLAN_<yyy>_<school|teacher>.<xlsx|csv>`), its rules (validations/plans.py) and its
merge: a revision replaces the year's plans of its kind as a whole (warehouse/plans.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from inservice.channel import registered_unit, sha256_file
from inservice.config import Settings
from inservice.ingest import Ingestor, Upload, ingest_paths
from inservice.loaders import UploadRefused
from inservice.loaders.limits import check_limits
from inservice.loaders.plans import read_plan
from inservice.receipts import Counts, stamp
from inservice.schemas.plans import PLAN_EXTENSIONS, PLAN_UNIT, RECORD_TYPES, PlanFileName, parse_plan_name
from inservice.validations.findings import from_dicts
from inservice.validations.plans import PlanContext, ValidatedPlans, validate_plans
from inservice.warehouse.plans import replace_revision, schools_filed
from inservice.warehouse.store import Warehouse


@dataclass
class PlanMerge:
    revision: int = 0
    replaced_rows: int = 0
    inserted_rows: int = 0
    unchanged_rows: int = 0  # repeated exactly by the revision: kept in place, not copied


class PlanIngestor(Ingestor):
    """Plan exports for one warehouse; `load=False` is the self-check (same receipt, nothing written)."""

    def validate_file(self, path: Path, received: datetime, upload: Upload) -> ValidatedPlans:
        receipt, inbox_unit = upload.receipt, upload.receipt.unit
        self.identify_sender(upload)
        receipt.plans = Counts()
        if not path.is_file():
            raise UploadRefused("F01", f"「{path.name}」不存在或不是一般檔案",
                                f"'{path.name}' is missing or not a regular file")
        ext = path.suffix.lower()
        if ext not in PLAN_EXTENSIONS:
            raise UploadRefused("F02", f"規劃匯出檔須為 .xlsx 或 .csv，不是「{path.suffix}」",
                                f"a plan export is .xlsx or .csv, not '{path.suffix}'")
        name = parse_plan_name(path.name)
        if name is None:
            raise UploadRefused("F03", f"檔名「{path.name}」不符 PLAN_<學年度三碼>_<school|teacher>.<xlsx|csv>",
                                f"file name '{path.name}' is not PLAN_<yyy>_<school|teacher>.<xlsx|csv>")
        receipt.school_year, receipt.kind = f"{name.school_year:03d}", name.kind
        unit_row = registered_unit(self.warehouse, PLAN_UNIT) if self.warehouse is not None else None
        if inbox_unit != PLAN_UNIT:
            raise UploadRefused("F04", f"規劃匯出檔須置於 {PLAN_UNIT} 收件匣，不是 {inbox_unit}",
                                f"a plan export belongs in the {PLAN_UNIT} inbox, not {inbox_unit}'s")
        content_hash = sha256_file(path)
        receipt.content_hash = content_hash
        receipt.upload_id = f"{PLAN_UNIT}-{stamp(received)}-{content_hash[:8]}"
        if self.warehouse is not None and unit_row is not None:
            earlier = self.warehouse.loaded_upload(PLAN_UNIT, content_hash, unit_row.area)
            if earlier:
                upload.earlier = earlier
                raise self.duplicate(receipt, earlier)
        check_limits(path, ext, self.settings.limits)
        rt = RECORD_TYPES[name.kind]
        raw, notes = read_plan(path, rt, self.settings.limits)  # F01, F07
        filed = None
        if self.warehouse is not None and unit_row is not None and name.kind == "teacher":
            wh, area = self.warehouse, unit_row.area
            filed = lambda: schools_filed(wh, area, name.school_year)  # noqa: E731
        ctx = PlanContext(name.school_year, name.kind, self.pseudonymiser, filed)
        validated = validate_plans(raw, ctx)
        if notes:  # the reader's (extra columns ignored), first
            validated.findings = pa.concat_tables([from_dicts(notes), validated.findings])
        return validated

    def count(self, upload: Upload) -> None:
        v = upload.validated
        if isinstance(v, ValidatedPlans):
            rows = v.rows
            accepted = int(pc.sum(rows["_ok"]).as_py() or 0) if rows.num_rows else 0
            upload.receipt.plans = Counts(rows.num_rows, accepted, rows.num_rows - accepted)

    def write(self, wh: Warehouse, row: dict, upload: Upload, now: datetime, receipt_json: str) -> PlanMerge:
        wh.write_upload(row, upload.findings, None, row["area"], now, receipt=receipt_json)
        validated = upload.validated
        if not isinstance(validated, ValidatedPlans) or row["status"] != "loaded":
            return PlanMerge()
        doc = self._plan_of(row)
        counts = {"received": validated.rows.num_rows, **_accepted(validated)}
        return PlanMerge(**replace_revision(wh, row["area"], doc.kind, doc.school_year,
                                            validated.accepted, row, counts, now))

    @staticmethod
    def _plan_of(upload: dict) -> PlanFileName:
        """The name was parsed (and found valid) before anything could be loaded."""
        name = parse_plan_name(upload["file_name"])
        assert name is not None
        return name


def _accepted(validated: ValidatedPlans) -> dict:
    n = validated.accepted.num_rows
    return {"accepted": n, "rejected": validated.rows.num_rows - n}


def ingest_plan_paths(paths: list[Path], settings: Settings, received_at: str | None = None,
                      load: bool = True) -> list[dict]:
    """`inservice ingest` / `inservice check` for plan exports: one receipt per file."""
    return ingest_paths(paths, settings, received_at, load, PlanIngestor)
