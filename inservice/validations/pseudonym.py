"""teacher_key = HMAC-SHA256(key, normalised national ID): the only form of a teacher in the warehouse."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pyarrow as pa

_CHUNK = 32_768


class Pseudonymiser:
    """HMAC-SHA256 computed vectorised: HMAC(K, m) = H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m)) (RFC 2104),
    with DuckDB's multi-threaded sha256 — about 2x faster than Python's hmac per ID (bench/)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        block = (key if len(key) <= 64 else hashlib.sha256(key).digest()).ljust(64, b"\0")
        self._ipad = bytes(b ^ 0x36 for b in block)
        self._opad = bytes(b ^ 0x5C for b in block)

    def one(self, national_id: str) -> str:
        return hmac.new(self._key, national_id.encode("ascii"), hashlib.sha256).hexdigest()

    def keys(self, ids: pa.Array) -> pa.Array:
        """Hex keys for a vector of IDs (null stays null), in their order."""
        if isinstance(ids, pa.Array) and len(ids) > _CHUNK:
            # DuckDB scans one Arrow chunk on one thread: in chunks, it hashes on every core
            ids = pa.chunked_array([ids.slice(i, _CHUNK) for i in range(0, len(ids), _CHUNK)], ids.type)
        con = duckdb.connect()
        try:
            con.register("ids", pa.table({"id": ids}))
            out = con.sql("SELECT CASE WHEN id IS NOT NULL THEN sha256(?::BLOB || unhex(sha256(?::BLOB || "
                          "encode(id)))) END AS k FROM ids", params=[self._opad, self._ipad]).to_arrow_table()
        finally:
            con.close()
        return out["k"].combine_chunks()
