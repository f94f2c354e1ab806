"""Dagster assets and their checks, a file per domain (uploads, warehouse, feeds, corrections, publish),
over the plain-Python core; shared.py holds the resource and the policies every asset uses."""
