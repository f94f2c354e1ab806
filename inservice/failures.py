"""How the `inservice` command fails: one line on stderr, the detail in the run log, a useful exit code.

`explain` turns what libraries raise (OSError, DuckDB, psycopg2) into an `OperatorError` saying
what failed and what to do; `run` calls a command with that net under it. The full detail
(traceback) goes to `$INSERVICE_HOME/logs/inservice.log` (0600), with passwords and ID-shaped
tokens masked; with `-v` or `INSERVICE_DEBUG=1` it is also printed on stderr. Exit codes: 0 done,
1 a failure that needs a person, 75 one that retrying later can fix, 130 interrupted, 141 the
reader of the output went away (`inservice history … | head`: no message, as `seq 1 1000 | head`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from inservice.errors import OperatorError, RetryLater

LOG = logging.getLogger("inservice")
RUN_LOG = logging.getLogger("inservice.run")  # the failure records (with their traceback)
EX_SIGPIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE
_FULL = (errno.ENOSPC, errno.EDQUOT)
# libpq/psycopg2 saying the link to the server broke (the server restarted, a DBA ended the session)
_LINK_LOST = re.compile(r"(?i)terminating connection|server closed the connection|connection already closed|"
                        r"could not receive data|could not send data|connection to server .* lost|"
                        r"no connection to the server|SSL connection has been closed|connection reset")


def private(text: str) -> str:
    """Text that may reach a terminal or a log: no password of a configured URL, no national ID."""
    # imported here, not at the top: every command starts through `run`, and these bring sqlalchemy,
    # numpy and pyarrow, which only a failure or a warning needs
    from inservice.dburl import mask_text
    from inservice.validations.national_id import IN_TEXT  # an ID-shaped token, the one pattern

    urls = [os.environ.get("INSERVICE_WAREHOUSE_URL")]
    urls += [v for k, v in os.environ.items() if k.startswith("FEED_") and "://" in v]  # feed URL variables
    return re.sub(IN_TEXT, r"\1*****\2", mask_text(text, urls))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _os_error(exc: OSError, home: Path | None) -> OperatorError:
    where = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or _first_line(exc)
    if exc.errno in _FULL:
        disk = "that disk" if exc.filename is not None else f"the disk of INSERVICE_HOME ({home})"
        return RetryLater(f"disk full: cannot write {where} ({what}); free space on {disk}, then run the "
                          f"command again")
    hint = ""
    if home is not None and exc.filename is not None and _under(Path(str(exc.filename)), home):
        hint = f"; INSERVICE_HOME ({home}) must be a folder this user can write to"
        if Path(str(exc.filename)).name == "pseudonym.key":
            hint = "; the pseudonym key must be a readable file (or set INSERVICE_PSEUDONYM_KEY)"
    return OperatorError(f"cannot use {where}: {what}{hint}")


def _under(path: Path, home: Path) -> bool:
    try:
        return path.absolute().is_relative_to(home) or home.is_relative_to(path.absolute())
    except (OSError, ValueError):
        return False


def _duckdb_error(exc: BaseException) -> OperatorError:
    text = str(exc)
    pid = re.search(r"\(PID (\d+)\)", text)
    file = re.search(r'file "([^"]+)"', text)
    where = file.group(1) if file else "the warehouse file"
    if "Could not set lock" in text or "Conflicting lock" in text:
        by = f" (process {pid.group(1)})" if pid else ""
        return RetryLater(f"warehouse busy: {where} is in use by another inservice process{by}; run the command "
                          f"again when it has finished")
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return RetryLater(f"disk full writing the warehouse ({_first_line(exc)}); free space, then run the command "
                          f"again (the interrupted transaction was not committed)")
    if "not a valid DuckDB database" in text or "Corrupt database file" in text:
        return OperatorError(f"{where} is not a readable DuckDB database (damaged, or another kind of file): "
                             f"restore it from a backup, or move it away to start an empty warehouse")
    if "Permission denied" in text or "Read-only file system" in text:
        return OperatorError(f"cannot write the warehouse: {_first_line(exc)}; INSERVICE_HOME must be writable")
    return OperatorError(f"warehouse error: {_first_line(exc)}")


def _pg_error(exc: BaseException) -> OperatorError | None:
    code = getattr(exc, "pgcode", None) or ""
    text = str(exc)
    if code == "55P03":
        return RetryLater("a warehouse table was locked by another session past lock_timeout "
                          "(INSERVICE_PG_LOCK_TIMEOUT): nothing was written, run the command again later")
    if code.startswith(("08", "57P")) or (not code and _LINK_LOST.search(text)):
        return RetryLater(f"lost the connection to the PostgreSQL warehouse ({_first_line(exc)}): the transaction in "
                          f"progress was rolled back by the server; run the command again")
    if code.startswith("53"):  # disk full, out of memory, too many connections
        return RetryLater(f"the PostgreSQL warehouse is short of resources ({_first_line(exc)}); run the command "
                          f"again later")
    if code.startswith("40"):  # serialization failure, deadlock: the server rolled the transaction back
        return RetryLater(f"the warehouse rolled the transaction back ({_first_line(exc)}); run the command again")
    return None


def explain(exc: BaseException, home: Path | None = None) -> OperatorError | None:
    """The one line an operator needs for `exc`, or None when it is not a known kind of failure."""
    if isinstance(exc, OperatorError):
        return exc
    module = type(exc).__module__.split(".", 1)[0]
    if module in ("duckdb", "_duckdb"):
        return _duckdb_error(exc)
    if module == "psycopg2":
        return _pg_error(exc)
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return _os_error(exc, home)
    return None


class _LogFile(logging.Handler):
    """Appends to $INSERVICE_HOME/logs/inservice.log; a home it cannot write to loses only the log."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.written = False
        self.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = private(self.format(record)) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(text)
            self.written = True
        except Exception:  # noqa: S110 - a full or read-only disk: the one line on stderr still goes out
            pass


