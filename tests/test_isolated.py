"""The reader's child process (loaders/isolated.py): results, refusals and deaths come back as they should."""

from __future__ import annotations

import errno
import os
import signal

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


def test_tables_come_back_in_order_and_leave_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(iso, "_SHM", str(tmp_path))
    got = list(iso.isolated(_tables, limits=LIMITS, what=WHAT))
    assert [t.num_rows for t, _ in got] == [2, 100_000] and got[0][1] == ["note"]
    assert got[1][0]["b"][99_999].as_py() == "99999"
    assert list(tmp_path.iterdir()) == []  # the IPC files and their folder are gone


def test_a_full_shared_memory_falls_back_to_the_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self, table, folder):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(iso._TableFile, "__init__", full)
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


def test_a_child_that_spins_is_stopped() -> None:
    def spin():
        while True:
            pass
        yield

    with pytest.raises(UploadRefused) as got:
        list(iso.isolated(spin, limits=Limits(reader_seconds=1), what=WHAT))
    assert got.value.rule == "F09" and "longer than the limit of 1 s" in got.value.detail_en
