"""Dagster assets over the plain-Python core: ingest (uploads), warehouse (tables + checks), publish."""
