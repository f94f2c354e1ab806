"""Replay: the job that re-evaluates archived uploads under the rules in force (asset in
inservice/assets/replay.py; config units, months, apply)."""

from __future__ import annotations

import dagster as dg

from inservice.assets.replay import archive_replay

replay_job = dg.define_asset_job(
    "replay_archive", selection=dg.AssetSelection.assets(archive_replay),
    description="Re-run archived uploads through today's rules: a preview of the rows whose outcome changes "
                "(config apply: false), or load them with re-evaluation receipts (apply: true).")

REPLAY_JOBS = [replay_job]
