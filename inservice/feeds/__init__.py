"""Daily database-to-database feeds (資料庫互傳): the file channel's twin.

A partner's two tables are read incrementally (rows modified after the stored watermark, less an
overlap window), streamed in chunks, turned into the same canonical tables as a file, checked by
the same rule engine and merged by the same merge; the watermark moves in the transaction that
writes the rows it covers. Plain Python: Dagster (inservice.assets.feeds) only calls `run_feed`.
"""

from inservice.feeds.core import FeedNotRegistered, FeedRunner, FeedUnavailable, run_feed

__all__ = ["FeedNotRegistered", "FeedRunner", "FeedUnavailable", "run_feed"]
