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

from inservice.config import TAIPEI, Settings
from inservice.ingest import Ingestor, public_receipt, registered_unit, sha256_file
from inservice.loaders import UploadRefused
from inservice.loaders.limits import check_limits
from inservice.loaders.plans import read_plan
from inservice.schemas.plans import PLAN_EXTENSIONS, PLAN_UNIT, RECORD_TYPES, PlanFileName, parse_plan_name
from inservice.validations.findings import from_dicts
from inservice.validations.plans import PlanContext, ValidatedPlans, validate_plans
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.plans import replace_revision, schools_filed
from inservice.warehouse.store import Warehouse

EMPTY = {"received": 0, "accepted": 0, "rejected": 0}


@dataclass
class PlanMerge:
    revision: int = 0
    replaced_rows: int = 0
    inserted_rows: int = 0


class PlanIngestor(Ingestor):
    """Plan exports for one warehouse; `load=False` is the self-check (same receipt, nothing written)."""

    def process(self, path: Path, received: datetime, inbox_unit: str, receipt: dict, found: dict,
                rerun: bool = False) -> ValidatedPlans:
        self.identify_sender(inbox_unit, receipt, found)
        receipt.update({"school_year": None, "kind": None, "plans": dict(EMPTY)})
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
        receipt["school_year"], receipt["kind"] = f"{name.school_year:03d}", name.kind
        unit_row = registered_unit(self.warehouse, PLAN_UNIT) if self.warehouse is not None else None
        if inbox_unit != PLAN_UNIT:
            raise UploadRefused("F04", f"規劃匯出檔須置於 {PLAN_UNIT} 收件匣，不是 {inbox_unit}",
                                f"a plan export belongs in the {PLAN_UNIT} inbox, not {inbox_unit}'s")
        content_hash = sha256_file(path)
        receipt["content_hash"] = content_hash
        receipt["upload_id"] = f"{PLAN_UNIT}-{received.astimezone(TAIPEI):%Y%m%dT%H%M%S}-{content_hash[:8]}"
        if self.warehouse is not None and unit_row is not None:
            earlier = self.warehouse.loaded_upload(PLAN_UNIT, content_hash, unit_row.area)
            if earlier:
                found["earlier"] = earlier
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

    def set_counts(self, receipt: dict, findings: pa.Table, validated: ValidatedPlans | None) -> None:
        receipt["findings"] = findings.to_pylist()
        receipt.setdefault("plans", dict(EMPTY))
        if validated is None:
            return
        rows = validated.rows
        accepted = int(pc.sum(rows["_ok"]).as_py() or 0) if rows.num_rows else 0
        if receipt["status"] == "refused":  # refused whole: nothing accepted
            accepted = 0
        receipt["plans"] = {"received": rows.num_rows, "accepted": accepted, "rejected": rows.num_rows - accepted}

    def write(self, upload: dict, findings: pa.Table, validated: ValidatedPlans | None, receipt: str) -> PlanMerge:
        now = datetime.now(TAIPEI)
        self.warehouse.write_upload(upload, findings, None, upload["area"], now, receipt=receipt)
        if validated is None or upload["status"] != "loaded":
            return PlanMerge()
        doc = self._plan_of(upload)
        counts = {"received": validated.rows.num_rows, **_accepted(validated)}
        return PlanMerge(**replace_revision(self.warehouse, upload["area"], doc.kind, doc.school_year,
                                            validated.accepted, upload, counts, now))

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
    if not load and not Warehouse.exists(settings):
        ingestor = PlanIngestor(settings, None, load=False)
        return [public_receipt(ingestor.ingest(p, received_at)) for p in paths]
    # a load's session ends with the analysts' refresh (the step after its commits); a check writes nothing
    with WriteSession(settings) if load else Warehouse(settings, read_only=True) as wh:
        ingestor = PlanIngestor(settings, wh, load=load)
        return [public_receipt(ingestor.ingest(p, received_at)) for p in paths]
