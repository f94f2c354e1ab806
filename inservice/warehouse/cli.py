"""`inservice warehouse ...`: which warehouse, analyst access, the Parquet lake."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inservice.config import Settings


def cmd_warehouse(args: argparse.Namespace, settings: Settings) -> int:
    from inservice.warehouse import analyst
    from inservice.warehouse.backend import WarehouseUrl

    if args.warehouse_cmd == "lake-ddl":
        if args.archive:  # a sealed cold archive of `inservice backfill`, instead of the lake
            print(analyst.archive_ddl(args.engine, args.location or str(Path(args.archive).resolve())))
        else:
            print(analyst.lake_ddl(args.engine, args.location or str(settings.home / "lake")))
        return 0
    if args.warehouse_cmd == "info":
        url = WarehouseUrl.parse(settings.warehouse_url)
        info = {"backend": url.backend, "url": url.redacted(),
                "analyst_copy": str(analyst.snapshot_path(settings)) if url.backend.embedded else None,
                "analyst_role": settings.analyst_role if url.backend.server else None}
        print(json.dumps(info, ensure_ascii=False))
        return 0
    with analyst.WriteSession(settings) as wh:
        if args.warehouse_cmd == "snapshot":
            path = analyst.publish_snapshot(wh, settings)
            print(json.dumps({"analyst_copy": str(path) if path else None}))
        elif args.warehouse_cmd == "grant-analyst":
            tables = analyst.grant_analyst_role(wh, args.role or settings.analyst_role, args.password)
            print(json.dumps({"role": args.role or settings.analyst_role, "tables": tables}, ensure_ascii=False))
        elif args.warehouse_cmd == "lake":
            dest = Path(args.dest) if args.dest else settings.home / "lake"
            rows = analyst.export_lake(wh, dest)
            print(json.dumps({"lake": str(dest), "rows": rows}))
    return 0


def arguments(command: str, wh: argparse.ArgumentParser) -> None:
    """The arguments of `inservice warehouse` (the CLI's hook, cli.COMMANDS)."""
    wsub = wh.add_subparsers(dest="warehouse_cmd", required=True)
    wsub.add_parser("info", help="which backend INSERVICE_WAREHOUSE_URL selects (password never shown)")
    wsub.add_parser("snapshot", help="DuckDB: publish the analysts' read-only copy now (also after every load)")
    grant = wsub.add_parser("grant-analyst", help="PostgreSQL: create/refresh the read-only analyst role")
    grant.add_argument("--role", help="role name (default $INSERVICE_ANALYST_ROLE or inservice_analyst)")
    grant.add_argument("--password", help="set the role's login password")
    lake = wsub.add_parser("lake", help="export the analyst tables as Hive-partitioned Parquet (year=/month=)")
    lake.add_argument("--dest", help="folder (default $INSERVICE_HOME/lake)")
    lake_ddl = wsub.add_parser("lake-ddl", help="CREATE TABLE statements over the lake for Spark SQL or Trino")
    lake_ddl.add_argument("--engine", choices=("spark", "trino"), required=True)
    lake_ddl.add_argument("--location", help="where the lake is, as the engine sees it (s3a://…, hdfs://…)")
    lake_ddl.add_argument("--archive", metavar="DIR", help="define a cold archive of `inservice backfill` "
                          "(cold_archive/<run>) as schema inservice_archive, instead of the lake")
    wh.set_defaults(func=cmd_warehouse)
