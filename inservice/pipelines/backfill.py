"""The legacy archive's migration job (run from the Launchpad with the source in its config)."""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

import dagster as dg

from inservice.assets.backfill import legacy_archive

backfill_job = dg.define_asset_job(
    "legacy_backfill", selection=dg.AssetSelection.assets(legacy_archive),
    description="舊系統資料移轉：inservice backfill SOURCE from the UI; launched again, it continues a run that "
                "stopped.")

BACKFILL_JOBS = [backfill_job]
