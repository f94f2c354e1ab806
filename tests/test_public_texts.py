"""What the public reads: no server path and no warehouse-internal word in any published workbook,
HTML page or CSV (notes sheets included)."""

from __future__ import annotations

import random
import re
from datetime import date, datetime
from pathlib import Path

from openpyxl import load_workbook

from inservice.config import TAIPEI
from inservice.ingest import ingest_paths
from inservice.plans.intake import ingest_plan_paths
from inservice.plans.publish import publish_plans
from inservice.publish.monthly import publish_month
from inservice.publish.yearbook import publish_year
from inservice.warehouse.store import Warehouse
from tests.builders import make_id, school_plan, teacher_plan, write_plan_csv
from tests.conftest import RECEIVED, drop, fixture_cases, load_expected

INTERNAL = re.compile(r"schema main|is_deleted|teacher_key|\bfindings\b|\buploads\b|stat_publications|"
                      r"stat_monthly|yearbook_snapshots|manifest\.json|inservice yearbook|stat_plan|school_plans|"
                      r"teacher_plans|plan_revisions")


def _texts(folder: Path) -> dict[str, str]:
    out = {}
    for path in folder.rglob("*"):
        if path.suffix == ".xlsx":
            wb = load_workbook(path, read_only=True)
            out[str(path)] = "\n".join(str(c) for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                                       for c in row if c is not None)
        elif path.suffix in (".html", ".csv"):
            out[str(path)] = path.read_text(encoding="utf-8-sig")
    return out


def test_published_workbooks_and_pages_show_no_server_path_nor_internal_words(settings) -> None:
    paths = [drop(settings, load_expected(c)[1]) for c in fixture_cases() if "access" not in str(c)]
    assert "loaded" in {r["status"] for r in ingest_paths(paths, settings, RECEIVED)}
    publish_month(settings, "2017-05", as_of=datetime(2017, 6, 8, 9, 0, tzinfo=TAIPEI))
    publish_year(settings, 2017, taken_at=datetime(2018, 1, 20, 9, 0, tzinfo=TAIPEI))
    with Warehouse(settings) as wh:  # and the planning survey's four publications
        wh.add_unit("PLAN", "plans", "file", "production", date(2016, 1, 1))
    rng = random.Random(5)
    plans = [write_plan_csv(settings.inbox / "PLAN" / "PLAN_105_school.csv",
                            [school_plan("423605", d, school_year="105") for d in "AB"]),
             write_plan_csv(settings.inbox / "PLAN" / "PLAN_105_teacher.csv",
                            [teacher_plan(make_id(rng), "423605", "A", school_year="105") for _ in range(5)])]
    assert [r["status"] for r in ingest_plan_paths(plans, settings, RECEIVED)] == ["loaded", "loaded"]
    publish_plans(settings, "105")
    texts = _texts(settings.home / "publish")
    kinds = {Path(p).suffix for p in texts}
    assert kinds == {".xlsx", ".html", ".csv"} and len(texts) >= 4
    notes = [t for t in texts.values() if "個資" in t]
    assert len(notes) >= 10  # the monthly workbook's, the yearbook's and the plans' notes at least
    for path, text in texts.items():
        assert str(settings.home) not in text and "/tmp" not in text, path
        assert not INTERNAL.search(text), (path, INTERNAL.search(text))
