"""Reading a partner's feed tables: connection (F01), structure (F07), an incremental streamed pull.

Queries are SQLAlchemy Core over reflected tables, so each dialect quotes its own names. Rows
arrive through a server-side cursor (psycopg2 named cursor, pymysql SSCursor; pyodbc fetches
from the driver's forward-only stream) in chunks of `chunk_rows`, and every chunk becomes a
canonical string table (loaders.base) at once: memory holds one chunk of partner rows, whatever
the table's size. Both tables are read in one REPEATABLE READ transaction (PostgreSQL,
MySQL/MariaDB): courses and attendance come from the same snapshot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import NullPool

from inservice.config import TAIPEI
from inservice.dburl import driver_url
from inservice.feeds.register import FeedSpec
from inservice.loaders.base import UploadRefused, canonical_table, fold_header
from inservice.schemas.fields import ATTENDANCE, COURSE, RecordType

CONNECT_TIMEOUT = int(os.environ.get("INSERVICE_FEED_CONNECT_TIMEOUT", "15"))  # seconds
_SECRET_KV = re.compile(r"(?i)\b(pwd|password|passwd)(\s*=\s*)(\{[^}]*\}|[^;&\s]*)")
# login or configuration problems: trying again in a minute will not help
_NOT_TRANSIENT = re.compile(
    r"(?i)password authentication failed|authentication failed|access denied|login failed|pg_hba\.conf|"
    r"does not exist|unknown database|no such database|cannot open database|ssl.*required")
_MYSQL_NOT_TRANSIENT = {1044, 1045, 1049, 1115, 1251, 1698, 2059}
# the URL names an option, charset or ODBC driver the client cannot use: no retry will change that
_BAD_OPTION = re.compile(r"(?i)invalid value for parameter|invalid connection option|unknown (charset|character set)|"
                         r"unrecognized configuration parameter")
_ODBC_DRIVER_MISSING = re.compile(r"(?i)can't open lib|data source name not found|IM002")


class PartnerUnreachable(UploadRefused):
    """F01 that a later attempt may not meet: the server is down, the network broke, a timeout."""

    def __init__(self, detail_zh: str, detail_en: str) -> None:
        super().__init__("F01", detail_zh, detail_en)


def mask_secrets(text: str, url: URL | None = None) -> str:
    text = _SECRET_KV.sub(r"\1\2***", text)
    if url is not None and url.password and len(str(url.password)) >= 4:
        text = text.replace(str(url.password), "***")
    return text


def masked_url(url: URL) -> str:
    """The URL as it may be shown: no password, also none inside an ODBC connection string."""
    query = {k: (mask_secrets(v) if isinstance(v, str) else tuple(mask_secrets(x) for x in v))
             for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)


def _check_charset(url: URL) -> None:
    """pymysql fails on an unknown `charset=` with an AttributeError: say what is wrong instead."""
    from pymysql.charset import charset_by_name

    charset = url.query.get("charset")
    if isinstance(charset, str) and charset_by_name(charset) is None:
        raise UploadRefused("F01", f"連線字串的 charset「{charset}」不是 MySQL/MariaDB 的字元集（請用 utf8mb4）",
                            f"the URL's charset {charset!r} is not a MySQL/MariaDB character set (use utf8mb4)")


def feed_url(env_name: str) -> URL:
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise UploadRefused("F01", f"環境變數 {env_name} 未設定（應存放此互傳的資料庫連線字串）",
                            f"environment variable {env_name} is not set (it should hold the feed's "
                            f"SQLAlchemy URL)")
    try:
        return driver_url(make_url(value))  # postgresql://, mysql://, mssql:// get the drivers installed here
    except (sa.exc.ArgumentError, ValueError):
        # the value itself is never echoed: it may carry a password
        raise UploadRefused("F01", f"環境變數 {env_name} 的內容不是 SQLAlchemy 連線字串",
                            f"environment variable {env_name} does not hold a SQLAlchemy URL") from None


def _reason(exc: BaseException, url: URL) -> str:
    """The driver's own words, first lines only (SQLAlchemy's wrapper adds the SQL and a link)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    return mask_secrets(" ".join(lines[:3])[:400], url) or type(orig).__name__


