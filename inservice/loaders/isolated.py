"""Native readers run in a forked child under a memory and a CPU-time limit.

calamine (through fastexcel) aborts the whole process when a workbook asks for more memory than it
can have: one stray cell at XFD1048576, an .xls that declares 2^32 rows, a zip whose parts inflate far
past what its directory declares. No exception can catch an abort, and some shapes spin for minutes
instead. In a child, such a file takes down the child alone and is refused (F09: over the limits);
the parent, its warehouse transaction and its run go on. Results come back in the order the reader
yields them, so the parent can work on the first while the child reads the next: pickled through a
Unix socket, Arrow tables as IPC files in anonymous memory (memfd) whose descriptors travel with the
message and which the parent maps (no copy through the socket). A memfd has no name: whoever is
killed, no table of raw IDs and names is left behind (earlier versions left
/dev/shm/inservice-read-* folders; a read sweeps those that are stale).
"""

from __future__ import annotations

import ctypes
import faulthandler
import glob
import os
import pickle
import resource
import select
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import pyarrow as pa

from inservice.config import Limits
from inservice.loaders.base import UploadRefused, unreadable

_HEADER = struct.Struct("<Q")


def isolated(produce: Callable[..., Iterator[Any]], *args: Any, limits: Limits,
             what: tuple[str, str]) -> Generator[Any, None, None]:
    """Iterate `produce(*args)` as run in a child. Exceptions it raises are raised here (pickled); a
    child that runs out of memory or time is F09, one that dies otherwise F01. `what` names the file
    in the messages (Chinese, English)."""
    yield from Child(produce, args, limits, what).results()


def run_isolated(work: Callable[..., Any], *args: Any, limits: Limits, what: tuple[str, str]) -> Any:
    """`work(*args)`'s result, computed in a child as `isolated` does."""
    return start_isolated(work, *args, limits=limits, what=what).result()


def start_isolated(work: Callable[..., Any], *args: Any, limits: Limits, what: tuple[str, str]) -> Child:
    """`work(*args)` started in a child now (several can run side by side); `.result()` waits for it,
    `.close()` ends it if still running (call one of them)."""
    return Child(lambda *a: iter([work(*a)]), args, limits, what)


class Child:
    """One forked child running `produce(*args)` (see `isolated`), forked on creation."""

    def __init__(self, produce: Callable[..., Iterator[Any]], args: tuple, limits: Limits,
                 what: tuple[str, str]) -> None:
        sweep_stale(limits)
        self.limits, self.what = limits, what
        self.sock, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent = os.getpid()
        # a child that outlives a killed parent would hold its tables until its time runs out: it is told
        # to die with the parent when the forking thread is the main one (the signal follows the thread)
        die_with_parent = threading.current_thread() is threading.main_thread()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            self.sock.close()
            _child(child_end, produce, args, limits, parent if die_with_parent else None)
        child_end.close()
        # the CPU limit stops a busy child first; this one, one that waits (or a machine under load)
        self.deadline = time.monotonic() + _wall_seconds(limits)
        self.status: int | None = None

    def results(self) -> Generator[Any, None, None]:
        limits, what = self.limits, self.what
        try:
            while True:
                kind, value = _receive(self.sock, self.deadline)
                if kind == "item":
                    yield value  # its tables mapped by _receive
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
            self.status = _reap(self.pid)
            raise _classify(self.status, limits, what) from None
        finally:
            self.close()

    def result(self) -> Any:
        """The one item a `start_isolated` child produces."""
        parts = self.results()
        try:
            return next(parts)
        finally:
            parts.close()

    def close(self) -> None:
        """The socket closed (tables sent and not taken go with it) and the child reaped, killed first
        if still running."""
        self.sock.close()
        if self.status is None:
            self.status = _reap(self.pid)


class _ChildGone(Exception):
    pass


def _wall_seconds(limits: Limits) -> float:
    return 2 * limits.reader_seconds + 5


