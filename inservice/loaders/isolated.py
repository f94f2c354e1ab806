"""Native readers run in a forked child under a memory and a CPU-time limit.

calamine (through fastexcel) aborts the whole process when a workbook asks for more memory than it
can have: one stray cell at XFD1048576, an .xls that declares 2^32 rows, a zip whose parts inflate far
past what its directory declares. No exception can catch an abort, and some shapes spin for minutes
instead. In a child, such a file takes down the child alone and is refused (F09: over the limits);
the parent, its warehouse transaction and its run go on. Results come back in the order the reader
yields them, so the parent can work on the first while the child reads the next: pickled through a
pipe, Arrow tables as IPC files in /dev/shm that the parent maps (no copy through the pipe).
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from inservice.config import Limits
from inservice.loaders.base import UploadRefused, unreadable

_HEADER = struct.Struct("<Q")


def isolated(produce: Callable[..., Iterator[Any]], *args: Any, limits: Limits,
             what: tuple[str, str]) -> Iterator[Any]:
    """Iterate `produce(*args)` as run in a child. Exceptions it raises are raised here (pickled); a
    child that runs out of memory or time is F09, one that dies otherwise F01. `what` names the file
    in the messages (Chinese, English)."""
    folder = tempfile.mkdtemp(prefix="inservice-read-", dir=_SHM)  # the child's tables; removed below
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(write_end, produce, args, limits, folder)
    os.close(write_end)
    # the CPU limit stops a busy child first; this one, one that waits (or a machine under load)
    deadline = time.monotonic() + 2 * limits.reader_seconds + 5
    status: int | None = None
    try:
        while True:
            kind, value = _receive(read_end, deadline)
            if kind == "item":
                yield _inward(value)
            elif kind == "raise":
                raise value
            elif kind == "end":
                return
            elif kind == "memory":
                raise _over_memory(limits, what)
            else:
                raise unreadable((f"{what[0]}無法讀取（可能損毀或未完整上傳），請重新匯出後再傳",
                                  f"{what[1]} cannot be read (it may be damaged or incompletely uploaded); "
                                  "export it again and resend"), value)
    except _ChildGone:
        status = _reap(pid)
        raise _classify(status, limits, what) from None
    finally:
        os.close(read_end)
        if status is None:
            _reap(pid)
        shutil.rmtree(folder, ignore_errors=True)  # what a stopped child wrote, or the parent left unread


def run_isolated(work: Callable[..., Any], *args: Any, limits: Limits, what: tuple[str, str]) -> Any:
    """`work(*args)`'s result, computed in a child as `isolated` does."""
    parts = isolated(lambda *a: iter([work(*a)]), *args, limits=limits, what=what)
    try:
        return next(parts)
    finally:
        parts.close()


class _ChildGone(Exception):
    pass


def _child(fd: int, produce: Callable[..., Iterator[Any]], args: tuple, limits: Limits, folder: str) -> None:
    try:
        try:
            _quiet()
            _limit(limits)
            for item in produce(*args):
                _send(fd, ("item", _outward(item, folder)))
            _send(fd, ("end", None))
        except MemoryError:
            _send(fd, ("memory", None))
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
            try:
                pickle.loads(pickle.dumps(exc))
                _send(fd, ("raise", exc))
            except Exception:  # an exception that does not pickle and unpickle: its text
                _send(fd, ("error", f"{type(exc).__name__}: {exc}"))
    finally:
        os._exit(0)


def _quiet() -> None:
    """A native abort prints its message and backtrace (and faulthandler, where a parent enabled it,
    a Python one): the refusal says what happened instead."""
    faulthandler.disable()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _limit(limits: Limits) -> None:
    """The memory limit is on top of what the child inherits from its parent at the fork; limits the
    parent already runs under (a smaller hard limit) stay."""
    with open("/proc/self/statm") as fh:
        inherited = int(fh.read().split()[0]) * resource.getpagesize()
    for kind, want in ((resource.RLIMIT_AS, inherited + limits.reader_memory_bytes),
                       (resource.RLIMIT_CPU, limits.reader_seconds), (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(kind)[1]
        if hard == resource.RLIM_INFINITY:  # CPU: SIGXCPU at the soft limit, SIGKILL a second later
            hard = want + 1 if kind == resource.RLIMIT_CPU else want
        resource.setrlimit(kind, (min(want, hard), hard))


class _TableFile:
    """An Arrow table the child wrote as an IPC file in memory-backed storage: the parent maps it
    instead of receiving a pickled copy through the pipe (a 200,000-row sheet: ~0.1 s less)."""

    def __init__(self, table: pa.Table, folder: str) -> None:
        fd, self.path = tempfile.mkstemp(suffix=".arrow", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh, pa.ipc.new_file(fh, table.schema) as writer:
                writer.write_table(table)
        except BaseException:
            os.unlink(self.path)
            raise

    def load(self) -> pa.Table:
        try:
            with pa.memory_map(self.path) as source:
                return pa.ipc.open_file(source).read_all()
        finally:
            os.unlink(self.path)


_SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _outward(item: Any, folder: str) -> Any:
    if isinstance(item, pa.Table):
        try:
            return _TableFile(item, folder)
        except OSError:  # /dev/shm full (a container's is often 64 MiB): through the pipe instead
            return item
    if isinstance(item, tuple):
        return tuple(_outward(x, folder) for x in item)
    return item


def _inward(item: Any) -> Any:
    if isinstance(item, _TableFile):
        return item.load()
    if isinstance(item, tuple):
        return tuple(_inward(x) for x in item)
    return item


def _send(fd: int, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int, deadline: float) -> tuple[str, Any]:
    size = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))[0]
    return pickle.loads(_read_exact(fd, size, deadline))


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < size:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise _ChildGone  # out of time: the child is killed and classified
        chunk = os.read(fd, min(size - len(out), 1 << 20))
        if not chunk:
            raise _ChildGone
        out += chunk
    return bytes(out)


def _reap(pid: int) -> int:
    """The child's wait status; a child still running (the parent stopped early, or its time ran out)
    is killed first."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    return status


def _classify(status: int, limits: Limits, what: tuple[str, str]) -> UploadRefused:
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        return UploadRefused("F09", f"{what[0]}讀取超過時間上限 {limits.reader_seconds} 秒",
                             f"reading {what[1]} took longer than the limit of {limits.reader_seconds} s")
    if sig == signal.SIGABRT:  # a native allocation it could not have: Rust aborts
        return _over_memory(limits, what)
    reason = f"signal {sig}" if sig is not None else f"exit {os.WEXITSTATUS(status)}"
    return UploadRefused("F01", f"{what[0]}無法讀取（讀取程序中止：{reason}）",
                         f"{what[1]} cannot be read (the reader stopped: {reason})")


def _over_memory(limits: Limits, what: tuple[str, str]) -> UploadRefused:
    mib = limits.reader_memory_bytes // (1 << 20)
    return UploadRefused("F09", f"{what[0]}讀取所需記憶體超過上限 {mib:,} MiB（例如儲存格位置遠超出資料範圍）",
                         f"reading {what[1]} needs more memory than the limit of {mib:,} MiB "
                         "(e.g. a cell far outside the sheet's data)")
