"""Text folding every layer shares: white space trimmed, full-width forms folded (NFKC).

At the bottom layer so the loaders (an Access row's course code) and the rules (keys, codes,
numbers, dates) fold the same way without the loaders importing the rules.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def clean_text(values: pa.Array) -> pa.Array:
    """Trim white space (full-width space included); empty becomes null. Free text is not folded."""
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def nfkc(values: pa.Array) -> pa.Array:
    """NFKC, skipped when the column is plain ASCII (the usual case for codes: NFKC is costly)."""
    if pc.all(pc.string_is_ascii(values)).as_py() in (True, None):
        return values
    return pc.utf8_normalize(values, "NFKC")


def fold(values: pa.Array) -> pa.Array:
    """Full-width → half-width (NFKC), then clean: for codes, numbers, dates, keys."""
    return clean_text(nfkc(values))
