"""F09: size and shape limits checked before any parser touches the file."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from inservice.config import Limits
from inservice.loaders.base import UploadRefused

_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_FIRST_ELEMENT = re.compile(rb"<[A-Za-z_]")


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
    """A DTD can only stand before the root element: scan the prolog (and a little more)."""
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    # Big5/UTF-8 keep ASCII markup bytes as they are, so a byte scan is enough for the prolog
    first = _FIRST_ELEMENT.search(head)
    prolog = head if first is None else head[: first.start()]
    if _DTD.search(prolog) or _DTD.search(head):
        raise UploadRefused("F09", "XML 含 DOCTYPE 或實體宣告，不予處理",
                            "the XML declares a DOCTYPE or entities, which are not allowed")
