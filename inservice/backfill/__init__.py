"""The legacy archive's migration (`inservice backfill SOURCE`): a channel beside feeds and corrections.

`source.py` reads the legacy tables (a database through the feeds' reader, or a folder of Parquet/CSV);
`core.py` cuts them into key-ordered chunks, validates them with the one rule engine, merges them in
bulk, sends archived courses to the sealed cold archive and keeps the reconciliation; `cli.py` is the
command with its progress line.
"""
