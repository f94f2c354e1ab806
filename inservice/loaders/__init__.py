"""One reader per format, each yielding the same canonical Arrow tables (see base.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from inservice.config import Limits
from inservice.loaders.base import RawUpload, UploadRefused
from inservice.schemas.filenames import FILE_EXTENSIONS


def reader_for(ext: str, limits: Limits | None = None) -> Callable[[Path], RawUpload]:
    """The reader of a file extension; `limits` for those that read in child processes."""
    if ext in (".xlsx", ".xls"):
        from inservice.loaders.excel import read_excel

        return read_excel
    if ext == ".xml":
        from inservice.loaders.xml import read_xml

        return partial(read_xml, limits=limits)
    if ext in (".mdb", ".accdb"):
        from inservice.loaders.access import read_access

        return read_access
    raise UploadRefused("F02", f"不支援的副檔名 {ext}", f"unsupported extension {ext}")


__all__ = ["FILE_EXTENSIONS", "RawUpload", "UploadRefused", "reader_for"]
