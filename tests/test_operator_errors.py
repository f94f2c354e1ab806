"""Failures a person can act on: each through a real `inservice` process — one line on stderr (what
failed, what to do), exit 75 when retrying can help and 1 otherwise, no traceback, the detail in
the run log; and a password never printed, whatever the shape of the URL that holds it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import psycopg2
import pytest

from inservice.dburl import driver_url, mask_text, redact_url
from inservice.failures import log_path
from inservice.warehouse.backend import WarehouseUrl, WarehouseUrlError
from tests.conftest import PG_SERVER, RECEIVED, pg_database

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "inservice" / "sample_inbox"


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSERVICE_", "FEED_"))}
    return {**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}", "INSERVICE_HOME": str(home),
            **extra}


def inservice(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inservice.cli", *args], env=env_for(home, **extra),
                          capture_output=True, text=True, timeout=300)


def one_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The process failed with `code` and said so in one line holding `words`, without a traceback."""
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("inservice: "), proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def registered(home: Path, *units: str, **extra: str) -> None:
    for code in units:
        proc = inservice(home, "units", "add", code, "--name", f"unit {code}", "--channel", "file", "--state",
                         "production", "--joined", "2017-01-01", **extra)
        assert proc.returncode == 0, proc.stderr


def upload(tmp_path: Path, unit: str = "T002") -> Path:
    """A sample upload in a folder named for its unit (outside the home: the home may be a small disk)."""
    src = next((SAMPLE / unit).iterdir())
    dest = tmp_path / "drop" / unit / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def count(home: Path, sql: str, url: str | None = None) -> int:
    if url:
        with psycopg2.connect(url) as con, con.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


# --- DuckDB ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_warehouse_locked_by_another_process_is_busy_retry(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered(home, "T002")
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('open', flush=True); time.sleep(120)", str(home / "warehouse.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        line = one_line(inservice(home, "units", "list", INSERVICE_LOCK_TIMEOUT="1"), 75, "warehouse busy",
                        f"process {holder.pid}")
        assert "again" in line
    finally:
        holder.kill()
        holder.wait()
    assert inservice(home, "units", "list").returncode == 0


@pytest.mark.slow  # > 1.7 s: the fast tier stays under 3 minutes
def test_corrupt_warehouse_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "warehouse.duckdb").write_bytes(os.urandom(300_000))
    one_line(inservice(home, "units", "list"), 1, "warehouse.duckdb", "not a readable DuckDB database", "backup")
    # the detail is in the run log, not on the terminal
    log = log_path(home).read_text(encoding="utf-8")
    assert "Traceback" in log and "not a valid DuckDB database file" in log
    assert oct(log_path(home).stat().st_mode & 0o777) == "0o600"
    # -v (or INSERVICE_DEBUG=1) prints the detail too
    verbose = inservice(home, "-v", "units", "list")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert "Traceback" in inservice(home, "units", "list", INSERVICE_DEBUG="1").stderr


