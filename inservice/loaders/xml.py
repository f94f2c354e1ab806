"""XML (UTF-8 or Big5, as declared) streamed with lxml iterparse against the shipped XSD.

Elements are cleared as they are read, so memory stays flat whatever the file size. DTDs,
entities and network access are refused (the DOCTYPE itself is refused earlier as F09).
A shape error (XSD) refuses the upload as F07; a well-formedness or encoding error as F01.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from lxml import etree

from inservice.loaders.base import NOT_XML, RawUpload, UploadRefused, canonical_table, unreadable
from inservice.schemas.fields import ATTENDANCE, COURSE, RecordType
from inservice.schemas.xsd import schema

BATCH_ROWS = 50_000


class _Collector:
    """Accumulates one record type's elements into Arrow batches."""

    def __init__(self, rt: RecordType) -> None:
        self.rt = rt
        self.codes = rt.codes
        self.position = 0
        self.rows: list[int] = []
        self.values: dict[str, list[str | None]] = {c: [] for c in self.codes}
        self.batches: list[pa.Table] = []

    def add(self, element: etree._Element) -> None:
        self.position += 1
        found = {child.tag: child.text for child in element}
        self.rows.append(self.position)
        for code in self.codes:
            self.values[code].append(found.get(code))
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            columns = {c: pa.array(v, pa.string()) for c, v in self.values.items()}
            self.batches.append(canonical_table(self.rt, pa.array(self.rows, pa.int64()), columns))
            self.rows = []
            self.values = {c: [] for c in self.codes}

    def table(self) -> pa.Table:
        self.flush()
        if not self.batches:
            return canonical_table(self.rt, pa.array([], pa.int64()), {})
        return pa.concat_tables(self.batches)


def read_xml(path: Path) -> RawUpload:
    collectors = {COURSE.xml_element: _Collector(COURSE), ATTENDANCE.xml_element: _Collector(ATTENDANCE)}
    meta: dict[str, str] = {}
    try:
        # resolve_entities="internal" (lxml's default), not False: external entities are never
        # loaded either way, and internal ones need a DOCTYPE, which F09 refuses before parsing.
        # remove_pis: a processing instruction inside a field would cut its text short.
        # With False, lxml 6.2 (libxml2 2.14) reports every syntax error as "no element found
        # (line 0)" and closes the open elements of a truncated file as if it were whole.
        parser = etree.iterparse(
            str(path), events=("start", "end"), schema=schema(), resolve_entities="internal",
            load_dtd=False, no_network=True, huge_tree=False, remove_comments=True, remove_pis=True,
        )
        depth = 0
        complete = False
        for event, element in parser:
            if event == "start":
                depth += 1
                if depth == 1:  # the one attribute read (copying thousands of them is quadratic in lxml)
                    unit = element.get("unit")
                    meta = {} if unit is None else {"unit": unit}
                continue
            depth -= 1
            if depth == 0:
                complete = True
            if depth == 2 and element.tag in collectors:
                collectors[element.tag].add(element)
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
