"""What the end-to-end ingest benches share: a warehouse with the unit registered, one upload timed as
`inservice ingest` does it in-process (open, ingest, close) with the analysts' refresh timed apart (it is
another piece of work's), peak memory of a run in a child process, and the whole CLI process.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from inservice.config import Settings
from inservice.ingest import Ingestor
from inservice.validations.national_id import LETTER_VALUES
from inservice.warehouse.analyst import refresh_after_commit
from inservice.warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parents[1]
RECEIVED = "2017-06-03T10:00:00+08:00"


def make_id(rng: random.Random) -> str:
    """A national ID with its check digit (spec §4), first letter and sex digit at random."""
    body = f"{rng.choice('ABCDEFGHJKLMNPQRSTUVXYWZIO')}{rng.choice('12')}{rng.randrange(10**7):07d}"
    v = LETTER_VALUES[body[0]]
    total = v // 10 + (v % 10) * 9 + sum(int(c) * w for c, w in zip(body[1:], (8, 7, 6, 5, 4, 3, 2, 1), strict=True))
    return body + str((10 - total % 10) % 10)


def prepare(home: Path, unit: str = "T001") -> Settings:
    """A warehouse with the unit registered (creating the tables is not part of an upload's ingest)."""
    settings = Settings.from_env(home)
    with Warehouse(settings) as wh:
        wh.add_unit(unit, "bench", "file", "production", date(2016, 1, 1))
    return settings


def cpu_seconds() -> float:
    """CPU time so far of this process (every thread) and of its children that ended (a reader's child
    processes, mdb-export): on a shared machine under load, wall time is mostly waiting for a core, and
    the CPU time says how much work each side did."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Timed:
    receipt: dict
    ingest: float  # open the warehouse, every check and rule, the merge, the receipts, close
    refresh: float  # the analysts' access refreshed after the commit (timed apart)
    cpu: float  # CPU seconds of `ingest` (every thread and child process)


def timed_ingest(path: Path, settings: Settings, received: str = RECEIVED) -> Timed:
    """One upload into the warehouse at `settings`, as `inservice ingest` does it in its process."""
    start, cpu0 = time.perf_counter(), cpu_seconds()
    wh = Warehouse(settings)
    try:
        receipt = Ingestor(settings, wh).ingest(path, received)
        loaded, cpu1 = time.perf_counter(), cpu_seconds()
        refresh_after_commit(wh, settings)
        refreshed, cpu2 = time.perf_counter(), cpu_seconds()
    finally:
        wh.close()
    closed, cpu3 = time.perf_counter(), cpu_seconds()
    return Timed(receipt, (loaded - start) + (closed - refreshed), refreshed - loaded,
                 (cpu1 - cpu0) + (cpu3 - cpu2))


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (`cpu_seconds`) of `work()`."""
    start, cpu0 = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - start, cpu_seconds() - cpu0


def peak_rss_mib() -> float:
    """This process's peak resident set: VmHWM, its memory's own high-water mark (ru_maxrss would carry
    over the peak of the process that started this one, across exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def children_peak_rss_mib() -> float:
    """The largest peak resident set of this process's finished children (a reader's child processes,
    forked: the pages they share with this one count in it too, so this is an upper bound)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def child_json(script: Path, *args: str) -> dict:
    """Run `script --child ARGS` in a fresh interpreter; its last line of output is a JSON object."""
    out = subprocess.run([sys.executable, str(script), "--child", *args], env=_env(), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cli_ingest(path: Path, home: Path, received: str = RECEIVED) -> tuple[float, dict]:
    """The whole `inservice ingest` process (start-up, ingest, analysts' refresh): seconds, receipt."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "inservice.cli", "--home", str(home), "ingest", "--json",
                          "--received-at", received, str(path)], env=_env(), check=True, capture_output=True,
                         text=True).stdout
    return time.perf_counter() - start, json.loads(out.strip().splitlines()[-1])


def startup_seconds() -> float:
    """`inservice --help`: the CLI's start-up alone."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "inservice.cli", "--help"], env=_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def _env() -> dict[str, str]:
    """This checkout's code first (a bench runs from a worktree, the editable install is main's)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
