"""Feeds: a partner's database pulled daily (partition = feed unit × day) by the plain core.

The watermark, not the calendar, decides what is read: a day's run takes every row changed since
the last pull, so a missed day is caught up by the next run, and a backfill of a date range runs
one pull per day (the first takes everything pending, the others find little or nothing new).
`full: true` in the run config re-reads every row (unchanged rows are no-ops).
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from datetime import date

import dagster as dg

from inservice.assets.shared import OWNERS, WAREHOUSE_POOL, InserviceResource, access_metadata, permanent
from inservice.feeds import FeedNotRegistered, FeedRunner, FeedUnavailable
from inservice.warehouse.analyst import WriteSession
from inservice.warehouse.backend import TRANSIENT_ERRORS

FEED_UNIT_KEYS = "feed_unit"  # the dynamic partitions of feed units, by name
FEED_UNITS = dg.DynamicPartitionsDefinition(name=FEED_UNIT_KEYS)
FIRST_DAY = "2017-01-01"
FEED_DAYS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="Asia/Taipei")
FEED_PARTITIONS = dg.MultiPartitionsDefinition({"unit": FEED_UNITS, "day": FEED_DAYS})
# A partner server that is down is usually back within the hour: 1, 2, 4, 8 minutes (±jitter).
FEED_RETRY = dg.RetryPolicy(max_retries=4, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class FeedConfig(dg.Config):
    full: bool = False  # ignore the watermark and re-read every row (unchanged rows are no-ops)


def feed_metadata(receipt: dict) -> dict:
    feed = receipt.get("feed") or {}
    meta = {
        "status": receipt["status"], "refusal": receipt["refusal"] or "none",
        **{f"{part}_{k}": receipt[part][k] for part in ("courses", "attendance")
           for k in ("received", "accepted", "rejected")},
        "findings": receipt.get("findings_total", len(receipt["findings"])),
        "upload_id": receipt.get("upload_id") or "",
        "source": feed.get("source") or "", "since": feed.get("since") or "everything",
        "watermark_before": feed.get("watermark_before") or "none",
        "watermark_after": feed.get("watermark_after") or "none",
        "batches": feed.get("batches", 0), "complete": bool(feed.get("complete")),
        **(receipt.get("merge") or {}),
    }
    files = receipt.get("receipt_files") or []
    if files:
        meta["receipt"] = dg.MetadataValue.path(files[0])
        meta["receipt_xlsx"] = dg.MetadataValue.path(files[1])
    return meta


@dg.asset(
    partitions_def=FEED_PARTITIONS,
    group_name="ingest",
    pool=WAREHOUSE_POOL,
    retry_policy=FEED_RETRY,
    owners=OWNERS,
    kinds={"python", "duckdb", "sql"},
    description=(
        "A partner's daily database feed (資料庫互傳), partition = unit × day. The core reads the rows of "
        "the partner's inservice_courses / inservice_attendance changed since the watermark (less the "
        "overlap window), checks them with the same rules as files, merges them and moves the watermark "
        "in the same transaction, and writes the day's receipt (回執). Partner unreachable: the refusal is "
        "recorded, then the run is retried with back-off."),
)
def partner_feed(context: dg.AssetExecutionContext, config: FeedConfig,
                 inservice: InserviceResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    unit, day = keys["unit"], date.fromisoformat(keys["day"])
    settings = inservice.settings()
    session = WriteSession(settings)  # as run_feed, holding the session: its refresh is shown below
    try:
        with session as wh:
            receipt = FeedRunner(settings, wh).run(unit, day, full=config.full)
    except FeedUnavailable as exc:
        context.log.warning(f"{unit} {day}: partner unavailable ({exc}); receipt "
                            f"{(exc.receipt.get('receipt_files') or [''])[0]}")
        raise  # a ConnectionError: the retry policy tries again later
    except FeedNotRegistered as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except TRANSIENT_ERRORS:
        raise  # e.g. the warehouse file locked by a process outside the pool
    except Exception as exc:
        raise permanent(exc, "feed failed (every committed batch is whole; the watermark covers only those)") \
            from exc
    context.log.info(f"{unit} {day}: {receipt['status']}{' ' + receipt['refusal'] if receipt['refusal'] else ''}")
    return dg.MaterializeResult(metadata={**feed_metadata(receipt), **access_metadata(session.refresh)})


FEED_ASSETS = [partner_feed]
