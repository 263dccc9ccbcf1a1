"""Bounded reads (rotator/cloudflare/bounded.py): size after decompression, JSON depth."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from cloudflare_sim.certs import gzip_bomb
from rotator.cloudflare.bounded import BoundedBody, MalformedAnswer, loads


def feed(body: BoundedBody, data: bytes, chunk: int = 65536) -> bytes:
    for i in range(0, len(data), chunk):
        body.feed(data[i : i + chunk])
    return body.finish()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [(None, bytes), ("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", bytes)],
)
def test_a_body_within_the_limit_comes_back_decoded(encoding: str | None, encode: type) -> None:
    document = b'{"keys": [{"kid": "a"}, {"kid": "b"}]}' * 100
    assert feed(BoundedBody(encoding, limit=len(document)), encode(document)) == document


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip_bomb(1 << 30)  # 1 MB that is 1 GiB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(MalformedAnswer, match="larger than 1048576 bytes"):
            feed(BoundedBody("gzip", limit=1 << 20), bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peaked at {peak / 1e6:.0f} MB"


def test_an_encoding_not_asked_for_and_a_corrupt_stream_are_refused() -> None:
    with pytest.raises(MalformedAnswer, match="not asked for"):
        BoundedBody("br")
    with pytest.raises(MalformedAnswer, match="corrupt"):
        feed(BoundedBody("gzip"), b"not gzip at all")


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_json_deeper_than_the_limit_is_malformed_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(MalformedAnswer, match="nested deeper than 32"):
        loads("[" * depth + "]" * depth)


def test_json_within_the_limit_and_not_json() -> None:
    assert loads(b'{"a": [[{"b": 1}]]}') == {"a": [[{"b": 1}]]}
    assert loads("[" * 32 + "]" * 32) is not None
    with pytest.raises(MalformedAnswer, match="not JSON"):
        loads(b"<html>")
    with pytest.raises(MalformedAnswer, match="not JSON"):
        loads(b"\xff\xfe")
