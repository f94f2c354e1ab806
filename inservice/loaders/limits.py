"""F09: size and shape limits checked before any parser touches the file."""

from __future__ import annotations

import mmap
import re
import zipfile
from pathlib import Path

from inservice.config import Limits
from inservice.loaders.base import UploadRefused


def check_limits(path: Path, ext: str, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise UploadRefused("F09", f"檔案 {size:,} 位元組，超過上限 {limits.max_upload_bytes:,}",
                            f"the file is {size:,} bytes, over the limit of {limits.max_upload_bytes:,}")
    if ext == ".xlsx":
        _check_zip(path, size, limits)
    elif ext == ".xml":
        _check_xml_prolog(path)


def _check_zip(path: Path, size: int, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            inflated = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip at all: the reader refuses it as F01
    if inflated > limits.max_xlsx_inflated_bytes or inflated > limits.max_xlsx_ratio * max(size, 1):
        raise UploadRefused(
            "F09", f"xlsx 解壓後 {inflated:,} 位元組，超過上限（{limits.max_xlsx_inflated_bytes:,} 或檔案大小的 "
            f"{limits.max_xlsx_ratio:g} 倍）",
            f"the xlsx parts inflate to {inflated:,} bytes, over {limits.max_xlsx_inflated_bytes:,} "
            f"or {limits.max_xlsx_ratio:g}x the file size")


def _check_xml_prolog(path: Path) -> None:
    """No DTD may reach the parser (lxml 6.2 crashes on an internal entity under XSD validation), so
    the whole prolog is read, however long, up to the root element: the XML declaration, comments,
    processing instructions and white space pass; a DOCTYPE (or any other `<!`) is F09. §2.4 allows
    UTF-8 and Big5 only, which keep markup as ASCII bytes; a file that does not start with markup in
    them (UTF-16 or -32, EBCDIC, anything else) is F01 before the parser could decode it its own way."""
    with path.open("rb") as fh:
        if fh.read(1) == b"":
            return  # empty: the parser refuses it as F01
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _scan_prolog(data)


_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _scan_prolog(data: mmap.mmap) -> None:
    if _DTD.search(data[: 1 << 20]):  # also in the body's first MiB, where the parser would refuse it anyway
        raise _dtd_refused()
    pos = 3 if data[:3] == b"\xef\xbb\xbf" else 0  # a UTF-8 byte order mark
    while True:
        while pos < len(data) and data[pos:pos + 1] in b" \t\r\n":
            pos += 1
        if data[pos:pos + 1] != b"<" or data[pos + 1:pos + 2] == b"\0":
            raise UploadRefused("F01", "XML 須為 UTF-8 或 Big5 編碼，並以標記開始",
                                "the XML must be encoded in UTF-8 or Big5 and start with markup")
        if data[pos:pos + 4] == b"<!--":
            end, skip = data.find(b"-->", pos + 4), 3
        elif data[pos:pos + 2] == b"<?":
            end, skip = data.find(b"?>", pos + 2), 2
        elif data[pos:pos + 2] == b"<!":
            raise _dtd_refused()
        else:
            return  # the root element: no DTD can follow
        if end < 0:
            return  # an unclosed comment or declaration: the parser refuses it as F01
        pos = end + skip


def _dtd_refused() -> UploadRefused:
    return UploadRefused("F09", "XML 含 DOCTYPE 或實體宣告，不予處理",
                         "the XML declares a DOCTYPE or entities, which are not allowed")
