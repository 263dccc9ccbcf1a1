"""The team certs endpoint's misbehaviours, and which generation of keys it serves when.

Cloudflare publishes a rotated key at ``https://<team>/cdn-cgi/access/certs`` through its edge and
caches, so what an application sees can trail the rotation, stop following it, fail, or be
mangled. Each is a ``CertsFault``; the simulator asks ``served_at`` which moment's keys to show
and ``failure`` whether to answer something else instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

CertsFaultKind = Literal["lag", "stuck", "down", "garbage"]


@dataclass(frozen=True)
class CertsFault:
    """A misbehaviour of the certs endpoint, for one account (``account_id``) or all.

    - ``lag``: serve the keys as they were ``seconds`` (simulated) ago, so a rotation shows that
      much later.
    - ``stuck``: serve the keys as they were when the fault was added, whatever rotates since.
    - ``down``: answer ``status`` (503 by default) with an edge HTML page.
    - ``garbage``: answer 200 with ``body``, which is not a certs document.

    ``times``: how many answers it applies to (None: until cleared).
    """

    kind: CertsFaultKind
    account_id: str | None = None
    seconds: float = 0.0
    status: int = 503
    body: str = '{"keys": "not a list", "public_cert": 42}'
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(CertsFaultKind):
            raise ValueError(f"certs fault kind must be one of {get_args(CertsFaultKind)}, got {self.kind!r}")
        if self.seconds < 0:
            raise ValueError(f"certs fault seconds must be >= 0, got {self.seconds}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"certs fault status must be an HTTP status, got {self.status}")
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
    """The first down or garbage fault that applies (and is used up by this answer), if any."""
    for armed in faults:
        if armed.applies(account_id) and armed.fault.kind in ("down", "garbage"):
            if armed.remaining is not None:
                armed.remaining -= 1
            return armed.fault
    return None
