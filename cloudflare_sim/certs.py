"""The team certs endpoint's misbehaviours, and which generation of keys it serves when.

Cloudflare publishes a rotated key at ``https://<team>/cdn-cgi/access/certs`` through its edge and
caches, so what an application sees can trail the rotation, stop following it, fail, or be
mangled. Each is a ``CertsFault``; the simulator asks ``served_at`` which moment's keys to show
and ``failure`` whether to answer something else instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, get_args

CertsFaultKind = Literal["lag", "stuck", "down", "garbage", "nested", "gzip_bomb", "trickle"]
# The kinds that answer something else than the keys (``failure``), or the keys too slowly.
BROKEN_KINDS = ("down", "garbage", "nested", "gzip_bomb", "trickle")


@dataclass(frozen=True)
class CertsFault:
    """A misbehaviour of the certs endpoint, for one account (``account_id``) or all.

    - ``lag``: serve the keys as they were ``seconds`` (simulated) ago, so a rotation shows that
      much later.
    - ``stuck``: serve the keys as they were when the fault was added, whatever rotates since.
    - ``down``: answer ``status`` (503 by default) with an edge HTML page.
    - ``garbage``: answer 200 with ``body``, which is not a certs document.
    - ``nested``: answer 200 with JSON nested ``depth`` levels deep (``{"keys": [[[...]]]}``),
      a few hundred KB that a recursive reader dies of.
    - ``gzip_bomb``: answer 200 with ``Content-Encoding: gzip`` and a body that expands to
      ``size`` bytes of zeros (1 GiB by default: about 1 MB sent).
    - ``trickle``: answer the keys, one byte every ``seconds`` (1 s when 0): a per-read timeout
      never fires.

    ``times``: how many answers it applies to (None: until cleared).
    """

    kind: CertsFaultKind
    account_id: str | None = None
    seconds: float = 0.0
    status: int = 503
    body: str = '{"keys": "not a list", "public_cert": 42}'
    times: int | None = None
    depth: int = 100_000
    size: int = 1 << 30

    def __post_init__(self) -> None:
        if self.kind not in get_args(CertsFaultKind):
            raise ValueError(f"certs fault kind must be one of {get_args(CertsFaultKind)}, got {self.kind!r}")
        if self.seconds < 0:
            raise ValueError(f"certs fault seconds must be >= 0, got {self.seconds}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"certs fault status must be an HTTP status, got {self.status}")
        if self.depth < 1 or self.size < 0:
            raise ValueError(f"certs fault depth must be >= 1 and size >= 0, got {self.depth}, {self.size}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"certs fault times must be None or >= 0, got {self.times}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CertsFault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown certs fault fields {sorted(unknown)}; known: {sorted(known)}")
        if "kind" not in data:
            raise ValueError("certs fault needs a 'kind'")
        return cls(**data)


@dataclass
class ArmedCertsFault:
    fault: CertsFault
    added_at: datetime
    remaining: int | None

    def applies(self, account_id: str) -> bool:
        return self.remaining != 0 and self.fault.account_id in (None, account_id)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.fault), "remaining": self.remaining}


def served_at(faults: list[ArmedCertsFault], account_id: str, now: datetime) -> datetime:
    """The moment whose keys the endpoint shows now: ``now`` unless a lag or stuck fault applies."""
    moment = now
    for armed in faults:
        if not armed.applies(account_id):
            continue
        if armed.fault.kind == "lag":
            moment = min(moment, now - timedelta(seconds=armed.fault.seconds))
        elif armed.fault.kind == "stuck":
            moment = min(moment, armed.added_at)
    return moment


def failure(faults: list[ArmedCertsFault], account_id: str) -> CertsFault | None:
    """The first fault that answers something else than the keys on time (and is used up by this
    answer), if any."""
    for armed in faults:
        if armed.applies(account_id) and armed.fault.kind in BROKEN_KINDS:
            if armed.remaining is not None:
                armed.remaining -= 1
            return armed.fault
    return None


@lru_cache(maxsize=4)
def gzip_bomb(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes (about a thousandth of it), made once per size."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(min(size, 1 << 20))
    parts, left = [], size
    while left > 0:
        parts.append(deflate.compress(block[:left]))
        left -= len(block)
    parts.append(deflate.flush())
    return b"".join(parts)


def nested(depth: int) -> str:
    """A certs-shaped JSON document whose keys[] is ``depth`` lists deep."""
    return '{"keys": ' + "[" * depth + "]" * depth + "}"
