"""Failures an operator can act on: one line that says what failed and what to do.

Raise an `OperatorError` (or a subclass) wherever the code knows what went wrong; the `inservice`
command prints `inservice: <message>` on stderr, without a traceback, and exits with `exit_code`.
`RetryLater` is for conditions that clear by themselves (a lock, a lost connection, a full disk
once space is freed): exit 75 (EX_TEMPFAIL), which schedulers and Dagster's retry policy retry.
Failures raised by libraries (OSError, DuckDB, psycopg2) are translated by `inservice.failures`.
"""

from __future__ import annotations

EX_TEMPFAIL = 75  # sysexits.h: temporary failure, the same command may succeed later


class OperatorError(Exception):
    """A failure with a one-line message for the person at the terminal (no traceback)."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        # one line, whatever the cause's text held: the first line of stderr is the whole message
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


class RetryLater(OperatorError):
    """Retrying later can help: the warehouse is busy, a server is unreachable, a disk is full."""

    exit_code = EX_TEMPFAIL
