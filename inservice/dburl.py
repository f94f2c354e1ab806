"""Database URLs as people write them: the one place that picks a driver and hides a password.

Drivers. SQLAlchemy 2.1 reads `postgresql://` as psycopg (3) and `mysql://` as mysqlclient, neither
of which this project installs; `postgres://` it does not know at all. A URL without `+driver`
gets the driver installed here (`SCHEME_DRIVERS`), for feeds and the warehouse alike; a URL that
names its driver keeps it. SQL Server without an ODBC `driver=` gets FreeTDS (`scripts/setup`
installs it).

Passwords. A URL is shown only through `redact_url`, and any text that may quote one (a driver's
error, a traceback) through `mask_text`: whatever the URL's shape — malformed, without a scheme,
a password holding `@` or `:`, a `password=` option — the password is replaced by `***`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

from sqlalchemy.engine import URL

SCHEME_DRIVERS = {
    "postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql",
    "mssql": "mssql+pyodbc", "sqlserver": "mssql+pyodbc",
}
DEFAULT_ODBC_DRIVER = "FreeTDS"  # Debian `tdsodbc`, registered with unixODBC under this name
# the Python module each SQLAlchemy driver imports (for "database driver missing: …")
DRIVER_MODULES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000", "asyncpg": "asyncpg",
                  "pymysql": "pymysql", "mysqldb": "MySQLdb", "mysqlconnector": "mysql.connector",
                  "pyodbc": "pyodbc", "pymssql": "pymssql", "aioodbc": "aioodbc"}

# `password=…` in a query string or an ODBC connection string, also percent-encoded (`PWD%3D…%3B`)
_SECRET_OPTION = re.compile(r"(?i)(?:(?<=%3B)|(?<=%26)|(?<![A-Za-z0-9_]))(pwd|password|passwd|sslpassword)"
                            r"(\s*(?:=|%3D)\s*)(\{[^}]*\}|%7B.*?%7D|(?:(?!%3B|%26)[^;&\s'\"])*)")
# `user:secret@` inside any text (a URL quoted by a driver's message, a malformed URL)
_USERINFO = re.compile(r"([A-Za-z0-9_.%~+-]*:)([^@\s/'\"]+)@")


def driver_url(url: URL) -> URL:
    """The URL with the driver this project uses when it names none (see the module's docstring)."""
    name = url.drivername.lower()
    if "+" not in name:
        name = SCHEME_DRIVERS.get(name, name)
        url = url.set(drivername=name)
    if name == "mssql+pyodbc" and url.database and not {"driver", "odbc_connect"} & {k.lower() for k in url.query}:
        url = url.update_query_dict({"driver": DEFAULT_ODBC_DRIVER})
    return url


def dialect_of(scheme: str) -> str:
    """`postgres` → `postgresql`, `mysql+pymysql` → `mysql`: the database a URL's scheme names."""
    scheme = scheme.lower()
    return SCHEME_DRIVERS.get(scheme, scheme).split("+", 1)[0]


def redact_url(text: str) -> str:
    """A URL (or what was meant to be one) as it may be shown: never its password."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    head, at, tail = rest.rpartition("@")  # the last '@': a password may hold '@' itself
    if at and ":" in head:
        head = head.split(":", 1)[0]  # user@host, as libpq URLs are written without a password
    return _SECRET_OPTION.sub(r"\1\2***", f"{scheme}{sep}{head}{at}{tail}")


def secrets_of(text: str) -> list[str]:
    """Every string that may be the password of this URL text (longest first), also percent-decoded."""
    rest = text.split("://", 1)[1] if "://" in text else text
    found = {rest[:i].split(":", 1)[1] for i, ch in enumerate(rest) if ch == "@" and ":" in rest[:i]}
    found |= {m.group(3) for m in _SECRET_OPTION.finditer(text)}
    found |= {piece for s in found for piece in s.split("@")}  # a parser may cut at any '@'
    found |= {unquote(s) for s in found}
    found |= {s[1:-1] for s in found if s.startswith("{") and s.endswith("}")}  # ODBC's {quoted} value
    return sorted((s for s in found if s), key=len, reverse=True)


def mask_text(text: str, urls: Iterable[str | None] = ()) -> str:
    """`text` with the password of each of `urls` (and any `user:…@`, `password=…`) replaced by ***."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        for secret in secrets_of(url):
            if len(secret) >= 4:  # a shorter one only in context (below): "ab" may be any word's part
                text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_OPTION.sub(r"\1\2***", text)
