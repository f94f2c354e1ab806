"""The reader's child process (loaders/isolated.py): results, refusals and deaths come back as they should."""

from __future__ import annotations

import errno
import os
import signal
import time

import pyarrow as pa
import pytest

from inservice.config import Limits
from inservice.loaders import isolated as iso
from inservice.loaders.base import UploadRefused

WHAT = ("活頁簿「x.xlsx」", "the workbook 'x.xlsx'")
LIMITS = Limits(reader_seconds=5)


def _tables():
    yield pa.table({"a": ["1", "2"]}), ["note"]
    yield pa.table({"b": list(map(str, range(100_000)))}), []


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_tables_come_back_in_order_and_leave_nothing_behind() -> None:
    before = _open_fds()
    got = list(iso.isolated(_tables, limits=LIMITS, what=WHAT))
    assert [t.num_rows for t, _ in got] == [2, 100_000] and got[0][1] == ["note"]
    assert got[1][0]["b"][99_999].as_py() == "99999"
    assert _open_fds() == before  # the socket and the tables' descriptors are closed (the maps stay)


def test_no_memfd_falls_back_to_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(table):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(iso._TableFd, "write", staticmethod(full))
    assert [t.num_rows for t, _ in iso.isolated(_tables, limits=LIMITS, what=WHAT)] == [2, 100_000]


def _raises(exc: BaseException):
    def produce():
        raise exc
        yield  # a generator

    return produce


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


@pytest.mark.parametrize(("exc", "rule", "text"), [
    (UploadRefused("F07", "缺少工作表", "sheet missing", record="file"), "F07", "sheet missing"),
    (MemoryError(), "F09", "needs more memory than the limit"),
    (Unpicklable(1, 2), "F01", "Unpicklable: 1/2"),
])
def test_what_the_child_raises_is_refused(exc: BaseException, rule: str, text: str) -> None:
    with pytest.raises(UploadRefused) as got:
        list(iso.isolated(_raises(exc), limits=LIMITS, what=WHAT))
    assert got.value.rule == rule and text in (getattr(got.value, "detail", "") or got.value.detail_en)


def _dies(sig: int):
    def produce():
        os.kill(os.getpid(), sig)
        yield None

    return produce


@pytest.mark.parametrize(("sig", "rule", "text"), [
    (signal.SIGABRT, "F09", "memory"), (signal.SIGSEGV, "F01", f"signal {int(signal.SIGSEGV)}"),
])
def test_a_child_that_dies_is_refused(sig: int, rule: str, text: str) -> None:
    with pytest.raises(UploadRefused) as got:
        list(iso.isolated(_dies(sig), limits=LIMITS, what=WHAT))
    assert got.value.rule == rule and text in got.value.detail_en


@pytest.mark.slow
def test_a_child_that_spins_is_stopped() -> None:
    def spin():
        while True:
            pass
        yield

    with pytest.raises(UploadRefused) as got:
        list(iso.isolated(spin, limits=Limits(reader_seconds=1), what=WHAT))
    assert got.value.rule == "F09" and "longer than the limit of 1 s" in got.value.detail_en


# --- nothing of a killed read is left behind ------------------------------------------------------------
KILLED_READER = """
import sys, time
from pathlib import Path
from inservice.config import Limits
from inservice.loaders.excel import _read_both
from inservice.loaders.isolated import isolated

parts = isolated(_read_both, Path(sys.argv[1]), limits=Limits(), what=("x", "x"))
next(parts)  # the course sheet; the child goes on with the attendance sheet, which is never taken
print("ready", flush=True)
time.sleep(600)
"""


def _holding(root: str, marker: bytes) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(folder, name), "rb") as fh:
                    if marker in fh.read():
                        found.append(os.path.join(folder, name))
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after_the_child_sent_its_table", "while_the_child_reads"])
def test_a_killed_read_leaves_no_personal_data(tmp_path, when: str) -> None:
    """kill -9 of the process reading a workbook: no file anywhere in /dev/shm holds a row of it (the
    tables travel in memfds), and a child still reading dies with its parent."""
    import random
    import subprocess
    import sys
    import uuid

    from tests.builders import attendee, course, make_id, write_xlsx

    marker = f"殺除{uuid.uuid4().hex[:12]}"
    rng = random.Random(3)
    rows = 40_000 if when == "while_the_child_reads" else 50
    path = write_xlsx(tmp_path / "T001_201705.xlsx", [course("C1")],
                      [attendee("C1", make_id(rng), name=f"{marker}{i}") for i in range(rows)])
    proc = subprocess.Popen([sys.executable, "-c", KILLED_READER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        assert len(children) == 1
        if when == "after_the_child_sent_its_table":
            deadline = time.monotonic() + 60  # the child exits once it has sent the attendance sheet
            while open(f"/proc/{children[0]}/stat").read().split(") ")[1][0] != "Z" and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{children[0]}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{children[0]}")  # not left reading for a parent that is gone
    assert _holding("/dev/shm", marker.encode()) == []


def test_a_read_sweeps_what_earlier_versions_left(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Folders of IPC files that readers before the memfd ones left behind when killed are removed by
    the next read once older than a read may take; a younger one (a read in progress) is left alone."""
    monkeypatch.setattr(iso, "_SHM", str(tmp_path))
    stale, fresh = tmp_path / "inservice-read-k2j4h1", tmp_path / "inservice-read-x9y8z7"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "tmpab12.arrow").write_bytes(b"ARROW1 A123456789 \xe9\x99\xb3\xe5\xa4\xa7\xe6\x96\x87")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    other = tmp_path / "unrelated"
    other.mkdir()
    os.utime(other, (old, old))
    assert [t.num_rows for t, _ in iso.isolated(_tables, limits=LIMITS, what=WHAT)] == [2, 100_000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inservice-read-x9y8z7", "unrelated"]
