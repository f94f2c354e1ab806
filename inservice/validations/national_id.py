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
# TOKEN is the one ID shape of the project: the A03 check, the C02/A02 rule on other fields
# (normalize.holds_national_id) and the warehouse's check of every text column (warehouse/checks.py).
TOKEN = "[A-Z][1289A-D][0-9]{8}"
SHAPE = f"^{TOKEN}$"
# An ID-shaped token inside any text (an ID typed into another column and quoted in a finding),
# full-width and lower case too; masked as `mask` does, first 3 and last 2 characters kept. Wider
# than TOKEN (any second digit): whatever is refused as holding an ID is masked too.
IN_TEXT = r"([A-Za-zＡ-Ｚａ-ｚ][0-9A-Da-d０-９Ａ-Ｄａ-ｄ][0-9０-９])[0-9０-９]{5}([0-9０-９]{2})"


def mask_in_text(values: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(values, IN_TEXT, r"\1*****\2")


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


def _shaped(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the IDs of valid shape, and their characters as a (k, 10) byte matrix."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    shaped = pc.fill_null(pc.match_substring_regex(ids, SHAPE), False)
    idx = np.flatnonzero(shaped.to_numpy(zero_copy_only=False))
    if not len(idx):
        return idx, np.zeros((0, 10), dtype=np.uint8)
    chosen = ids if len(idx) == len(ids) else pc.take(ids, pa.array(idx))  # usually all of them
    offsets = np.frombuffer(chosen.buffers()[1], dtype=np.int32, count=len(chosen) + 1, offset=chosen.offset * 4)
    data = np.frombuffer(chosen.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return idx, data.reshape(len(chosen), 10)  # all shaped IDs are 10 ASCII bytes


# Each character's share of the §4 checksum, by position: position 0 is the letter (its value's
# tens digit + 9 × its units digit), position 1 a digit or, on old resident certificates, a letter
# (its value's units digit), then digits with weights 7 … 1, 1. The sum of the ten looked-up shares
# is the checksum total, with no per-row arithmetic.
_SHARE = np.zeros((10, 256), dtype=np.int32)
for _ch, _v in LETTER_VALUES.items():
    _SHARE[0, ord(_ch)] = _v // 10 + (_v % 10) * 9
    _SHARE[1, ord(_ch)] = (_v % 10) * 8
for _d in range(10):
    _SHARE[1, ord("0") + _d] = _d * 8
    for _pos, _w in enumerate((7, 6, 5, 4, 3, 2, 1, 1), start=2):
        _SHARE[_pos, ord("0") + _d] = _d * _w


def is_valid(ids: pa.Array) -> pa.Array:
    """True where the (already normalised, upper-cased) ID has a valid shape and checksum; null stays null."""
    return check(ids)[0]


_PLACES = 10 ** np.arange(7, -1, -1, dtype=np.int64)


def check(ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    """`is_valid`, and each valid ID as an int64 (one number per distinct ID; null where not valid):
    cheaper to count and compare than the text."""
    result = np.zeros(len(ids), dtype=bool)
    number = np.zeros(len(ids), dtype=np.int64)
    idx, chars = _shaped(ids)
    if len(idx):
        total = sum(_SHARE[i][chars[:, i]] for i in range(10))
        result[idx] = total % 10 == 0
        # letter, then the second character (a digit or A–D), then eight digits
        head = (chars[:, 0].astype(np.int64) - ord("A")) * 256 + chars[:, 1]
        number[idx] = head * 10**8 + (chars[:, 2:].astype(np.int64) - ord("0")) @ _PLACES
    nulls = pc.is_null(ids)
    valid = pc.if_else(nulls, pa.scalar(None, pa.bool_()), pa.array(result))
    return valid, pc.if_else(pc.fill_null(valid, False), pa.array(number), pa.scalar(None, pa.int64()))


def mask(ids: pa.Array) -> pa.Array:
    """`A12*****89`: first 3 and last 2 characters, the rest starred (receipts only)."""
    n = pc.utf8_length(ids)
    ten = pc.fill_null(pc.equal(n, 10), True)
    # the usual 10-character ID is one slice replacement; other lengths take the general way
    fast = pc.utf8_replace_slice(ids, start=3, stop=8, replacement="*****")
    if pc.all(ten).as_py():
        return fast
    other = pc.invert(ten)
    return pc.replace_with_mask(fast, other, _mask_any(pc.filter(ids, other)))


def _mask_any(ids: pa.Array) -> pa.Array:
    n = pc.utf8_length(ids)
    head = pc.utf8_slice_codeunits(ids, 0, 3)
    tail = pc.utf8_slice_codeunits(ids, -2)
    middle = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(n, 5), 0))
    short = pc.less_equal(n, 5)
    return pc.if_else(short, pc.binary_repeat("*", n), pc.binary_join_element_wise(head, middle, tail, ""))
