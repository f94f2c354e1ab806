"""Jobs: one upload through the core, then the warehouse tables and their blocking checks."""

from __future__ import annotations

import dagster as dg

from inservice.assets.ingest import partner_upload, unsorted_upload, upload_overview
from inservice.assets.warehouse import WAREHOUSE_ASSETS

# Checks of the selected warehouse assets come with them, so every upload run ends checked.
ingest_upload_job = dg.define_asset_job(
    "ingest_upload",
    selection=dg.AssetSelection.assets(partner_upload, *WAREHOUSE_ASSETS, upload_overview),
    description="One upload (partition unit × month): core ingest, receipt, archive/quarantine, "
                "then warehouse row counts and checks, and the month's overview. Started by inbox_sensor, or "
                "by hand to re-run.",
)

ingest_unsorted_job = dg.define_asset_job(
    "ingest_unsorted_upload",
    selection=dg.AssetSelection.assets(unsorted_upload, *WAREHOUSE_ASSETS, upload_overview),
    description="An upload whose file name fits no unit × month partition, processed the same way.",
)

JOBS = [ingest_upload_job, ingest_unsorted_job]