def _child(sock: socket.socket, produce: Callable[..., Iterator[Any]], args: tuple, limits: Limits,
           parent: int | None) -> None:
    try:
        try:
            if parent is not None:
                _die_with(parent)
            _quiet()
            _limit(limits)
            for item in produce(*args):
                fds: list[int] = []
                message = ("item", _outward(item, fds))
                try:
                    _send(sock, message, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            _send(sock, ("end", None))
        except MemoryError:
            _send(sock, ("memory", None))
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
            try:
                pickle.loads(pickle.dumps(exc))
                _send(sock, ("raise", exc))
            except Exception:  # an exception that does not pickle and unpickle: its text
                _send(sock, ("error", f"{type(exc).__name__}: {exc}"))
    finally:
        os._exit(0)


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """SIGKILL this child when its parent dies (Linux); a parent already gone: exit now."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the child ends when its time runs out
        return
    if os.getppid() != parent:
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


class _TableFd:
    """An Arrow table the child wrote as an IPC file into a memfd: anonymous memory, named nowhere,
    freed when the last process holding it ends. Its descriptor travels beside the pickled message
    (SCM_RIGHTS); the parent maps it instead of receiving a pickled copy (a 200,000-row sheet: ~0.1 s
    less). Pickled, it is only the descriptor's position in the message's list."""

    def __init__(self, index: int) -> None:
        self.index = index

    @staticmethod
    def write(table: pa.Table) -> int:
        fd = os.memfd_create("inservice-read", os.MFD_CLOEXEC)
        try:
            with os.fdopen(fd, "wb", closefd=False) as fh, pa.ipc.new_file(fh, table.schema) as writer:
                writer.write_table(table)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def load(self, fds: list[int]) -> pa.Table:
        with pa.memory_map(f"/proc/self/fd/{fds[self.index]}") as source:  # the mapping keeps the memory
            return pa.ipc.open_file(source).read_all()


def _outward(item: Any, fds: list[int]) -> Any:
    if isinstance(item, pa.Table) and hasattr(os, "memfd_create"):
        try:
            fds.append(_TableFd.write(item))
        except OSError:  # out of memory for it, or of descriptors: through the socket instead
            return item
        return _TableFd(len(fds) - 1)
    if isinstance(item, tuple):
        return tuple(_outward(x, fds) for x in item)
    return item


def _inward(item: Any, fds: list[int]) -> Any:
    if isinstance(item, _TableFd):
        return item.load(fds)
    if isinstance(item, tuple):
        return tuple(_inward(x, fds) for x in item)
    return item


# A message: one byte carrying its descriptors (none for most), then the length and the pickle.
_MAX_FDS = 16


def _send(sock: socket.socket, message: tuple, fds: Sequence[int] = ()) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [b"F"], list(fds))
    else:
        sock.sendall(b"-")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _receive(sock: socket.socket, deadline: float) -> tuple[str, Any]:
    _wait(sock, deadline)
    marker, fds, _, _ = socket.recv_fds(sock, 1, _MAX_FDS)
    if not marker:
        raise _ChildGone
    try:
        size = _HEADER.unpack(_read_exact(sock, _HEADER.size, deadline))[0]
        kind, value = pickle.loads(_read_exact(sock, size, deadline))
        return kind, (_inward(value, fds) if fds else value)
    finally:
        for fd in fds:
            os.close(fd)


def _wait(sock: socket.socket, deadline: float) -> None:
    if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
        raise _ChildGone  # out of time: the child is killed and classified


def _read_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < size:
        _wait(sock, deadline)
        chunk = sock.recv(min(size - len(out), 1 << 20))
        if not chunk:
            raise _ChildGone
        out += chunk
    return bytes(out)


# --- what earlier versions left in /dev/shm --------------------------------------------------------------
_SHM = "/dev/shm"
_LEGACY = "inservice-read-*"


def sweep_stale(limits: Limits) -> list[str]:
    """Remove the folders of IPC files that readers before the memfd ones left in /dev/shm when they
    were killed (every row's raw ID and name). A folder is stale once older than the longest a read
    may take: one still in use by an older process mid-upgrade is left alone. Returns those removed."""
    removed = []
    cutoff = time.time() - _wall_seconds(limits) - 60
    for folder in glob.glob(os.path.join(glob.escape(_SHM), _LEGACY)):
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if st.st_uid == os.getuid() and st.st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


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
