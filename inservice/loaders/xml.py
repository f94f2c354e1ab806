"""XML (UTF-8 or Big5, as declared) streamed with lxml iterparse against the shipped XSD.

Elements are cleared as they are read, so no tree of the file is ever held: what grows with the file
is its rows as Arrow columns. DTDs, entities and network access are refused (the DOCTYPE itself is
refused earlier as F09). A shape error (XSD) refuses the upload as F07; a well-formedness or encoding
error as F01. A file of SPLIT_MIN_BYTES or more is read as two halves side by side, each in a child
process (`read_xml`).
"""

from __future__ import annotations

import io
import mmap
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from inservice.config import Limits
from inservice.loaders.base import NOT_XML, ROW, RawUpload, UploadRefused, canonical_table, unreadable
from inservice.loaders.isolated import start_isolated
from inservice.schemas.fields import ATTENDANCE, COURSE, RecordType
from inservice.schemas.xsd import schema

BATCH_ROWS = 50_000
ROOT = "Transmission"


class _Collector:
    """Accumulates one record type's elements into Arrow batches: each child's tag and text go into two
    flat lists as the element ends (a dict per record cost more than the parse), and every BATCH_ROWS
    records they become one column per field code at once."""

    def __init__(self, rt: RecordType) -> None:
        self.rt = rt
        self.position = 0  # records before this batch
        self.tags: list[str] = []
        self.texts: list[str | None] = []
        self.counts: list[int] = []  # children per record of this batch
        self.batches: list[pa.Table] = []

    def add(self, element: etree._Element) -> None:
        tag, text = self.tags.append, self.texts.append
        n = 0
        for child in element:  # comments and processing instructions are removed by the parser
            tag(child.tag)
            text(child.text)
            n += 1
        self.counts.append(n)
        if len(self.counts) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        n = len(self.counts)
        if not n:
            return
        owner = np.repeat(np.arange(n, dtype=np.int64), np.asarray(self.counts, dtype=np.int64))
        tags = pa.array(self.tags, pa.string())
        texts = pa.array(self.texts, pa.string())
        columns = {}
        for code in self.rt.codes:
            hit = pc.equal(tags, code).to_numpy(zero_copy_only=False)
            if not hit.any():
                continue
            # each record's element of this code (the XSD allows one), by the record's position
            at = np.full(n, -1, dtype=np.int64)
            at[owner[hit]] = np.arange(int(hit.sum()), dtype=np.int64)
            columns[code] = pc.take(pc.filter(texts, pa.array(hit)), pa.array(at, mask=at < 0))
        rows = pa.array(np.arange(self.position + 1, self.position + n + 1, dtype=np.int64))
        self.batches.append(canonical_table(self.rt, rows, columns))
        self.position += n
        self.tags, self.texts, self.counts = [], [], []

    def table(self) -> pa.Table:
        self.flush()
        if not self.batches:
            return canonical_table(self.rt, pa.array([], pa.int64()), {})
        return pa.concat_tables(self.batches)


def read_xml(path: Path, limits: Limits | None = None) -> RawUpload:
    """The upload's two tables. A large file is read in two halves side by side, each in a child process
    (loaders/isolated.py) when it can be cut safely (`_cut`); a file either half finds wrong is read again
    whole, here, so that its refusal names the error and its line exactly as always."""
    path = Path(path)
    cut = _cut(path) if path.stat().st_size >= SPLIT_MIN_BYTES else None
    if cut is not None:
        try:
            return _read_halves(path, cut, limits or Limits())
        except UploadRefused:
            pass
    return _read(path, str(path))


def _read(path: Path, source: str | io.RawIOBase) -> RawUpload:
    """`source` (the file's name, or a stream of its bytes) read as one upload; `path` names it."""
    collectors = {COURSE.xml_element: _Collector(COURSE), ATTENDANCE.xml_element: _Collector(ATTENDANCE)}
    meta: dict[str, str] = {}
    # the thread's error log still holds an earlier parse's errors, which a syntax error's `error_log`
    # carries: a truncated file was F07 after a file refused F07 in the same thread
    etree.clear_error_log()
    try:
        # resolve_entities="internal" (lxml's default), not False: external entities are never
        # loaded either way, and internal ones need a DOCTYPE, which F09 refuses before parsing.
        # remove_pis: a processing instruction inside a field would cut its text short.
        # With False, lxml 6.2 (libxml2 2.14) reports every syntax error as "no element found
        # (line 0)" and closes the open elements of a truncated file as if it were whole.
        # Only the records' and the root's ends come back to Python (an event per element cost more than
        # the parse); the XSD puts records nowhere but in their containers.
        parser = etree.iterparse(
            source, events=("end",), tag=(ROOT, *collectors), schema=schema(), resolve_entities="internal",
            load_dtd=False, no_network=True, huge_tree=False, remove_comments=True, remove_pis=True,
        )
        complete = False
        for _, element in parser:
            collector = collectors.get(element.tag)
            if collector is None:  # the root, closed: the whole upload was read
                unit = element.get("unit")  # the one attribute read (copying thousands of them is quadratic in lxml)
                meta = {} if unit is None else {"unit": unit}
                complete = True
                continue
            collector.add(element)
            element.clear(keep_tail=False)
            parent = element.getparent()
            while element.getprevious() is not None:
                del parent[0]
        # older lxml with schema= and resolve_entities=False stopped silently at a premature end
        # of file: only a closed root element proves the whole upload was read
        if not complete:
            raise UploadRefused("F01", "XML 檔案不完整（缺少 </Transmission> 結尾）",
                                "the XML is truncated (no closing </Transmission>)")
    except etree.XMLSyntaxError as exc:
        domains = {e.domain for e in exc.error_log} if exc.error_log else set()
        line = f"（第 {exc.lineno} 行）" if exc.lineno else ""
        if etree.ErrorDomains.SCHEMASV in domains:
            raise UploadRefused("F07", f"XML 結構不符 §2.4{line}：{exc.msg}",
                                f"the XML is not of the §2.4 shape (line {exc.lineno}): {exc.msg}") from exc
        # the line helps the partner find it; the parser's words are for the log
        raise unreadable((f"XML 格式錯誤{line}，檔案可能損毀或未完整上傳，請修正或重新匯出後再傳",
                          f"the XML is not well-formed (line {exc.lineno}); it may be damaged or incompletely "
                          "uploaded: correct or export it again and resend"), exc.msg, path.name) from exc
    except (OSError, LookupError, ValueError) as exc:
        raise unreadable(NOT_XML, exc, path.name) from exc
    return RawUpload(collectors["Course"].table(), collectors["Record"].table(), meta=meta)


