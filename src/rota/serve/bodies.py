"""JSON bodies encoded once per value shown, not once per request; gzip'd once too.

Twenty browsers asking for the same table page in the same second got twenty ``json.dumps`` of
it; :class:`Bodies` keeps the encoded bytes (and their gzip) for as long as the value they encode
is the one the cache hands out (by identity: :class:`rota.serve.cache.StateCache` hands out one
object per snapshot and question). The status carries ``now`` (the server's clock, for the
page's "starts in ..."): it is put in front of the kept bytes per request, and, for gzip, as its
own deflate block ahead of the kept compressed rest (a full flush ends the first block on a byte
boundary with an empty window, so the two streams join into one valid gzip member).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

GZIP_MIN_BYTES = 1024
"""Smaller bodies are sent as they are."""
GZIP_LEVEL = 6
KEPT_MAX = 256
"""Bodies kept at most (the cache's questions: table pages, filters, searches); all are dropped
beyond it."""
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, unknown OS


def dumps(value: Any) -> bytes:
    """Exactly what Starlette's ``JSONResponse`` sends (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def _deflate(data: bytes, mode: int) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush(mode)


class _Body:
    __slots__ = ("sources", "raw", "deflated", "crc")

    def __init__(self, sources: tuple[Any, ...], raw: bytes) -> None:
        self.sources = sources
        self.raw = raw
        self.deflated: bytes | None = None  # the part sent after the "now" head, compressed
        self.crc = 0  # its CRC-32 (the whole body's when there is no head)


class Bodies:
    """Encoded bodies by key (a route and its question), each kept while its ``sources`` (the
    objects it was made from, compared by identity) are the ones given. Used from the event loop
    only (one thread)."""

    def __init__(self) -> None:
        self._kept: dict[Any, _Body] = {}

    def get(self, key: Any, sources: tuple[Any, ...], make: Callable[[], Any], *, gzip: bool,
            now: float | None = None) -> tuple[bytes, bool]:
        """``(body, gzipped)``: the JSON of ``make()`` (an object), encoded when ``sources`` changed,
        with ``"now": now`` first when given; gzip'd when ``gzip`` (the client accepts it) and big."""
        body = self._kept.get(key)
        if body is None or len(body.sources) != len(sources) or any(
                a is not b for a, b in zip(body.sources, sources, strict=True)):
            if len(self._kept) >= KEPT_MAX:
                self._kept.clear()
            body = self._kept[key] = _Body(sources, dumps(make()))
        raw = body.raw
        head = b""
        if now is not None:
            head = b'{"now":' + dumps(now) + (b"," if raw != b"{}" else b"")
            raw = raw[1:]
        if not gzip or len(body.raw) < GZIP_MIN_BYTES:
            return head + raw, False
        if body.deflated is None:
            body.deflated = _deflate(raw, zlib.Z_FINISH)  # without its "{" when "now" goes in front
            body.crc = zlib.crc32(raw)
        out = _GZIP_HEADER + body.deflated
        crc = body.crc
        if head:
            out = _GZIP_HEADER + _deflate(head, zlib.Z_FULL_FLUSH) + body.deflated
            crc = zlib.crc32(raw, zlib.crc32(head))  # ~20 us for 64 KB
        return out + struct.pack("<II", crc, (len(head) + len(raw)) & 0xFFFFFFFF), True
