"""teacher_key = HMAC-SHA256(key, normalised national ID): the only form of a teacher in the warehouse."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pyarrow.compute as pc


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        self._inner = hashlib.sha256()
        self._outer = hashlib.sha256()
        block = key if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._inner.update(bytes(b ^ 0x36 for b in block))
        self._outer.update(bytes(b ^ 0x5C for b in block))
        self._key = key

    def one(self, national_id: str) -> str:
        return hmac.new(self._key, national_id.encode("ascii"), hashlib.sha256).hexdigest()

    def keys(self, ids: pa.Array) -> pa.Array:
        """Vector of hex keys; each distinct ID is hashed once (teachers repeat across rows)."""
        encoded = pc.dictionary_encode(ids)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        out = []
        for value in encoded.dictionary.to_pylist():
            inner = self._inner.copy()
            inner.update(value.encode("ascii"))
            outer = self._outer.copy()
            outer.update(inner.digest())
            out.append(outer.hexdigest())
        return pc.take(pa.array(out, pa.string()), encoded.indices)