def _transient(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_NOT_TRANSIENT:
        return False
    return not _NOT_TRANSIENT.search(str(exc.orig))


def driver_missing(url: URL, what: str) -> UploadRefused:
    """F01 "database driver missing": a Python module or an ODBC driver the URL needs is not installed."""
    return UploadRefused("F01", f"缺少資料庫驅動程式：{what}（{url.drivername}）；本系統已安裝 postgresql://（psycopg2）、"
                                f"mysql://（pymysql）、mssql://（pyodbc + FreeTDS）",
                         f"database driver missing: {what} (for {url.drivername}); installed here: postgresql:// "
                         f"(psycopg2), mysql:// (pymysql), mssql:// (pyodbc with FreeTDS)")


def refusal_for(exc: sa.exc.DBAPIError, url: URL, doing_zh: str, doing_en: str) -> UploadRefused:
    where, reason = masked_url(url), _reason(exc, url)
    if _ODBC_DRIVER_MISSING.search(str(exc.orig)):
        return driver_missing(url, f"ODBC driver {url.query.get('driver', '?')!s} ({reason})")
    if _BAD_OPTION.search(str(exc.orig)):
        return UploadRefused("F01", f"{doing_zh}失敗，連線字串的選項無效（{where}）：{reason}",
                             f"{doing_en} failed, an option of the URL is not valid ({where}): {reason}")
    if _transient(exc):
        return PartnerUnreachable(f"{doing_zh}失敗，單位的資料庫目前無法連線（{where}）：{reason}；稍後自動重試",
                                  f"{doing_en} failed, the partner's database is unreachable ({where}): {reason}; "
                                  f"will be retried")
    return UploadRefused("F01", f"{doing_zh}失敗（{where}）：{reason}", f"{doing_en} failed ({where}): {reason}")


# --- column types ----------------------------------------------------------------------------------
_UNREADABLE = (sa.LargeBinary, sa.BINARY, sa.VARBINARY, sa.JSON, sa.ARRAY, sa.Interval, sa.Time, sa.PickleType)


def column_kind(type_: sa.types.TypeEngine) -> str | None:
    """How a column's values become text; None: a type no field can be read from (F07)."""
    if isinstance(type_, sa.types.NullType):
        return "any"  # the reflector could not tell: convert value by value
    if isinstance(type_, _UNREADABLE):
        return None
    if isinstance(type_, sa.DateTime):
        return "datetime"
    if isinstance(type_, sa.Date):
        return "date"
    if isinstance(type_, sa.Boolean | mysql.BIT):
        return "bool"
    if isinstance(type_, sa.Integer | sa.Numeric | sa.Float):
        return "number"
    if isinstance(type_, sa.String | sa.Enum | sa.Uuid):
        return "text"
    return None


def _type_name(type_: sa.types.TypeEngine, dialect: sa.engine.Dialect) -> str:
    try:
        return type_.compile(dialect=dialect)
    except Exception:  # some reflected types cannot render: the class name will do
        return type(type_).__name__


def _wall(value: datetime) -> datetime:
    """Naive Asia/Taipei wall time (the spec's times), whatever the driver returned."""
    return value.astimezone(TAIPEI).replace(tzinfo=None) if value.tzinfo else value


def _text(value: object) -> str | None:
    """One value as the canonical text (the slow path, for columns of mixed Python types)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _wall(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):  # MySQL BIT(n)
        return str(int.from_bytes(bytes(value), "big"))
    return str(value)


def _wall_array(arr: pa.Array) -> pa.Array:
    if arr.type.tz is not None:
        arr = pc.local_timestamp(arr.cast(pa.timestamp(arr.type.unit, "Asia/Taipei")))
    return arr


def to_text(values: Sequence[object]) -> pa.Array:
    """A column of driver values → canonical text: dates ISO, date-times `YYYY-MM-DD HH:MM:SS`
    (Asia/Taipei), booleans true/false, decimals plain. Vectorised when the column is uniform."""
    first = next((v for v in values if v is not None), None)
    if first is None or isinstance(first, str):
        try:
            return pa.array(values, pa.string())  # the usual case: text columns, and drivers told to hand text
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return pa.array([_text(v) for v in values], pa.string())
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr.cast(pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_timestamp(t):
        seconds = pc.cast(_wall_array(arr), pa.timestamp("s"), safe=False)
        return pc.strftime(seconds, "%Y-%m-%d %H:%M:%S")
    if (pa.types.is_date(t) or pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
            or pa.types.is_decimal(t)):
        return arr.cast(pa.string())
    return pa.array([_text(v) for v in values], pa.string())


def to_timestamps(text: pa.Array) -> pa.Array:
    """modified_at (canonical text, Taipei wall time) as timestamps for the watermark; what is not
    a date-time is null (the engine reports it)."""
    try:
        return pc.cast(text, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out: list[datetime | None] = []
        for v in text.to_pylist():
            try:
                out.append(_wall(datetime.fromisoformat(v)) if v else None)
            except ValueError:
                out.append(None)
        return pa.array(out, pa.timestamp("us"))


_PG_OFFSET = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)[+-]\d{2}(?::?\d{2}){0,2}$"


def _pg_text_types(dbapi_connection: object) -> None:
    """psycopg2 hands numbers, dates and times over as the server's own text (ISO; the session is in
    Asia/Taipei): no Python object per value, and values Python cannot hold (year 10000, 'infinity')
    reach the rules as text (C02) instead of breaking the read."""
    import psycopg2.extensions as ext

    oids = (1082, 1083, 1114, 1184, 1700, 20, 21, 23, 700, 701)  # date time timestamp[tz] numeric ints floats
    ext.register_type(ext.new_type(oids, "INSERVICE_TEXT", lambda value, cur: value), dbapi_connection)


def _mysql_text_conversions() -> dict:
    """pymysql likewise: dates, times and decimals stay text (zero dates too: C02, not a crash)."""
    from pymysql.constants import FIELD_TYPE
    from pymysql.converters import conversions

    keep_text = {FIELD_TYPE.DATE, FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIME, FIELD_TYPE.DECIMAL,
                 FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.NEWDATE}
    return {k: v for k, v in conversions.items() if k not in keep_text}


# --- structure -------------------------------------------------------------------------------------
@dataclass
class Mapped:
    """A partner table matched to a record type: field code → its column."""

    rt: RecordType
    name: str
    table: sa.Table
    columns: dict[str, sa.Column]
    notes: list[dict] = field(default_factory=list)

    @property
    def modified(self) -> sa.Column:
        return self.columns["modified_at"]


def _where(rt: RecordType, name: str) -> tuple[str, str]:
    return f"{rt.label}資料表 {name}", f"the {rt.name} table {name}"


def map_table(rt: RecordType, name: str, table: sa.Table, dialect: sa.engine.Dialect) -> Mapped:
    """Columns by field code (or label) after folding, like file headers; F07 names what is wrong."""
    where_zh, where_en = _where(rt, name)
    by_key: dict[str, str] = {}
    for f in rt.fields:
        by_key[fold_header(f.code)] = f.code
        by_key[fold_header(f.label)] = f.code
    columns: dict[str, sa.Column] = {}
    unknown: list[str] = []
    for col in table.columns:
        code = by_key.get(fold_header(col.name))
        if code is None:
            unknown.append(col.name)
        elif code in columns:
            raise UploadRefused("F07", f"{where_zh}的欄位 {code} 出現兩次（{columns[code].name}、{col.name}）",
                                f"{where_en} has column {code} twice ({columns[code].name}, {col.name})",
                                record=rt.name, field=code)
        else:
            columns[code] = col
    missing = [f for f in rt.fields if f.required_in("db") and f.code not in columns]
    if missing:
        raise UploadRefused(
            "F07", f"{where_zh}缺少欄位 " + "、".join(f"{f.code}（{f.label}）" for f in missing),
            f"{where_en} lacks column(s) " + ", ".join(f"{f.code} ({f.label})" for f in missing),
            record=rt.name, field=missing[0].code if len(missing) == 1 else None)
    for code, col in columns.items():
        kind = column_kind(col.type)
        type_name = _type_name(col.type, dialect)
        if kind is None:
            raise UploadRefused("F07", f"{where_zh}的欄位 {col.name} 型別為 {type_name}，無法讀取為文字、數字或日期",
                                f"column {col.name} of {where_en} has type {type_name}, which cannot be read "
                                f"as text, a number or a date", record=rt.name, field=code)
        if code == "modified_at" and kind not in ("datetime", "date", "any"):
            raise UploadRefused("F07", f"{where_zh}的欄位 {col.name} 型別為 {type_name}，異動時間須為日期時間型別",
                                f"column {col.name} of {where_en} has type {type_name}; modified_at must be "
                                f"a date-time column (the feed reads rows changed after a time)",
                                record=rt.name, field=code)
    notes = []
    if unknown:
        notes.append({"record": "file", "row": None, "field": None, "rule": "F07", "severity": "warning",
                      "course_code": None,
                      "message_zh": f"{where_zh}有未定義欄位，已略過：{'、'.join(unknown)}",
                      "message_en": f"unknown column(s) in {where_en} ignored: {', '.join(unknown)}"})
    return Mapped(rt, name, table, columns, notes)


def pull_query(m: Mapped, dialect_name: str, since: datetime | None) -> sa.Select:
    """Rows changed after `since` (all rows when None), and rows without modified_at (reported C01/A01
    every time until the partner fills it in, never silently skipped); oldest change first, rows
    without one before all others."""
    mod = m.modified
    # type_coerce to NullType: no SQLAlchemy result processing, values reach to_text as the driver gives them
    stmt = sa.select(*(sa.type_coerce(col, sa.types.NullType()).label(code) for code, col in m.columns.items()))
    if since is not None:
        if dialect_name == "postgresql" and getattr(mod.type, "timezone", False):
            since = since.replace(tzinfo=TAIPEI)  # timestamptz: compare instants, not wall times
        stmt = stmt.where(sa.or_(mod > sa.bindparam("since", since), mod.is_(None)))
    # NULLs sort first in ascending order on MySQL and SQL Server; PostgreSQL needs telling
    return stmt.order_by(mod.nulls_first() if dialect_name == "postgresql" else mod.asc())


# byte-order collations: the order Arrow compares strings in (a legacy read is cut where keys change)
_BINARY_COLLATION = {"postgresql": "C", "mysql": "utf8mb4_bin", "mariadb": "utf8mb4_bin",
                     "mssql": "Latin1_General_BIN2"}


def key_order_query(m: Mapped, dialect_name: str) -> sa.Select:
    """All rows ordered by the record's key columns first, then every other column: a total order, so
    rows with equal keys come in the same order on every read."""
    stmt = sa.select(*(sa.type_coerce(col, sa.types.NullType()).label(code) for code, col in m.columns.items()))
    first = [c for c in ("unit_code", "course_code") if c in m.columns]
    order = []
    for code in [*first, *(c for c in m.columns if c not in first)]:
        col = m.columns[code]
        collation = _BINARY_COLLATION.get(dialect_name)
        expr = sa.collate(col, collation) if collation and isinstance(col.type, sa.String) else col
        order.append(expr.asc().nulls_first() if dialect_name == "postgresql" else expr.asc())
    return stmt.order_by(*order)


# --- the pull ---------------------------------------------------------------------------------------
@dataclass
class Chunk:
    """Canonical rows (`_row` = position in the pull, 1-based) and their modified_at as timestamps."""

    table: pa.Table
    modified: pa.Array

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def empty_chunk(rt: RecordType) -> Chunk:
    return Chunk(canonical_table(rt, pa.array([], pa.int64()), {}), pa.array([], pa.timestamp("us")))


def concat(rt: RecordType, chunks: list[Chunk]) -> Chunk:
    if not chunks:
        return empty_chunk(rt)
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(pa.concat_tables([c.table for c in chunks]).combine_chunks(),
                 pa.concat_arrays([c.modified for c in chunks]))


class PartnerReader:
    """An open connection to the partner's database, its two tables mapped."""

    def __init__(self, source: PartnerSource, conn: Connection, courses: Mapped, attendance: Mapped) -> None:
        self.source = source
        self.conn = conn
        self.courses = courses
        self.attendance = attendance

    @property
    def notes(self) -> list[dict]:
        return [*self.courses.notes, *self.attendance.notes]

    def stream(self, m: Mapped, since: datetime | None) -> Generator[Chunk, None, None]:
        return self._stream(m, pull_query(m, self.conn.dialect.name, since))

    def stream_by_key(self, m: Mapped) -> Generator[Chunk, None, None]:
        """Every row, ordered by unit_code, course_code and then every other column, each in byte order
        with nulls first: the same order, and so the same chunks, on every read (the legacy backfill)."""
        return self._stream(m, key_order_query(m, self.conn.dialect.name))

    def _stream(self, m: Mapped, stmt: sa.Select) -> Generator[Chunk, None, None]:
        codes = list(m.columns)
        # PostgreSQL timestamptz as text ends in the session's offset (+08): the wall time is before it
        with_offset = {c for c, col in m.columns.items() if self.conn.dialect.name == "postgresql"
                       and getattr(col.type, "timezone", False)}
        first = 1
        stmt = stmt.execution_options(stream_results=True, yield_per=self.source.chunk_rows)
        try:
            with self.conn.execute(stmt) as result:
                for part in result.partitions():
                    n = len(part)
                    texts = {c: to_text(v) for c, v in zip(codes, zip(*part, strict=True), strict=True)}
                    for c in with_offset:
                        texts[c] = pc.replace_substring_regex(texts[c], _PG_OFFSET, r"\1")
                    table = canonical_table(m.rt, pa.array(range(first, first + n), pa.int64()), texts)
                    first += n
                    yield Chunk(table, to_timestamps(texts["modified_at"]))
        except sa.exc.DBAPIError as exc:
            raise refusal_for(exc, self.source.url, f"讀取資料表 {m.name} ", f"reading {m.name}") from exc

    def read_all(self, m: Mapped, since: datetime | None) -> Chunk:
        return concat(m.rt, list(self.stream(m, since)))


