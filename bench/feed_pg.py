"""A feed of N attendance rows (default 5,000,000) from PostgreSQL into a fresh DuckDB warehouse,
against a raw `COPY (SELECT ...) TO STDOUT` of the same rows in the same run.

Rows are generated inside PostgreSQL (generate_series): N/100 courses, 100 attendees each, valid
national IDs with ~1% bad check digits. Then, in this process:
  raw  — psycopg2 copy_expert of the feed's own two SELECTs (same columns, same order) into a
         null sink: the floor for moving these rows out of the server;
  feed — FeedRunner.run: streamed read (server-side cursor), canonical tables, every rule, merge
         and watermark per batch, receipts.
Prints rows/s, the ratio feed/raw, and peak memory (getrusage maxrss of this process).
Usage: python bench/feed_pg.py [--rows N] [--batch-rows B] [--url postgresql+psycopg2://...] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from inservice.config import Settings
from inservice.feeds import FeedRunner
from inservice.feeds import register as feed_register
from inservice.feeds.source import PartnerSource, pull_query
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.store import Warehouse

COURSES = """CREATE TABLE inservice_courses AS SELECT 'T001'::varchar(12) AS unit_code,
    'C' || lpad(i::text, 7, '0') AS course_code, '研習課程 ' || i AS title, '國立臺灣師範大學'::text AS organizer,
    '3'::varchar(4) AS organizer_type, '63000'::varchar(8) AS county_code,
    date '2017-05-01' + (i % 25) AS start_date, date '2017-05-01' + (i % 25) AS end_date,
    6::numeric(5,1) AS hours, '1'::varchar(2) AS class_type, 'A'::varchar(2) AS category,
    '3'::varchar(2) AS delivery, '1'::varchar(2) AS time_slot, 'E;J'::text AS audience, 'T2'::text AS tags,
    date '2017-05-03' + (i % 25) AS closed_date,
    timestamptz '2017-06-01 00:00+08' + i * interval '1 millisecond' AS modified_at, false AS is_deleted
    FROM generate_series(0, {courses} - 1) AS i"""
# national ID: a letter A–H (values 10–17), '1', seven digits of i, the §4 check digit (1% off by one)
ATTENDANCE = """CREATE TABLE inservice_attendance AS
    WITH g AS (SELECT i, chr(65 + i % 8) AS letter, 10 + i % 8 AS v, lpad((i / 8)::text, 7, '0') AS d
               FROM generate_series(0, {rows} - 1) AS i),
    c AS (SELECT *, (v / 10 + (v % 10) * 9 + 8
                     + substr(d,1,1)::int * 7 + substr(d,2,1)::int * 6 + substr(d,3,1)::int * 5
                     + substr(d,4,1)::int * 4 + substr(d,5,1)::int * 3 + substr(d,6,1)::int * 2
                     + substr(d,7,1)::int) % 10 AS r FROM g)
    SELECT 'T001'::varchar(12) AS unit_code, 'C' || lpad((i / 100)::text, 7, '0') AS course_code,
        letter || '1' || d || ((10 - r + CASE WHEN i % 100 = 99 THEN 1 ELSE 0 END) % 10)::text AS national_id,
        '王小明'::text AS name, '423605'::varchar(8) AS school_code, 6::numeric(5,1) AS hours_granted,
        'Y'::varchar(8) AS completed, timestamp '2017-06-02 00:00' + i * interval '1 millisecond' AS modified_at,
        false AS is_deleted
    FROM c"""


class NullSink:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes | str) -> int:
        self.bytes += len(data)
        return len(data)


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000_000, help="attendance rows (courses = rows / 100)")
    p.add_argument("--batch-rows", type=int, default=None, help="attendance rows per batch (default: the core's)")
    p.add_argument("--url", default=os.environ.get("INSERVICE_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database and the warehouse")
    args = p.parse_args()

    admin_url = sa.make_url(args.url).set(database="postgres")
    name = f"feedbench_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin_url.set(database=name)
    work = Path(tempfile.mkdtemp(prefix="feedbench_"))
    try:
        t0 = time.perf_counter()
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.begin() as c:
            raw = c.connection.dbapi_connection.cursor()
            raw.execute(COURSES.replace("{courses}", str(max(1, args.rows // 100))))
            raw.execute(ATTENDANCE.replace("{rows}", str(args.rows)))
            raw.execute("CREATE INDEX ON inservice_courses (modified_at)")
            raw.execute("CREATE INDEX ON inservice_attendance (modified_at)")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
        n_courses = max(1, args.rows // 100)
        print(f"generated {args.rows:,} attendance + {n_courses:,} course rows in PostgreSQL "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)

        settings = Settings(home=work / "home")
        os.environ["FEED_BENCH_URL"] = url.render_as_string(hide_password=False)
        spec = feed_register.FeedSpec("T001", "FEED_BENCH_URL")
        with Warehouse(settings) as wh:
            wh.add_unit("T001", "bench unit", "db", "production", date(2016, 1, 1))
            feed_register.add_feed(wh, spec)

        # raw: the feed's own queries, through COPY into a null sink
        source = PartnerSource(spec)
        with source.open() as reader:
            queries = [str(pull_query(m, "postgresql", None).compile(
                dialect=reader.conn.dialect, compile_kwargs={"literal_binds": True}))
                for m in (reader.courses, reader.attendance)]
        sink = NullSink()
        t0 = time.perf_counter()
        with engine.connect() as c:
            cur = c.connection.dbapi_connection.cursor()
            for q in queries:
                cur.copy_expert(f"COPY ({q}) TO STDOUT", sink)
        raw_s = time.perf_counter() - t0
        rss_raw = maxrss_mib()
        engine.dispose()

        total = args.rows + n_courses
        t0 = time.perf_counter()
        with WriteSession(settings) as wh:  # its end: the analysts' refresh, as every feed run
            receipt = FeedRunner(settings, wh, batch_rows=args.batch_rows).run("T001", date(2017, 6, 2))
        feed_s = time.perf_counter() - t0
        rss_feed = maxrss_mib()
        a, c_ = receipt["attendance"], receipt["courses"]
        print(f"raw COPY:  {raw_s:8.1f} s  {total / raw_s:12,.0f} rows/s  ({sink.bytes / 2**20:,.0f} MiB of text)")
        print(f"feed:      {feed_s:8.1f} s  {total / feed_s:12,.0f} rows/s  status {receipt['status']}, "
              f"{receipt['feed']['batches']} batch(es), courses {c_['accepted']:,}/{c_['received']:,}, "
              f"attendance {a['accepted']:,}/{a['received']:,} accepted, {receipt['findings_total']:,} findings")
        print(f"ratio feed / raw COPY: {feed_s / raw_s:.1f}x")
        print(f"peak memory (maxrss): {rss_raw:,.0f} MiB after raw COPY, {rss_feed:,.0f} MiB after the feed")
        return 0
    finally:
        if not args.keep:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: database {name}, warehouse {work}")
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