@pytest.mark.slow
def test_key_path_that_is_a_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered(home, "T002")
    (home / "pseudonym.key").mkdir()
    one_line(inservice(home, "ingest", str(upload(tmp_path)), "--received-at", RECEIVED), 78, "pseudonym.key")
    assert count(home, "SELECT count(*) FROM courses") == 0


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["home is a file", "home under a file"])
def test_home_that_cannot_be_a_folder(tmp_path: Path, shape: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    home = afile if shape == "home is a file" else afile / "home"
    one_line(inservice(home, "units", "list"), 1, str(home), "INSERVICE_HOME")
    one_line(inservice(home, "ingest", str(upload(tmp_path)), "--received-at", RECEIVED), 1, "INSERVICE_HOME")


@contextmanager
def tmpfs(mnt: Path, options: str) -> Iterator[Path]:
    """A real small disk (mounting needs root, as in the CI container; elsewhere the test is skipped)."""
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    # a new warehouse with its reference tables (~5 MiB) and the analysts' copy (~4 MiB) must fit once freed
    with tmpfs(tmp_path / "disk", "size=32m") as mnt:
        yield mnt


@pytest.mark.slow
def test_home_on_a_read_only_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=1m,ro") as mnt:
        one_line(inservice(mnt, "units", "list"), 1, "Read-only file system", "INSERVICE_HOME")
        one_line(inservice(mnt / "home", "units", "list"), 1, "Read-only file system", "INSERVICE_HOME")


@pytest.mark.slow
def test_disk_full_is_retry_later_and_loads_once_space_is_freed(tmp_path: Path, small_disk: Path) -> None:
    home = small_disk
    registered(home, "T002")
    filler = home / "filler"
    with open(filler, "wb") as fh:  # fill the disk to the last block
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    path = upload(tmp_path)
    one_line(inservice(home, "ingest", str(path), "--received-at", RECEIVED, INSERVICE_PSEUDONYM_KEY="k" * 32), 75,
             "disk full", "free space")
    filler.unlink()
    assert count(home, "SELECT count(*) FROM uploads") == 0  # nothing half-loaded
    again = inservice(home, "ingest", str(path), "--received-at", RECEIVED, "--json", INSERVICE_PSEUDONYM_KEY="k" * 32)
    assert again.returncode == 0 and '"status": "loaded"' in again.stdout, again.stderr


@pytest.mark.slow
def test_output_reader_gone_is_quiet(tmp_path: Path) -> None:
    """`inservice history … | head`: the reader closes the pipe; no traceback, no message, exit 141
    (what a shell reports for `seq 1 100000 | head -1`)."""
    home = tmp_path / "home"
    registered(home, "T002")
    assert inservice(home, "ingest", str(upload(tmp_path)), "--received-at", RECEIVED).returncode == 0
    course = duckdb.connect(str(home / "analyst" / "warehouse.duckdb"), read_only=True).execute(
        "SELECT course_code FROM courses ORDER BY 1 LIMIT 1").fetchone()[0]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line is written
    try:
        proc = subprocess.run([sys.executable, "-m", "inservice.cli", "history", course, "--unit", "T002"],
                              env=env_for(home), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


# --- PostgreSQL ------------------------------------------------------------------------------------
def _backend_waiting(admin: psycopg2.extensions.connection, db: str, timeout: float = 60) -> int:
    """The pid of the inservice session of `db` that waits on a lock."""
    deadline = time.monotonic() + timeout
    with admin.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("""SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'inservice'
                           AND wait_event_type = 'Lock'""", (db,))
            row = cur.fetchone()
            if row:
                return row[0]
            time.sleep(0.1)
    raise AssertionError("the ingest never waited on the lock")


@pytest.mark.slow
def test_postgres_connection_terminated_mid_merge(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with pg_database() as url:
        registered(home, "T002", INSERVICE_WAREHOUSE_URL=url)
        db = url.rsplit("/", 1)[1]
        holder = psycopg2.connect(url)  # a session that lets the loader read but not write courses
        holder.cursor().execute("LOCK TABLE main.courses IN EXCLUSIVE MODE")
        admin = psycopg2.connect(PG_SERVER)
        admin.autocommit = True
        ingest = subprocess.Popen([sys.executable, "-m", "inservice.cli", "ingest", str(upload(tmp_path)),
                                   "--received-at", RECEIVED],
                                  env=env_for(home, INSERVICE_WAREHOUSE_URL=url, INSERVICE_PG_LOCK_TIMEOUT="300s"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            pid = _backend_waiting(admin, db)  # inside the merge's transaction, waiting to write
            admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
            out, err = ingest.communicate(timeout=120)
        finally:
            ingest.kill()
            holder.rollback()
            holder.close()
            admin.close()
        one_line(subprocess.CompletedProcess([], ingest.returncode, out, err), 75, "lost the connection",
                 "run the command again")
        assert count(home, "SELECT count(*) FROM main.uploads", url) == 0
        assert count(home, "SELECT count(*) FROM main.courses", url) == 0


# --- passwords -------------------------------------------------------------------------------------
SECRET = "Sup3r-secret"
URL_SHAPES = [
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/db",
    f"postgres://u:{SECRET}@",
    f"postgresql://u:{SECRET}@[::1/db",
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",  # nobody listens: unreachable, 75
    f"postgresql://u:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1/db",  # an '@' inside the password
    f"postgresql://u:{SECRET.replace('-', '%2D')}@127.0.0.1:notaport/db",  # percent-encoded
    f"postgresql://127.0.0.1/db?password={SECRET}&port=x",
    f"postgresql://u@127.0.0.1/db?sslpassword={SECRET}&sslmode=bogus",
    f"duckdb:/x?password={SECRET}",
    f"duckdb:///x.duckdb?password={SECRET}",
    f"garbage:{SECRET}@somewhere",
    f"u:{SECRET}@host/db",
    f"mysql://u:{SECRET}@127.0.0.1/db",
    f"sqlite:///x.db?password={SECRET}",
    f"postgresql+psycopg2://:{SECRET}@127.0.0.1:notaport",
]


@pytest.mark.slow
@pytest.mark.parametrize("url", URL_SHAPES)
def test_warehouse_url_password_never_printed(tmp_path: Path, url: str) -> None:
    home = tmp_path / "home"
    for args in (("-v", "units", "list"), ("warehouse", "info")):
        proc = inservice(home, *args, INSERVICE_WAREHOUSE_URL=url)
        shown = proc.stdout + proc.stderr
        assert SECRET not in shown and SECRET[4:] not in shown, shown
        if args[0] == "-v":  # the detail, passwords masked; then the one line without it
            proc = inservice(home, "units", "list", INSERVICE_WAREHOUSE_URL=url)
            assert SECRET not in proc.stderr and SECRET[4:] not in proc.stderr, proc.stderr
        if proc.returncode:
            one_line(proc, proc.returncode)
            assert proc.returncode in (1, 75)
    if log_path(home).exists():
        log = log_path(home).read_text(encoding="utf-8")
        assert SECRET not in log and SECRET[4:] not in log


def test_redaction_of_many_shapes() -> None:
    for url in URL_SHAPES + [f"mssql+pyodbc://u@h/db?odbc_connect=DRIVER%3DX%3BPWD%3D{SECRET}%3BX%3D1",
                             f"mssql+pyodbc://u@h/db?odbc_connect=DRIVER%3DX%3BPWD%3D%7B{SECRET}%7D",
                             f"DRIVER={{FreeTDS}};SERVER=h;PWD={{{SECRET}}};UID=u"]:
        assert SECRET not in redact_url(url) and SECRET[4:] not in redact_url(url), redact_url(url)
        quoted = f'invalid dsn: "{url}" and then {SECRET}'
        assert SECRET not in mask_text(quoted, [url]), mask_text(quoted, [url])
    # what stays: user, host, database
    assert redact_url(f"postgresql://loader:{SECRET}@db.example:5432/inservice") == \
        "postgresql://loader@db.example:5432/inservice"
    with pytest.raises(WarehouseUrlError) as err:
        WarehouseUrl.parse(f"garbage:{SECRET}@somewhere")
    assert SECRET not in str(err.value) and err.value.exit_code == 1


def test_plain_url_forms_get_the_installed_driver() -> None:
    from sqlalchemy.engine import make_url

    assert str(driver_url(make_url("postgresql://u@h/db")).drivername) == "postgresql+psycopg2"
    assert str(driver_url(make_url("postgres://u@h/db")).drivername) == "postgresql+psycopg2"
    assert str(driver_url(make_url("mysql://u@h/db")).drivername) == "mysql+pymysql"
    assert str(driver_url(make_url("mariadb://u@h/db")).drivername) == "mysql+pymysql"
    assert str(driver_url(make_url("postgresql+psycopg://u@h/db")).drivername) == "postgresql+psycopg"  # as named
    ms = driver_url(make_url("mssql://u@h:1433/db"))
    assert (ms.drivername, ms.query["driver"]) == ("mssql+pyodbc", "FreeTDS")
    named = driver_url(make_url("mssql+pyodbc://u@h/db?driver=ODBC+Driver+18+for+SQL+Server"))
    assert named.query["driver"] == "ODBC Driver 18 for SQL Server"
    for form in ("postgresql", "postgres", "postgresql+psycopg2"):
        assert WarehouseUrl.parse(f"{form}://u@h/db") == WarehouseUrl("postgresql", "postgresql://u@h/db")