class PartnerSource:
    def __init__(self, spec: FeedSpec, chunk_rows: int = 20_000, url: URL | None = None) -> None:
        """`url`: given directly (the legacy backfill's source), instead of from the feed's variable."""
        self.spec = spec
        self.chunk_rows = chunk_rows
        self.url = driver_url(url) if url is not None else feed_url(spec.url_env)
        self.masked = masked_url(self.url)

    def _engine(self) -> sa.Engine:
        driver = self.url.get_driver_name()
        connect_args: dict[str, object] = {}
        if driver in ("psycopg2", "pymysql") and "connect_timeout" not in self.url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
        if driver == "psycopg2" and "application_name" not in self.url.query:
            connect_args["application_name"] = "inservice-feed"  # the partner's DBA sees who reads
        if driver == "pymysql":
            connect_args["conv"] = _mysql_text_conversions()
        elif driver == "pyodbc":
            connect_args["timeout"] = CONNECT_TIMEOUT  # login timeout
        if driver == "pymysql":
            _check_charset(self.url)
        try:
            return sa.create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
        except ImportError as exc:  # the DBAPI module (psycopg, MySQLdb, pyodbc without unixODBC…)
            raise driver_missing(self.url, f"Python module {exc.name or mask_secrets(str(exc), self.url)}") from None
        except sa.exc.NoSuchModuleError:
            raise driver_missing(self.url, f"SQLAlchemy dialect {self.url.drivername}") from None
        except (sa.exc.ArgumentError, OSError, ValueError, TypeError) as exc:
            reason = mask_secrets(str(exc), self.url)[:300]
            raise UploadRefused("F01", f"無法使用資料庫連線字串 {self.masked}：{reason}",
                                f"the database URL {self.masked} cannot be used: {reason}") from None

    @contextmanager
    def open(self) -> Iterator[PartnerReader]:
        engine = self._engine()
        try:
            try:
                conn = engine.connect()
            except sa.exc.DBAPIError as exc:
                raise refusal_for(exc, self.url, "連線", "connection") from exc
            except (LookupError, AttributeError, TypeError, ValueError) as exc:  # an option the driver chokes on
                reason = mask_secrets(f"{type(exc).__name__}: {exc}", self.url)[:300]
                raise UploadRefused("F01", f"連線失敗，連線字串的選項無效（{self.masked}）：{reason}",
                                    f"connection failed, an option of the URL is not valid ({self.masked}): "
                                    f"{reason}") from None
            with conn:
                try:
                    conn = self._session(conn)
                    courses = self._map(conn, COURSE, self.spec.courses_table)
                    attendance = self._map(conn, ATTENDANCE, self.spec.attendance_table)
                    if conn.dialect.driver == "psycopg2":  # after reflection, which needs Python values
                        _pg_text_types(conn.connection.dbapi_connection)
                except sa.exc.DBAPIError as exc:
                    raise refusal_for(exc, self.url, "讀取資料表結構", "reading the table structure") from exc
                try:
                    yield PartnerReader(self, conn, courses, attendance)
                finally:
                    try:
                        conn.rollback()  # read only: nothing to keep; ends the snapshot
                    except sa.exc.DBAPIError:
                        pass  # a broken link: the refusal already says why
        finally:
            engine.dispose()

    @staticmethod
    def _session(conn: Connection) -> Connection:
        """One snapshot for both tables, and the partner's times read as Asia/Taipei."""
        name = conn.dialect.name
        if name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            if conn.dialect.driver == "psycopg2":
                conn = conn.execution_options(postgresql_readonly=True)
            conn.exec_driver_sql("SET TIME ZONE 'Asia/Taipei'")
            conn.exec_driver_sql("SET DateStyle = 'ISO, YMD'")
        elif name in ("mysql", "mariadb"):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET time_zone = '+08:00'")  # Taiwan keeps no summer time
        return conn

    def _map(self, conn: Connection, rt: RecordType, name: str) -> Mapped:
        schema, _, table_name = name.rpartition(".")
        try:
            table = sa.Table(table_name, sa.MetaData(), schema=schema or None, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            where_zh, where_en = _where(rt, name)
            raise UploadRefused("F07", f"{where_zh}不存在（{self.masked}）", f"{where_en} is missing ({self.masked})",
                                record=rt.name) from None
        return map_table(rt, name, table, conn.dialect)