# --- a large file in two halves ------------------------------------------------------------------------
SPLIT_MIN_BYTES = 8 << 20  # below this, a second process costs more than it saves
_END_RECORD = b"</Record>"


def _cut(path: Path) -> tuple[int, int] | None:
    """Where the file can be cut into two uploads that read as it does: the end of the root's start tag,
    and the end of a `</Record>` near the middle. Only when nothing after the root's start tag is a
    comment, CDATA section, declaration or processing instruction: then every `<` there opens or closes
    an element, and that `</Record>` is a real end tag. The halves are validated against the XSD as the
    whole would be; a cut in the wrong place makes one of them invalid, and the file is read whole."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        root = _root_end(data)
        if root is None or data.find(b"<!", root) >= 0 or data.find(b"<?", root) >= 0:
            return None
        at = data.find(_END_RECORD, max(root, len(data) // 2))
        return None if at < 0 else (root, at + len(_END_RECORD))


def _root_end(data: mmap.mmap) -> int | None:
    """The position after the root element's start tag (the prolog is what limits.py let through)."""
    pos = 3 if data[:3] == b"\xef\xbb\xbf" else 0
    while True:
        while data[pos:pos + 1] in (b" ", b"\t", b"\r", b"\n"):
            pos += 1
        if data[pos:pos + 4] == b"<!--":
            end, skip = data.find(b"-->", pos + 4), 3
        elif data[pos:pos + 2] == b"<?":
            end, skip = data.find(b"?>", pos + 2), 2
        elif data[pos:pos + 1] == b"<" and data[pos + 1:pos + 2] != b"!":
            break
        else:
            return None
        if end < 0:
            return None
        pos = end + skip
    quote = None
    for i in range(pos + 1, min(len(data), pos + 65536)):  # a quoted attribute value may hold '>'
        ch = data[i:i + 1]
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in (b'"', b"'"):
            quote = ch
        elif ch == b">":
            return i + 1
    return None


class _Joined(io.RawIOBase):
    """Byte ranges of the file and literal bytes, read as one stream."""

    def __init__(self, fh: BinaryIO, pieces: list[tuple[int, int] | bytes]) -> None:
        self.fh, self.pieces = fh, pieces

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self.pieces:
            piece = self.pieces[0]
            if isinstance(piece, bytes):
                self.pieces.pop(0)
                if piece:
                    return piece
                continue
            start, end = piece
            if start >= end:
                self.pieces.pop(0)
                continue
            n = end - start if size is None or size < 0 else min(size, end - start)
            self.fh.seek(start)
            chunk = self.fh.read(n)
            if not chunk:  # the file shrank under us: its read will say so
                self.pieces.pop(0)
                continue
            self.pieces[0] = (start + len(chunk), end)
            return chunk
        return b""


def _read_half(path: Path, root: int, cut: int, second: bool) -> tuple[pa.Table, pa.Table, dict[str, str]]:
    """In a child: the first half (the file up to the cut, its open elements closed) or the second (the
    prolog and root start tag, empty courses, then the file from the cut)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        pieces: list[tuple[int, int] | bytes] = (
            [(0, root), b"<Courses/><Attendance>", (cut, size)] if second
            else [(0, cut), b"</Attendance></Transmission>"])
        upload = _read(path, _Joined(fh, pieces))
    return upload.courses, upload.attendance, upload.meta


def _read_halves(path: Path, cut: tuple[int, int], limits: Limits) -> RawUpload:
    what = (f"XML 檔「{path.name}」", f"the XML file '{path.name}'")
    halves = [start_isolated(_read_half, path, *cut, second, limits=limits, what=what) for second in (False, True)]
    try:
        (courses, first, meta), (none, rest, _) = (h.result() for h in halves)
    finally:
        for h in halves:
            h.close()
    if none.num_rows:  # cannot be: the second half's courses are empty by construction
        raise UploadRefused("F07", "XML 結構不符 §2.4", "the XML is not of the §2.4 shape")
    rows = rest.column(ROW)
    rest = rest.set_column(rest.schema.get_field_index(ROW), ROW, pc.add(rows, pa.scalar(first.num_rows, pa.int64())))
    return RawUpload(courses, pa.concat_tables([first, rest]), meta=meta)
