"""Bounded reads of answers from outside: their size after decompression, their JSON's depth.

Every answer rotator reads from another host (Cloudflare's API, a team's certs endpoint, a webhook
receiver) is read through this module, so none can make rotator hold more than a known amount of
memory or recurse without bound, whatever it sends:

- ``BoundedBody``: the body decompressed here (gzip, deflate or none), a chunk at a time and never
  more than ``limit`` bytes of output: a gzip bomb (a few hundred KB that expand to gigabytes) is
  refused after ``limit + 1`` bytes of output, not after the gigabytes. Any other
  ``Content-Encoding`` is refused (rotator asks only for ``gzip, deflate``).
- ``loads``: JSON no deeper than ``MAX_DEPTH`` levels (Python's own parser raises RecursionError,
  not ValueError, near a thousand levels: a task that expects ValueError would die of it).

Both raise ``MalformedAnswer`` (a ValueError), which each caller turns into a bad answer of that
endpoint: never a crashed task. The deadline of each request as a whole is the caller's, since
only it knows the request: ``asyncio.timeout`` around the request and this read.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

# Cloudflare's answers and a certs document are a few KB; a webhook receiver's answer is not read
# for its content at all. One MiB is far above any of them and far below what would hurt.
MAX_BODY = 1 << 20
# The certs document is three levels deep, Cloudflare's envelope four or five.
MAX_DEPTH = 32
# The only encodings rotator asks for (``Accept-Encoding``), and so the only ones it accepts.
ACCEPT_ENCODING = "gzip, deflate"


class MalformedAnswer(ValueError):
    """An answer too large once decompressed, in an encoding not asked for, or JSON too deep."""


class BoundedBody:
    """An answer's body, fed its bytes as they arrive (compressed as sent), decompressed here."""

    __slots__ = ("_chunks", "_inflate", "_limit", "_size")

    def __init__(self, content_encoding: str | None, limit: int = MAX_BODY) -> None:
        encoding = (content_encoding or "").strip().lower()
        if encoding in ("", "identity"):
            self._inflate = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib- or gzip-wrapped
        else:
            raise MalformedAnswer(f"the answer's Content-Encoding {encoding[:40]!r} was not asked for")
        self._limit = limit
        self._size = 0
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self._inflate is None:
            self._keep(chunk)
            return
        data = chunk
        try:
            while data:
                # Never more output than can still be kept, plus one byte to know it was too much.
                self._keep(self._inflate.decompress(data, self._limit - self._size + 1))
                data = self._inflate.unconsumed_tail
        except zlib.error:
            raise MalformedAnswer("the answer's compressed body is corrupt") from None

    def finish(self) -> bytes:
        if self._inflate is not None:
            try:
                self._keep(self._inflate.flush())
            except zlib.error:
                raise MalformedAnswer("the answer's compressed body is corrupt") from None
        return b"".join(self._chunks)

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            raise MalformedAnswer(f"the answer is larger than {self._limit} bytes")
        if data:
            self._chunks.append(data)


async def read_bounded(
    chunks: AsyncIterator[bytes], content_encoding: str | None, limit: int = MAX_BODY
) -> bytes:
    """The whole body from its raw (still compressed) chunks, or MalformedAnswer."""
    body = BoundedBody(content_encoding, limit)
    async for chunk in chunks:
        body.feed(chunk)
    return body.finish()


def loads(content: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, with anything but a JSON document of at most ``max_depth`` levels a
    ``MalformedAnswer``."""
    try:
        data = json.loads(content)
    except RecursionError:
        raise MalformedAnswer(f"the answer's JSON is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedAnswer("the answer is not JSON") from exc
    # Iterative, so a deep document cannot make this check recurse either.
    level: list[Any] = [data]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise MalformedAnswer(f"the answer's JSON is nested deeper than {max_depth} levels")
        below: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                below.extend(v for v in value.values() if isinstance(v, dict | list))
            elif isinstance(value, list):
                below.extend(v for v in value if isinstance(v, dict | list))
        level = below
    return data


__all__ = [
    "ACCEPT_ENCODING",
    "MAX_BODY",
    "MAX_DEPTH",
    "BoundedBody",
    "MalformedAnswer",
    "loads",
    "read_bounded",
]
