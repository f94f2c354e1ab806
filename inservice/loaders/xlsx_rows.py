"""Rows a workbook's reader would merge without a word: two `<row r="N">` elements with one number.

calamine (through fastexcel) places each row by its `r` attribute, so a second row 2 overwrites or
merges into the first and one partner row is silently gone. The sheet's XML is scanned for its row
numbers as a stream (constant memory, ~0.1 s for a 200,000-row sheet here); the reader itself is not
asked, as it cannot tell.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from inservice.loaders.base import UploadRefused

_CHUNK = 1 << 20
# a row element's start tag and its r attribute. The pattern starts with the literal "row", which
# the regex engine skips to fast (5x faster than one that starts at "<"); text holding `row r="2"`
# matches it too, so a repeat it finds is confirmed by a scan that wants "<row" or "<prefix:row".
# Not <rowBreaks>; not a <row> without a number (it follows the previous row and repeats none).
_ROW = re.compile(rb"""row\s[^>]*?\br\s*=\s*["'](\d+)["']""")
_REL_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_STRICT_REL_ID = "{http://purl.oclc.org/ooxml/officeDocument/relationships}id"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def sheet_parts(book: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name → the zip member holding its XML (xl/workbook.xml and its relationships)."""
    workbook = "xl/workbook.xml"
    rels = {}
    for el in ElementTree.fromstring(book.read("xl/_rels/workbook.xml.rels")).iter():
        if _local(el.tag) == "Relationship":
            target = el.get("Target", "")
            rels[el.get("Id")] = (target.lstrip("/") if target.startswith("/")
                                  else posixpath.normpath(posixpath.join(posixpath.dirname(workbook), target)))
    out = {}
    for el in ElementTree.fromstring(book.read(workbook)).iter():
        if _local(el.tag) == "sheet":
            rid = el.get(_REL_ID) or el.get(_STRICT_REL_ID)
            if rid in rels:
                out[el.get("name", "")] = rels[rid]
    return out


def _row_numbers(book: zipfile.ZipFile, member: str, confirmed: bool) -> list[int]:
    numbers: list[int] = []
    carry = b""
    with book.open(member) as fh:
        while True:
            chunk = fh.read(_CHUNK)
            data = carry + chunk
            cut = data.rfind(b"<") if chunk else len(data)  # a tag may straddle chunks: keep the last
            if cut < 0:
                carry = data[-256:]
                continue
            if confirmed:
                numbers += [int(m[1]) for m in _ROW.finditer(data, 0, cut) if _is_tag(data, m.start())]
            else:
                numbers += map(int, _ROW.findall(data, 0, cut))
            carry = data[cut:]
            if not chunk:
                return numbers


def _is_tag(data: bytes, at: int) -> bool:
    """`row` at `at` is an element's name: right after "<", or after "<prefix:"."""
    if at and data[at - 1] == 0x3C:  # <
        return True
    if not at or data[at - 1] != 0x3A:  # :
        return False
    lt = data.rfind(b"<", 0, at)
    return lt >= 0 and re.fullmatch(rb"[A-Za-z_][\w.-]*", data[lt + 1:at - 1]) is not None


def _first_repeat(numbers: list[int]) -> int | None:
    if len(set(numbers)) == len(numbers):
        return None
    seen: set[int] = set()
    for n in numbers:
        if n in seen:
            return n
        seen.add(n)
    return None


def repeated_row(book: zipfile.ZipFile, member: str) -> int | None:
    """The first row number that two row elements of this sheet carry, or None."""
    if _first_repeat(_row_numbers(book, member, confirmed=False)) is None:
        return None  # the fast scan finds every row (and perhaps some text): no repeat at all
    return _first_repeat(_row_numbers(book, member, confirmed=True))


def refuse_repeated_rows(path: Path, sheets: list[str]) -> None:
    """F01 when a sheet of this .xlsx holds two rows with one row number. A workbook whose parts
    cannot be found this way is left to the reader (which refuses what it cannot open)."""
    try:
        book = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return
    with book:
        try:
            parts = sheet_parts(book)
        except (KeyError, ElementTree.ParseError):
            return
        for sheet in sheets:
            member = parts.get(sheet)
            if member is None or member not in book.NameToInfo:
                continue
            row = repeated_row(book, member)
            if row is not None:
                raise UploadRefused("F01", f"工作表「{sheet}」有兩個第 {row} 列（檔案已損毀：其中一列會被覆蓋）",
                                    f"sheet '{sheet}' holds row {row} twice (a corrupt file: one of them would be "
                                    "lost)")
