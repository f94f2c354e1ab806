"""Publications of spec §7, computed set-based in DuckDB from the warehouse.

monthly.py   monthly statistics (統計月報) → stat_* tables, workbook, HTML page (publish_month)
yearbook.py  yearbook extract (師資培育統計年報 — 教師進修篇) from a frozen Parquet snapshot (publish_year)
export.py    a county's units' courses and attendance, pseudonymised (export_county)
workbook.py  openpyxl writer; html.py self-contained HTML with inline SVG charts
common.py    periods, ROC labels, reference views, the report model, the publication tables
generate.py  synthetic warehouse for bench/publish.py
cli.py       `inservice stats | yearbook | export`
"""