class _Stderr(logging.StreamHandler):
    def __init__(self, stream: object, one_line: bool = True) -> None:
        super().__init__(stream)
        self.one_line = one_line

    def format(self, record: logging.LogRecord) -> str:
        text = private(super().format(record))
        # a warning is one line on the terminal, whatever a library's message held (the log keeps it whole)
        return " ".join(text.split()) if self.one_line else text


def _warnings_only(record: logging.LogRecord) -> bool:
    """Without -v, stderr shows the code's warnings (one line each), never a failure's traceback, nor a
    warning marked `log_only` (a consequence of the failure the one line already reports)."""
    return record.name != RUN_LOG.name and not getattr(record, "log_only", False)


def log_path(home: Path) -> Path:
    return home / "logs" / "inservice.log"


def _stdout_gone() -> bool:
    """Has the reader of our stdout closed its end (rather than some other pipe broken)?"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # not a file (tests' StringIO): ask the stream itself
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            return True
        return False


def _silence_stdout() -> None:
    """The reader left: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run(command: Callable[[], int], home: Path | None, verbose: bool = False, argv: list[str] | None = None) -> int:
    """Run one CLI command: its exit code, or one line on stderr and 1/75 for a failure."""
    verbose = verbose or os.environ.get("INSERVICE_DEBUG", "") not in ("", "0")
    handlers: list[logging.Handler] = []
    logfile = _LogFile(log_path(home)) if home is not None else None
    if logfile is not None:
        handlers.append(logfile)
    stderr = _Stderr(sys.stderr, one_line=not verbose)
    if verbose:
        stderr.setLevel(logging.DEBUG)
    else:
        stderr.setLevel(logging.WARNING)
        stderr.setFormatter(logging.Formatter("inservice: warning: %(message)s"))
        stderr.addFilter(_warnings_only)
    handlers.append(stderr)
    if logfile is not None and not verbose:
        logfile.setLevel(logging.WARNING)
    for h in handlers:
        LOG.addHandler(h)
    level = LOG.level
    LOG.setLevel(logging.DEBUG if verbose else logging.WARNING)
    started = time.monotonic()
    try:
        return command()
    except BrokenPipeError:
        if _stdout_gone():
            _silence_stdout()
            return EX_SIGPIPE
        return _fail(ConnectionError("a connection was closed by its other end (broken pipe)"), home, logfile,
                     verbose, argv, started)
    except KeyboardInterrupt:
        print("inservice: interrupted (nothing half-written: an interrupted transaction is not committed)",
              file=sys.stderr)
        return 130
    except Exception as exc:
        return _fail(exc, home, logfile, verbose, argv, started)
    finally:
        for h in handlers:
            LOG.removeHandler(h)
        LOG.setLevel(level)


def _command_line(argv: list[str] | None) -> str:
    """The arguments as they may be logged: a `--password` value never."""
    words = list(argv or [])
    for i, w in enumerate(words):
        if w.startswith("--password="):
            words[i] = "--password=***"
        elif w == "--password" and i + 1 < len(words):
            words[i + 1] = "***"
    return " ".join(words)


def _fail(exc: BaseException, home: Path | None, logfile: _LogFile | None, verbose: bool,
          argv: list[str] | None, started: float) -> int:
    known = explain(exc, home)
    shown = known if known is not None else OperatorError(
        f"internal error ({type(exc).__name__}: {_first_line(exc)})")
    detail = "".join(traceback.format_exception(exc))
    RUN_LOG.error("inservice %s failed after %.1f s: %s\n%s", _command_line(argv), time.monotonic() - started,
              shown.message, detail)
    line = private(shown.message)
    if known is None:  # a bug, not an operating condition: say where the traceback is
        where = logfile.path if logfile is not None and logfile.written else None
        line += f"; details in {where}" if where else "; run with -v for details"
    try:
        print(f"inservice: {line}", file=sys.stderr)
    except (OSError, ValueError):
        pass
    return shown.exit_code
