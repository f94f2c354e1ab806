"""A feed run's findings on disk: every one goes to the receipt, few stay in memory.

An initial load of millions of rows can have as many findings (a partner column wrong for every
row). They are appended per batch, one JSON line each, to an unnamed temporary file beside the
receipt (gone with the process, even after a crash), and copied from it into the receipt's JSON
and workbook. In memory: the count, the file-level findings (notes, refusals) and the first
`keep` row findings, which `FeedRunner.run` returns as `receipt["findings"]`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

READ_BYTES = 1 << 20


class FindingsSpill:
    """Implements receipts.SpilledFindings. Reads use pread: the receipt writer's thread can read
    while the run goes on (it appends only after that writer is done)."""

    def __init__(self, folder: Path, keep: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)  # O_TMPFILE where the filesystem has it
        self._fd = self._file.fileno()
        self.keep = keep
        self.size = 0
        self.total = 0
        self.rows = 0  # row findings (course or attendance), of which the first `keep` are kept
        self.kept: list[dict] = []  # the sample; the run's receipt["findings"] is this list

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FindingsSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------------------
    def add(self, findings: list[dict]) -> None:
        for f in findings:
            if f.get("record") == "file":
                self.kept.append(f)  # refusals and notes: few, and what callers look for
            else:
                if self.rows < self.keep:
                    self.kept.append(f)
                self.rows += 1
        self._append([json.dumps(f, ensure_ascii=False, default=str) for f in findings])
        self.total += len(findings)

    def add_table(self, findings: pa.Table, slice_rows: int = 10_000) -> None:
        """An Arrow table of findings, a slice at a time (no Python list of the whole batch)."""
        for batch in findings.to_batches(max_chunksize=slice_rows):
            self.add(batch.to_pylist())

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self.size)
            self.size += n
            view = view[n:]

    # --- reading -------------------------------------------------------------------------------------
    def since(self, offset: int) -> SpillPart:
        """The findings added after the spill held `offset` bytes (one commit's)."""
        return SpillPart(self, offset)

    def _chunks(self, start: int = 0) -> Iterator[bytes]:
        at, end = start, self.size
        while at < end:
            chunk = os.pread(self._fd, min(READ_BYTES, end - at), at)
            if not chunk:
                raise OSError(f"findings spill ended at {at} of {end} bytes")
            at += len(chunk)
            yield chunk

    def __iter__(self) -> Iterator[dict]:
        return self.iter_from(0)

    def iter_from(self, start: int = 0) -> Iterator[dict]:
        """The findings from byte `start` of the spill on (0: all of them)."""
        rest = b""
        for chunk in self._chunks(start):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                yield json.loads(line)

    def __len__(self) -> int:
        return self.total

    def write_json_array(self, fh: BinaryIO, start: int = 0) -> None:
        """The findings as the receipt's JSON array (indent 1 at depth 1), one finding per line:
        the lines are copied, never parsed again (compact JSON has no raw newline inside)."""
        if self.size <= start:
            fh.write(b"[]")
            return
        fh.write(b"[\n  ")
        last = b""
        for chunk in self._chunks(start):
            if last:
                fh.write(last.replace(b"\n", b",\n  "))
            last = chunk
        fh.write(last[:-1].replace(b"\n", b",\n  "))  # the file ends with a newline: no comma after it
        fh.write(b"\n ]")


class SpillPart:
    """The findings a spill received after a point (implements receipts.SpilledFindings)."""

    def __init__(self, spill: FindingsSpill, start: int) -> None:
        self.spill = spill
        self.start = start

    def __iter__(self) -> Iterator[dict]:
        return self.spill.iter_from(self.start)

    def write_json_array(self, fh: BinaryIO) -> None:
        self.spill.write_json_array(fh, self.start)


def receipt_findings(json_path: Path) -> Iterator[dict]:
    """The findings of a feed receipt written with a spill, read back a line at a time."""
    with json_path.open("rb") as fh:
        for line in fh:
            if line.startswith(b' "findings": ['):
                if line.rstrip().rstrip(b",").endswith(b"]"):
                    return  # an empty array
                break
        else:
            raise ValueError(f"{json_path} has no findings array")
        for line in fh:
            line = line.strip()
            if line.startswith(b"]"):
                return
            yield json.loads(line.rstrip(b","))
