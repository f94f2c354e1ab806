"""National ID and resident certificate numbers (spec §4), checked vectorised over raw bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Letter values of §4 (A=10 … Z=33, with I=34, O=35, W=32, X=30, Y=31, Z=33).
LETTER_VALUES = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                         (10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23, 24, 25, 26, 27,
                          28, 29, 32, 30, 31, 33), strict=True))
# National ID: second digit 1/2; new resident certificate (2021): 8/9; old one: a letter A–D.
SHAPE = r"^[A-Z]([1289]|[A-D])[0-9]{8}$"
_WEIGHTS = np.array([8, 7, 6, 5, 4, 3, 2, 1, 1], dtype=np.int64)  # chars 2..10 (last weight 1)

_letter_table = np.full(256, -1, dtype=np.int64)
for _ch, _v in LETTER_VALUES.items():
    _letter_table[ord(_ch)] = _v


def checksum_ok_scalar(value: str) -> bool:
    """Plain-Python statement of §4, used by tests to cross-check the vectorised version."""
    import re

    if not re.fullmatch(SHAPE[1:-1], value):
        return False
    v = LETTER_VALUES[value[0]]
    second = LETTER_VALUES[value[1]] % 10 if value[1].isalpha() else int(value[1])
    digits = [second, *map(int, value[2:])]
    total = v // 10 * 1 + v % 10 * 9 + sum(d * w for d, w in zip(digits, [8, 7, 6, 5, 4, 3, 2, 1, 1], strict=True))
    return total % 10 == 0


def is_valid(ids: pa.Array) -> pa.Array:
    """True where the (already normalised, upper-cased) ID has a valid shape and checksum; null stays null."""
    shaped = pc.fill_null(pc.match_substring_regex(ids, SHAPE), False)
    result = np.zeros(len(ids), dtype=bool)
    idx = np.flatnonzero(shaped.to_numpy(zero_copy_only=False))
    if len(idx):
        chosen = pc.take(ids, pa.array(idx)).combine_chunks() if isinstance(ids, pa.ChunkedArray) \
            else pc.take(ids, pa.array(idx))
        offsets = np.frombuffer(chosen.buffers()[1], dtype=np.int32, count=len(chosen) + 1,
                                offset=chosen.offset * 4)
        data = np.frombuffer(chosen.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        chars = data.reshape(len(chosen), 10).astype(np.int64)  # all shaped IDs are 10 ASCII bytes
        first = _letter_table[chars[:, 0]]
        second = np.where(chars[:, 1] >= ord("A"), _letter_table[chars[:, 1]] % 10, chars[:, 1] - ord("0"))
        rest = chars[:, 2:] - ord("0")
        digits = np.column_stack([second, rest])
        total = first // 10 + (first % 10) * 9 + digits @ _WEIGHTS
        result[idx] = total % 10 == 0
    return pc.if_else(pc.is_null(ids), pa.scalar(None, pa.bool_()), pa.array(result))


def mask(ids: pa.Array) -> pa.Array:
    """`A12*****89`: first 3 and last 2 characters, the rest starred (receipts only)."""
    n = pc.utf8_length(ids)
    head = pc.utf8_slice_codeunits(ids, 0, 3)
    tail = pc.utf8_slice_codeunits(ids, -2)
    middle = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(n, 5), 0))
    short = pc.less_equal(n, 5)
    return pc.if_else(short, pc.binary_repeat("*", n), pc.binary_join_element_wise(head, middle, tail, ""))
