"""Dagster orchestration, a file per domain (uploads, feeds, corrections, publish, units): jobs, sensors and
schedules over the assets of inservice.assets, and the one Definitions object (definitions.py)."""
