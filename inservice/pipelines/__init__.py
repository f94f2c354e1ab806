"""Dagster orchestration: resources, jobs, the inbox sensor and the one Definitions object."""
