"""A Cloudflare Access key API that speaks real HTTP, for end-to-end tests and `rotator demo`.

Why it exists: the daemon's hard cases (a rotate whose answer is lost, an edge that answers
HTML, a GET that still reports the old key, a 429 with a long retry-after) cannot be produced
against the real API on demand, and a mock of the client would not exercise the real socket.
So this module plays Cloudflare: the three Access key operations and the organization read under
``/client/v4``, both authentication schemes, per-account key state that Cloudflare itself rotates
when it falls due, each team's certs endpoint with real RSA keys that rotate with it
(``cloudflare_sim.signing``), and a simulated clock that can run a day in two seconds.

Layout, from the inside out:

- ``Simulator`` holds all state behind one lock and decides every answer in plain synchronous
  code (``Simulator.serve``): tests read its state from another thread, and the decision logic
  can be reasoned about without sockets.
- ``Simulator.app()`` is the aiohttp front end: it only parses requests, sleeps for the added
  latency, renders ``Reply`` objects, and carries out the ones that drop or hang the connection.
- The certs endpoints are served by the same server, one per team under
  ``/certs/<team domain>/cdn-cgi/access/certs`` (``Simulator.certs_url_template``), or at
  ``/cdn-cgi/access/certs`` for the team named by the ``Host`` header. No credential, no rate limit.
- ``SimulatorThread`` runs it on a private event loop for synchronous tests;
  ``Simulator.start``/``stop`` run it on the caller's loop (the demo serves it beside the daemon).
- ``main()`` is the command line: ``python -m cloudflare_sim``.

Every response carries a ``Date`` header with the *simulated* time, because the daemon takes
``now`` from the server it talks to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self, get_args

from aiohttp import web

from cloudflare_sim.certs import ArmedCertsFault, CertsFault, failure, gzip_bomb, nested, served_at
from cloudflare_sim.signing import KeyChain, access_claims

__all__ = [
    "ApiCall",
    "CertsFault",
    "Fault",
    "KeyState",
    "RateLimit",
    "Reply",
    "RequestRecord",
    "Rotation",
    "SimClock",
    "Simulator",
    "SimulatorThread",
    "main",
]

Op = Literal["get", "put", "rotate", "organizations", "certs"]
FaultOp = Literal["get", "put", "rotate", "organizations", "any"]
Permission = Literal["read", "write"]
Source = Literal["api", "auto"]
Action = Literal["respond", "drop", "hang"]
FaultKind = Literal[
    "status",
    "hang",
    "drop",
    "not_json",
    "success_false",
    "missing_result",
    "null_result",
    "top_level",
    "apply_then_status",
    "apply_then_hang",
    "apply_then_drop",
    "stale",
    "sparse",
]
# The key configuration's fields, each optional in Cloudflare's spec (the ``sparse`` fault omits them).
KEY_FIELDS = ("days_until_next_rotation", "key_rotation_interval_days", "last_key_rotation_at")

API_PREFIX = "/client/v4"
ADMIN_PREFIX = "/__sim"
CERTS_PATH = "/cdn-cgi/access/certs"
CERTS_PREFIX = "/certs"
TEAM_DOMAIN_SUFFIX = "cloudflareaccess.com"
DAY = timedelta(days=1)
MIN_INTERVAL_DAYS = 21
MAX_INTERVAL_DAYS = 365
DEFAULT_INTERVAL_DAYS = 42
WRITE_PERMISSION = "Access: Organizations, Identity Providers, and Groups Write"

# Faults that stand in for an answer Cloudflare gave *instead of* doing the work. Every other
# kind first performs the operation (a rotate rotates), then misreports it: those are the ones
# that tempt a client into rotating twice.
_NOT_APPLIED: frozenset[FaultKind] = frozenset({"status", "hang", "drop", "not_json", "success_false"})
_OPS: dict[str, Op] = {
    "get": "get",
    "put": "put",
    "rotate": "rotate",
    "organizations": "organizations",
    "certs": "certs",
}
_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")


def rfc3339(moment: datetime) -> str:
    """Format as Cloudflare does: UTC, fractional seconds, and a ``Z`` rather than ``+00:00``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def http_date(moment: datetime) -> str:
    """Format as an RFC 7231 HTTP-date (``Sun, 06 Nov 1994 08:49:37 GMT``) for the Date header."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def account_id_for(index: int) -> str:
    """Deterministic 32-hex account id, so runs and their logs can be compared."""
    return hashlib.md5(f"account-{index}".encode(), usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class Rotation:
    """One key rotation: when (simulated time) and who asked for it."""

    at: datetime
    source: Source

    def to_json(self) -> dict[str, str]:
        return {"at": rfc3339(self.at), "source": self.source}


@dataclass(frozen=True)
class KeyState:
    """What the API reports for one account at one moment."""

    days_until_next_rotation: float
    key_rotation_interval_days: int
    last_key_rotation_at: datetime

    @classmethod
    def at(cls, interval_days: int, last: datetime, now: datetime) -> KeyState:
        """Compute the report; never negative, rounded like Cloudflare's 3-decimal answers."""
        left = interval_days - (now - last) / DAY
        return cls(max(0.0, round(left, 3)), interval_days, last)

    def to_json(self) -> dict[str, Any]:
        return {
            "days_until_next_rotation": self.days_until_next_rotation,
            "key_rotation_interval_days": self.key_rotation_interval_days,
            "last_key_rotation_at": rfc3339(self.last_key_rotation_at),
        }


@dataclass(frozen=True)
class RequestRecord:
    """One request as seen on the wire, so tests can count e.g. rotate POSTs."""

    at: datetime
    method: str
    path: str
    op: Op | None
    account_id: str | None
    outcome: int | Literal["dropped", "hung"]
    fault: FaultKind | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": rfc3339(self.at)}


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` per sliding ``window_seconds`` of real time, per credential."""

    requests: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window_seconds <= 0:
            raise ValueError(f"rate limit must be positive, got {self.requests}/{self.window_seconds}")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"300/10"`` (300 requests per 10 seconds), the CLI's notation."""
        count, sep, window = text.partition("/")
        if not sep:
            raise ValueError(f"rate limit must look like REQUESTS/SECONDS, got {text!r}")
        return cls(int(count), float(window))


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to inject. The first fault in order that matches and fires applies.

    ``kind`` is one of:

    - ``status``: answer ``status`` with a Cloudflare error body (or an edge HTML page when
      ``html``), optionally with ``retry-after``; the operation is not performed.
    - ``hang``: never answer; ``drop``: close the connection without a response.
    - ``not_json``: 200 with ``<html>oops</html>``; ``success_false``: 200 with ``success: false``.
    - ``missing_result`` / ``null_result`` / ``top_level`` (the 2024 shape, fields beside the
      envelope): the operation IS performed, then reported in that shape.
    - ``apply_then_status`` / ``apply_then_hang`` / ``apply_then_drop``: perform the operation,
      then answer like ``status`` / ``hang`` / ``drop``: the lost-answer cases.
    - ``stale``: GET: reports the state from before the latest API rotation; rotate: performs it,
      then answers 200 with the state from before it (a lagging replica's echo).
    - ``sparse``: performs the operation, then answers 200 without the fields named in ``omit``
      (every field of the result is optional in Cloudflare's spec).
    """

    kind: FaultKind
    op: FaultOp = "any"
    account_id: str | None = None
    times: int | None = None
    ratio: float = 1.0
    status: int = 500
    html: bool = False
    retry_after: float | None = None
    code: int = 1000
    message: str | None = None
    omit: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "omit", tuple(self.omit))
        if unknown := set(self.omit) - set(KEY_FIELDS):
            raise ValueError(f"fault omit must name fields of {KEY_FIELDS}, got {sorted(unknown)}")
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"fault kind must be one of {get_args(FaultKind)}, got {self.kind!r}")
        if self.op not in get_args(FaultOp):
            raise ValueError(f"fault op must be one of {get_args(FaultOp)}, got {self.op!r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"fault ratio must be within 0..1, got {self.ratio}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"fault times must be None or >= 0, got {self.times}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP status, got {self.status}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build from the admin API's JSON, refusing unknown fields so typos fail loudly."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; known: {sorted(known)}")
        if "kind" not in data:
            raise ValueError("fault needs a 'kind'")
        return cls(**data)

    def matches(self, op: Op, account_id: str) -> bool:
        if op == "certs" or self.op not in ("any", op) or self.account_id not in (None, account_id):
            return False
        return self.kind != "stale" or op in ("get", "rotate")


@dataclass(frozen=True)
class ApiCall:
    """The parts of an HTTP request that decide the answer; built by the HTTP front end."""

    method: str
    path: str
    op: Op | None
    account_id: str | None
    authorization: str | None = None
    auth_email: str | None = None
    auth_key: str | None = None
    body: bytes = b""


@dataclass(frozen=True)
class Reply:
    """The decided answer: what to send, or that the connection is to be dropped or left hanging."""

    status: int
    body: str = ""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    action: Action = "respond"
    fault: FaultKind | None = None
    raw: bytes | None = None  # sent instead of ``body`` (a gzip bomb)
    trickle: float = 0.0  # seconds between two bytes of the body (0: sent at once)

    @property
    def outcome(self) -> int | Literal["dropped", "hung"]:
        if self.action == "drop":
            return "dropped"
        if self.action == "hang":
            return "hung"
        return self.status


# --------------------------------------------------------------------------- clock


class SimClock:
    """Simulated time: ``start`` + real elapsed seconds * (86400 / ``day_seconds``) + advances.

    Not locked on its own: the ``Simulator`` that owns it serialises access.
    """

    def __init__(
        self,
        start: datetime,
        day_seconds: float = 86400.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if day_seconds <= 0:
            raise ValueError(f"day_seconds must be positive, got {day_seconds}")
        self.start = start.astimezone(UTC)
        self.day_seconds = day_seconds
        self._monotonic = monotonic
        self._origin = monotonic()
        self._advanced = timedelta(0)

    def now(self) -> datetime:
        elapsed = self._monotonic() - self._origin
        return self.start + elapsed * (DAY / self.day_seconds) + self._advanced

    def advance(self, days: float) -> None:
        if days < 0:
            raise ValueError(f"time only moves forward, got {days} days")
        self._advanced += days * DAY


# --------------------------------------------------------------------------- state


@dataclass
class _Account:
    account_id: str
    interval_days: int
    last_key_rotation_at: datetime
    team_domain: str
    created_at: datetime
    history: list[Rotation] = field(default_factory=list)
    # The signing keys, one per generation (cloudflare_sim.signing), made when first needed.
    keys: KeyChain = field(default_factory=KeyChain)
    # (interval, last rotation) as they were just before the latest API rotation: what a
    # `stale` GET reports, i.e. a read replica that has not seen the rotation yet.
    before_api_rotation: tuple[int, datetime] | None = None
    # What the organization read answers instead of team_domain (Simulator.set_team_domain).
    auth_domain: str | None = None

    def state(self, now: datetime) -> KeyState:
        return KeyState.at(self.interval_days, self.last_key_rotation_at, now)

    def settle(self, now: datetime) -> None:
        """Record each rotation Cloudflare would have made by ``now``, at the moment it fell due."""
        due = self.last_key_rotation_at + self.interval_days * DAY
        while due <= now:
            self.history.append(Rotation(due, "auto"))
            self.last_key_rotation_at = due
            due += self.interval_days * DAY

    def rotate(self, now: datetime) -> None:
        self.before_api_rotation = (self.interval_days, self.last_key_rotation_at)
        self.last_key_rotation_at = now
        self.history.append(Rotation(now, "api"))

    def generation(self, at: datetime) -> int:
        """Which key signs at ``at``: 0 is the starting key, each rotation up to then adds one."""
        return sum(1 for rotation in self.history if rotation.at <= at)

    def organization(self) -> dict[str, Any]:
        return {
            "auth_domain": self.auth_domain or self.team_domain,
            "name": self.team_domain.partition(".")[0],
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.created_at),
        }

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "team_domain": self.team_domain,
            **self.state(now).to_json(),
            "history": [rotation.to_json() for rotation in self.history],
        }


@dataclass(frozen=True)
class _Grant:
    """An authenticated caller: the rate-limit key, what it may do, and where."""

    key: str
    permission: Permission
    accounts: frozenset[str] | None


@dataclass
class _ArmedFault:
    fault: Fault
    remaining: int | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.fault), "remaining": self.remaining}


class _Limiter:
    """Sliding-window request budget per credential, in real (monotonic) seconds."""

    def __init__(self, limit: RateLimit, monotonic: Callable[[], float]) -> None:
        self._limit = limit
        self._monotonic = monotonic
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float | None:
        """Seconds to wait if ``key`` is over budget, else None (and the request is counted)."""
        now = self._monotonic()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self._limit.window_seconds:
            seen.popleft()
        if len(seen) >= self._limit.requests:
            return seen[0] + self._limit.window_seconds - now
        seen.append(now)
        return None

    def spend(self, key: str, requests: int) -> None:
        """Count ``requests`` for ``key`` now, as if another client of the same user sent them."""
        now = self._monotonic()
        self._seen.setdefault(key, deque()).extend([now] * requests)

    def headers(self, key: str) -> tuple[tuple[str, str], ...]:
        """Cloudflare's ``Ratelimit`` (remaining, seconds until the oldest counted request expires)
        and ``Ratelimit-Policy`` (quota, window), as structured fields."""
        now = self._monotonic()
        seen = self._seen.get(key, deque())
        while seen and seen[0] <= now - self._limit.window_seconds:
            seen.popleft()
        remaining = max(0, self._limit.requests - len(seen))
        reset = math.ceil(seen[0] + self._limit.window_seconds - now) if seen else 0
        return (
            ("ratelimit", f'"default";r={remaining};t={reset}'),
            (
                "ratelimit-policy",
                f'"default";q={self._limit.requests};w={math.ceil(self._limit.window_seconds)}',
            ),
        )


def _envelope_error(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message, **extra}],
        "messages": [],
        "result": None,
    }


def _json_reply(status: int, payload: Mapping[str, Any], **kwargs: Any) -> Reply:
    return Reply(status, json.dumps(payload), **kwargs)


def _error(status: int, code: int, message: str, **kwargs: Any) -> Reply:
    return _json_reply(status, _envelope_error(code, message), **kwargs)


def _ok(payload: Mapping[str, Any], fault: FaultKind | None = None) -> Reply:
    return _json_reply(200, {"success": True, "errors": [], "messages": [], **payload}, fault=fault)


def _edge_html(status: int) -> str:
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html><head><title>{title}</title></head><body>"
        f"<center><h1>{title}</h1></center><hr><center>cloudflare</center></body></html>"
    )


# --------------------------------------------------------------------------- simulator


class Simulator:
    """Cloudflare's Access key API in one object: accounts, credentials, clock, faults and a log.

    Every public method is thread-safe.
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, Permission] | None = None,
        token_accounts: Mapping[str, Collection[str]] | None = None,
        legacy_keys: Iterable[tuple[str, str]] = (),
        start: datetime | None = None,
        day_seconds: float = 86400.0,
        latency: float = 0.0,
        rate_limit: RateLimit | None = None,
        seed: int = 0,
        hang_seconds: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure the fake.

        ``tokens`` maps each accepted API token to "read" or "write"; ``token_accounts`` optionally
        limits a token to some account ids; ``legacy_keys`` are accepted (email, global key) pairs,
        which have write permission. ``latency`` (real seconds) is added to every API request.
        ``hang_seconds`` bounds a hang in real time, so a forgotten client cannot pin a server.
        """
        self._lock = threading.RLock()
        self._clock = SimClock(start or datetime.now(UTC).replace(microsecond=0), day_seconds, monotonic)
        self._tokens = dict(tokens or {})
        self._token_accounts = {t: frozenset(a) for t, a in (token_accounts or {}).items()}
        self._legacy = frozenset(legacy_keys)
        self.latency = latency
        self.hang_seconds = hang_seconds
        self._limiter = _Limiter(rate_limit, monotonic) if rate_limit else None
        self._random = random.Random(seed)  # noqa: S311 -- fault dice, reproducible by seed; not crypto
        self._accounts: dict[str, _Account] = {}
        self._faults: list[_ArmedFault] = []
        self._certs_faults: list[ArmedCertsFault] = []
        self._teams: dict[str, str] = {}  # team domain -> account id
        self._log: list[RequestRecord] = []
        self._rate_limited = 0
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @classmethod
    def with_accounts(
        cls,
        n: int,
        *,
        token: str,
        day_seconds: float = 86400.0,
        seed: int = 0,
        interval_days: int = DEFAULT_INTERVAL_DAYS,
        start: datetime | None = None,
        tokens: Mapping[str, Permission] | None = None,
        legacy_keys: Iterable[tuple[str, str]] = (),
        latency: float = 0.0,
        rate_limit: RateLimit | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Simulator:
        """A simulator with ``n`` accounts, ``token`` with write permission, and staggered keys.

        Account ``i`` (id ``account_id_for(i)``) is due in ``2 + (interval - 2) * i / n`` days:
        account 0 falls due within two simulated days, the rest spread over the interval,
        so a demo shows both the daemon's rotations and Cloudflare's own.
        """
        sim = cls(
            tokens={token: "write", **(tokens or {})},
            legacy_keys=legacy_keys,
            start=start,
            day_seconds=day_seconds,
            latency=latency,
            rate_limit=rate_limit,
            seed=seed,
            monotonic=monotonic,
        )
        for i in range(n):
            sim.add_account(
                account_id_for(i),
                interval_days=interval_days,
                days_until_next_rotation=2 + (interval_days - 2) * i / n,
            )
        return sim

    # ----------------------------------------------------------------- state, for tests

    def now(self) -> datetime:
        with self._lock:
            return self._clock.now()

    def advance(self, days: float) -> None:
        """Move simulated time forward; rotations that fall due are recorded lazily, at due time."""
        with self._lock:
            self._clock.advance(days)

    @property
    def day_seconds(self) -> float:
        return self._clock.day_seconds

    @property
    def account_ids(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def add_account(
        self,
        account_id: str | None = None,
        *,
        interval_days: int = DEFAULT_INTERVAL_DAYS,
        last_key_rotation_at: datetime | None = None,
        days_until_next_rotation: float | None = None,
    ) -> str:
        """Add an account and return its id (generated with ``account_id_for`` when omitted).

        Give at most one of ``last_key_rotation_at`` and ``days_until_next_rotation``; with
        neither, the key was rotated just now. The starting key is not part of ``rotations()``.
        """
        _check_interval(interval_days)
        if last_key_rotation_at is not None and days_until_next_rotation is not None:
            raise ValueError("give last_key_rotation_at or days_until_next_rotation, not both")
        with self._lock:
            now = self._clock.now()
            if account_id is None:
                index = len(self._accounts)
                while account_id_for(index) in self._accounts:
                    index += 1
                account_id = account_id_for(index)
            if not _ACCOUNT_ID.fullmatch(account_id):
                raise ValueError(f"account_id must be 32 lowercase hex characters, got {account_id!r}")
            if account_id in self._accounts:
                raise ValueError(f"account {account_id} already exists")
            if days_until_next_rotation is not None:
                last = now - (interval_days - days_until_next_rotation) * DAY
            else:
                last = last_key_rotation_at or now
            team = f"team-{len(self._accounts)}.{TEAM_DOMAIN_SUFFIX}"
            self._accounts[account_id] = _Account(account_id, interval_days, last.astimezone(UTC), team, now)
            self._teams[team] = account_id
            return account_id

    def key_state(self, account_id: str) -> KeyState:
        """What a faithful GET would report now."""
        with self._lock:
            now = self._clock.now()
            account = self._accounts[account_id]
            account.settle(now)
            return account.state(now)

    def rotations(self, account_id: str) -> list[Rotation]:
        """Every rotation so far, from the API and Cloudflare's own, oldest first."""
        with self._lock:
            account = self._accounts[account_id]
            account.settle(self._clock.now())
            return list(account.history)

    def team_domain(self, account_id: str) -> str:
        """The account's team domain, as ``GET .../access/organizations`` reports it."""
        with self._lock:
            return self._accounts[account_id].team_domain

    def set_team_domain(self, account_id: str, auth_domain: str) -> None:
        """What the organization read answers as ``auth_domain`` from now on: any text, a hostile
        one included (a host with a port and path, ``user:pw@host``); certs stay served under the
        account's own team domain."""
        with self._lock:
            self._accounts[account_id].auth_domain = auth_domain

    def certs(self, account_id: str) -> dict[str, Any]:
        """The certs document a faithful endpoint serves now (no certs fault applied)."""
        with self._lock:
            now = self._clock.now()
            account = self._accounts[account_id]
            account.settle(now)
            return account.keys.certs(account.generation(now), now)

    def current_kid(self, account_id: str) -> str:
        """The kid of the key that signs now."""
        return str(self.certs(account_id)["public_cert"]["kid"])

    def sign_token(
        self,
        account_id: str,
        *,
        audience: str = "rotator-simulator-app",
        email: str = "user@example.com",
        lifetime: timedelta = timedelta(hours=24),
        now: datetime | None = None,
    ) -> str:
        """An Access-style application token (RS256) signed with the account's current key.

        ``now`` stamps ``iat``/``nbf``/``exp`` (default: the real clock, as a validator compares
        them with its own); the key is the one current at the simulated now.
        """
        with self._lock:
            sim_now = self._clock.now()
            account = self._accounts[account_id]
            account.settle(sim_now)
            key = account.keys.key(account.generation(sim_now), sim_now)
            claims = access_claims(
                account.team_domain,
                now or datetime.now(UTC),
                audience=audience,
                email=email,
                lifetime=lifetime,
            )
            return key.sign_jwt(claims)

    def add_certs_fault(self, fault: CertsFault) -> None:
        if fault.kind == "gzip_bomb":
            gzip_bomb(fault.size)  # made now (seconds for a GiB), not while a reader waits for it
        with self._lock:
            self._certs_faults.append(ArmedCertsFault(fault, self._clock.now(), fault.times))

    def clear_certs_faults(self) -> None:
        with self._lock:
            self._certs_faults.clear()

    def serve_certs(self, team_domain: str) -> Reply:
        """The certs endpoint of ``team_domain``: the keys current at the moment faults allow."""
        with self._lock:
            now = self._clock.now()
            account_id = self._teams.get(team_domain.lower())
            reply = self._certs_reply(account_id, now)
            self._log.append(
                RequestRecord(
                    now, "GET", f"{CERTS_PREFIX}/{team_domain}{CERTS_PATH}", "certs", account_id, reply.status
                )
            )
            return reply

    def _certs_reply(self, account_id: str | None, now: datetime) -> Reply:
        if account_id is None:
            return Reply(404, _edge_html(404), "text/html")
        broken = failure(self._certs_faults, account_id)
        if broken is not None and broken.kind == "down":
            return Reply(broken.status, _edge_html(broken.status), "text/html")
        if broken is not None and broken.kind == "garbage":
            return Reply(200, broken.body, "application/json")
        if broken is not None and broken.kind == "nested":
            return Reply(200, nested(broken.depth), "application/json")
        if broken is not None and broken.kind == "gzip_bomb":
            return Reply(200, raw=gzip_bomb(broken.size), headers=(("Content-Encoding", "gzip"),))
        account = self._accounts[account_id]
        account.settle(now)
        moment = served_at(self._certs_faults, account_id, now)
        reply = _json_reply(200, account.keys.certs(account.generation(moment), now))
        if broken is not None:  # trickle: the keys, a byte at a time
            return replace(reply, trickle=broken.seconds or 1.0)
        return reply

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(_ArmedFault(fault, fault.times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def spend_budget(self, token: str, requests: int) -> None:
        """Spend ``requests`` of ``token``'s rate-limit budget now, as another client of the same
        user would (Terraform, a dashboard): rotator sees it only in the ``Ratelimit`` header."""
        if self._limiter is None:
            raise ValueError("the simulator has no rate limit: give it one (rate_limit=...)")
        with self._lock:
            self._limiter.spend(f"token:{token}", requests)

    def requests(
        self,
        op: Op | None = None,
        account_id: str | None = None,
        outcome: int | str | None = None,
    ) -> list[RequestRecord]:
        """Requests received so far, oldest first, filtered by any of the given fields."""
        with self._lock:
            return [
                record
                for record in self._log
                if (op is None or record.op == op)
                and (account_id is None or record.account_id == account_id)
                and (outcome is None or record.outcome == outcome)
            ]

    def snapshot(self) -> dict[str, Any]:
        """All state as JSON-ready data: what ``GET /__sim/state`` answers."""
        with self._lock:
            now = self._clock.now()
            for account in self._accounts.values():
                account.settle(now)
            by_op: dict[str, Counter[str]] = {}
            for record in self._log:
                by_op.setdefault(record.op or "other", Counter())[str(record.outcome)] += 1
            return {
                "now": rfc3339(now),
                "day_seconds": self._clock.day_seconds,
                "accounts": [account.to_json(now) for account in self._accounts.values()],
                "requests": {
                    "total": len(self._log),
                    "by_op": {op: dict(counts) for op, counts in by_op.items()},
                    "rate_limited": self._rate_limited,
                },
                "faults": [armed.to_json() for armed in self._faults],
                "certs_faults": [armed.to_json() for armed in self._certs_faults],
            }

    # ----------------------------------------------------------------- deciding answers

    def serve(self, call: ApiCall) -> Reply:
        """Decide the answer to one API request, apply its effect, and log it."""
        with self._lock:
            now = self._clock.now()
            reply = self._decide(call, now)
            grant = self._authenticate(call) if self._limiter else None
            if self._limiter and grant is not None and call.op is not None:
                reply = replace(reply, headers=reply.headers + self._limiter.headers(grant.key))
            record = RequestRecord(
                now, call.method, call.path, call.op, call.account_id, reply.outcome, reply.fault
            )
            self._log.append(record)
            return reply

    def _decide(self, call: ApiCall, now: datetime) -> Reply:
        if call.op is None or call.account_id is None:
            return _error(404, 7003, "No route for the URI")
        grant = self._authenticate(call)
        if grant is None:
            return _error(401, 10000, "Authentication error")
        if self._limiter and (wait := self._limiter.retry_after(grant.key)) is not None:
            self._rate_limited += 1
            return _error(
                429,
                971,
                "Please wait and consider throttling your request speed",
                headers=(("retry-after", str(max(1, math.ceil(wait)))),),
            )
        if grant.accounts is not None and call.account_id not in grant.accounts:
            return _error(403, 10000, "Authentication error")
        account = self._accounts.get(call.account_id)
        if account is None:
            return _error(
                404,
                7003,
                f"Could not route to {call.path.removeprefix(API_PREFIX)}, "
                "perhaps your object identifier is invalid?",
            )
        if call.op not in ("get", "organizations") and grant.permission != "write":
            return _error(
                403,
                9109,
                f"Unauthorized to access requested resource: needs '{WRITE_PERMISSION}'",
            )
        account.settle(now)
        fault = self._pick_fault(call.op, call.account_id)
        if fault is not None and fault.kind in _NOT_APPLIED:
            return self._fault_reply(fault, None)
        if call.op == "organizations":
            result = account.organization()
        else:
            failed = self._apply(call, account, now)
            if failed is not None:
                return failed
            state = account.state(now)
            if fault is not None and fault.kind == "stale" and account.before_api_rotation is not None:
                state = KeyState.at(*account.before_api_rotation, now)
            result = state.to_json()
        if fault is None:
            return _ok({"result": result})
        return self._fault_reply(fault, result)

    def _authenticate(self, call: ApiCall) -> _Grant | None:
        if call.authorization is not None:
            scheme, _, token = call.authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or token not in self._tokens:
                return None
            return _Grant(f"token:{token}", self._tokens[token], self._token_accounts.get(token))
        if (call.auth_email, call.auth_key) in self._legacy:
            return _Grant(f"key:{call.auth_email}", "write", None)
        return None

    def _pick_fault(self, op: Op, account_id: str) -> Fault | None:
        for armed in self._faults:
            if armed.remaining == 0 or not armed.fault.matches(op, account_id):
                continue
            # Draw only for partial ratios, so adding a sure fault never shifts the dice.
            if armed.fault.ratio < 1.0 and self._random.random() >= armed.fault.ratio:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
            return armed.fault
        return None

    def _apply(self, call: ApiCall, account: _Account, now: datetime) -> Reply | None:
        """Perform the operation; return an error reply if the request is invalid."""
        if call.op == "rotate":
            account.rotate(now)
        elif call.op == "put":
            interval = _parse_interval(call.body)
            if isinstance(interval, str):
                return _json_reply(
                    400,
                    _envelope_error(10001, interval, source={"pointer": "/key_rotation_interval_days"}),
                )
            account.interval_days = interval
            # A shorter interval can make the key overdue at once: Cloudflare rotates it now.
            if account.last_key_rotation_at + interval * DAY <= now:
                account.last_key_rotation_at = now
                account.history.append(Rotation(now, "auto"))
        return None

    @staticmethod
    def _fault_reply(fault: Fault, result: Mapping[str, Any] | None) -> Reply:
        kind = fault.kind
        if kind in ("hang", "apply_then_hang"):
            return Reply(0, action="hang", fault=kind)
        if kind in ("drop", "apply_then_drop"):
            return Reply(0, action="drop", fault=kind)
        if kind in ("status", "apply_then_status"):
            headers = (("retry-after", f"{fault.retry_after:g}"),) if fault.retry_after else ()
            if fault.html:
                return Reply(fault.status, _edge_html(fault.status), "text/html", headers, fault=kind)
            message = fault.message or f"{HTTPStatus(fault.status).phrase} (simulated fault)"
            return _error(fault.status, fault.code, message, headers=headers, fault=kind)
        if kind == "not_json":
            return Reply(200, "<html>oops</html>", "text/html", fault=kind)
        if kind == "success_false":
            message = fault.message or "Simulated failure reported with status 200"
            return _json_reply(200, _envelope_error(fault.code, message), fault=kind)
        if kind == "missing_result":
            return _ok({}, fault=kind)
        if kind == "null_result":
            return _ok({"result": None}, fault=kind)
        assert result is not None, f"{kind} applies the operation first"
        if kind == "top_level":
            return _ok(result, fault=kind)
        if kind == "sparse":
            return _ok({"result": {k: v for k, v in result.items() if k not in fault.omit}}, fault=kind)
        return _ok({"result": result}, fault=kind)  # stale

    # ----------------------------------------------------------------- serving

    def app(self) -> web.Application:
        """The aiohttp application: the API under ``/client/v4``, the admin API under ``/__sim``."""
        return _Frontend(self).app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on the running loop; return the API base URL (with the port actually bound)."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # A short shutdown timeout: hung handlers are woken on shutdown, nothing else lingers.
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        self._runner = runner
        self._base_url = f"http://{bound_host}:{bound_port}{API_PREFIX}"
        return self._base_url

    async def stop(self) -> None:
        """Stop serving; waiting hangs are released so this returns promptly."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("simulator not started")
        return self._base_url

    @property
    def admin_url(self) -> str:
        return self.base_url.removesuffix(API_PREFIX) + ADMIN_PREFIX

    @property
    def certs_url_template(self) -> str:
        """rotator's ``publication.certs_url`` for this simulator: ``{team_domain}`` is filled in."""
        return self.base_url.removesuffix(API_PREFIX) + CERTS_PREFIX + "/{team_domain}" + CERTS_PATH

    def certs_url(self, account_id: str) -> str:
        return self.certs_url_template.format(team_domain=self.team_domain(account_id))


def _check_interval(days: int) -> None:
    if not MIN_INTERVAL_DAYS <= days <= MAX_INTERVAL_DAYS:
        raise ValueError(f"interval_days must be within {MIN_INTERVAL_DAYS}..{MAX_INTERVAL_DAYS}, got {days}")


def _parse_interval(body: bytes) -> int | str:
    """The PUT body's interval, or the reason it is refused (Cloudflare answers 400)."""
    expected = (
        f"key_rotation_interval_days must be a whole number between "
        f"{MIN_INTERVAL_DAYS} and {MAX_INTERVAL_DAYS}"
    )
    try:
        data = json.loads(body)
    except ValueError:
        return f"Request body is not valid JSON: {expected}"
    value = data.get("key_rotation_interval_days") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return expected
    if not float(value).is_integer() or not MIN_INTERVAL_DAYS <= value <= MAX_INTERVAL_DAYS:
        return expected
    return int(value)


# --------------------------------------------------------------------------- HTTP front end

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Frontend:
    """Translates HTTP to ``ApiCall``/``Reply`` and back; owns nothing but the hang release."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._stopping = asyncio.Event()
        app = web.Application()
        app.on_response_prepare.append(self._stamp_date)
        app.on_shutdown.append(self._release_hangs)
        keys = API_PREFIX + "/accounts/{account_id}/access/keys"
        app.router.add_get(keys, self._api("get"), allow_head=False)
        app.router.add_put(keys, self._api("put"))
        app.router.add_post(keys + "/rotate", self._api("rotate"))
        organizations = API_PREFIX + "/accounts/{account_id}/access/organizations"
        app.router.add_get(organizations, self._api("organizations"), allow_head=False)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api(None))
        # The admin API has no authentication: the simulator is a test tool bound to loopback.
        app.router.add_get(ADMIN_PREFIX + "/state", self._state)
        app.router.add_get(ADMIN_PREFIX + "/requests", self._requests)
        app.router.add_post(ADMIN_PREFIX + "/faults", self._add_fault)
        app.router.add_delete(ADMIN_PREFIX + "/faults", self._clear_faults)
        app.router.add_post(ADMIN_PREFIX + "/advance", self._advance)
        app.router.add_post(ADMIN_PREFIX + "/accounts", self._add_account)
        app.router.add_post(ADMIN_PREFIX + "/certs-faults", self._add_certs_fault)
        app.router.add_delete(ADMIN_PREFIX + "/certs-faults", self._clear_certs_faults)
        # The certs endpoints: public, no credential, outside the API's rate limit.
        app.router.add_get(CERTS_PREFIX + "/{team}" + CERTS_PATH, self._certs, allow_head=False)
        app.router.add_get(CERTS_PATH, self._certs, allow_head=False)
        self.app = app

    async def _stamp_date(self, _request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = http_date(self.sim.now())

    async def _release_hangs(self, _app: web.Application) -> None:
        self._stopping.set()

    def _api(self, op: Op | None) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if self.sim.latency:
                await asyncio.sleep(self.sim.latency)
            call = ApiCall(
                method=request.method,
                path=request.path,
                op=op,
                account_id=request.match_info.get("account_id"),
                authorization=request.headers.get("Authorization"),
                auth_email=request.headers.get("X-Auth-Email"),
                auth_key=request.headers.get("X-Auth-Key"),
                body=await request.read(),
            )
            reply = self.sim.serve(call)
            if reply.action == "hang":
                await self._hang()
            if reply.action != "respond":
                return _close(request)
            response = web.Response(status=reply.status, text=reply.body, content_type=reply.content_type)
            response.headers.update(reply.headers)
            return response

        return handle

    async def _certs(self, request: web.Request) -> web.StreamResponse:
        if self.sim.latency:
            await asyncio.sleep(self.sim.latency)
        team = request.match_info.get("team") or request.host.rpartition(":")[0] or request.host
        reply = self.sim.serve_certs(team)
        if reply.raw is not None:
            return web.Response(
                status=reply.status,
                body=reply.raw,
                content_type=reply.content_type,
                headers=dict(reply.headers),
            )
        if reply.trickle:
            body = reply.body.encode()
            response = web.StreamResponse(status=reply.status, headers={"Content-Type": reply.content_type})
            response.content_length = len(body)
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the reader gave up: as it should
                for i in range(len(body)):
                    await response.write(body[i : i + 1])
                    await asyncio.sleep(reply.trickle)
                await response.write_eof()
            return response
        return web.Response(status=reply.status, text=reply.body, content_type=reply.content_type)

    async def _add_certs_fault(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            fault = CertsFault.from_json(data)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        self.sim.add_certs_fault(fault)
        return web.json_response(asdict(fault), status=201)

    async def _clear_certs_faults(self, _request: web.Request) -> web.Response:
        self.sim.clear_certs_faults()
        return web.json_response({"certs_faults": []})

    async def _hang(self) -> None:
        """Wait until the server stops (or ``hang_seconds`` pass): the client gives up first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.sim.hang_seconds)

    async def _state(self, _request: web.Request) -> web.Response:
        return web.json_response(self.sim.snapshot())

    async def _requests(self, request: web.Request) -> web.Response:
        op = request.query.get("op")
        if op is not None and op not in _OPS:
            return _bad_request(f"op must be one of {sorted(_OPS)}")
        records = self.sim.requests(op=_OPS[op] if op else None, account_id=request.query.get("account_id"))
        return web.json_response([record.to_json() for record in records])

    async def _add_fault(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            fault = Fault.from_json(data)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        self.sim.add_fault(fault)
        return web.json_response(asdict(fault), status=201)

    async def _clear_faults(self, _request: web.Request) -> web.Response:
        self.sim.clear_faults()
        return web.json_response({"faults": []})

    async def _advance(self, request: web.Request) -> web.Response:
        try:
            days = float((await request.json())["days"])
            self.sim.advance(days)
        except (ValueError, TypeError, KeyError) as exc:
            return _bad_request(f'expected {{"days": non-negative number}}: {exc}')
        return web.json_response({"now": rfc3339(self.sim.now())})

    async def _add_account(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            last = data.get("last_key_rotation_at")
            account_id = self.sim.add_account(
                data.get("account_id"),
                interval_days=int(data.get("interval_days", DEFAULT_INTERVAL_DAYS)),
                last_key_rotation_at=datetime.fromisoformat(last) if last else None,
                days_until_next_rotation=data.get("days_until_next_rotation"),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return _bad_request(str(exc))
        return web.json_response(
            {"account_id": account_id, **self.sim.key_state(account_id).to_json()}, status=201
        )


def _close(request: web.Request) -> web.Response:
    """Close the connection with no answer: the client sees a transport error, not a status.

    The returned response is never sent: aiohttp fails to write it to the closed transport
    and treats that as the client having gone away.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


# --------------------------------------------------------------------------- thread runner


class SimulatorThread:
    """Run a ``Simulator`` on its own event loop in a background thread, for synchronous tests.

    ``with SimulatorThread(sim) as running: httpx.get(running.base_url + ...)``
    """

    def __init__(self, sim: Simulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self.sim.base_url

    @property
    def admin_url(self) -> str:
        return self.sim.admin_url

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rotator-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("simulator failed to start") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            try:
                loop.run_until_complete(self.sim.start(self._host, self._port))
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self.sim.stop())
        finally:
            loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- command line


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parse_rate_limit(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parse_legacy(text: str) -> tuple[str, str]:
    email, sep, key = text.partition(":")
    if not sep or not email or not key:
        raise argparse.ArgumentTypeError(f"expected EMAIL:KEY, got {text!r}")
    return email, key


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cloudflare_sim",
        description="Serve a simulated Cloudflare Access key API and its teams' certs endpoints. "
        "Prints one JSON line (base_url, admin_url, certs_url, accounts) on stdout, then serves "
        "until SIGTERM or SIGINT.",
        epilog="example, rehearsing a config with one day every 10 seconds (docs/rehearse.md):\n"
        "  python -m cloudflare_sim --listen 127.0.0.1:8787 --accounts 0 --day-seconds 10 "
        "--token rehearsal\n"
        "  curl -X POST http://127.0.0.1:8787/__sim/accounts \\\n"
        '       -d \'{"account_id": "023e105f4ecef8ad9ca31a8372d0c353", "days_until_next_rotation": 2}\'\n'
        "  CLOUDFLARE_API_TOKEN=rehearsal rotator run -c rehearsal.yaml   # base_url: "
        "http://127.0.0.1:8787/client/v4\n"
        "\n"
        "admin API (no authentication; loopback only): GET /__sim/state, GET /__sim/requests,\n"
        'POST /__sim/accounts, POST /__sim/advance {"days": N}, POST and DELETE /__sim/faults.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to bind; port 0 picks a free one",
    )
    parser.add_argument("--accounts", type=int, default=3, help="accounts to create")
    parser.add_argument("--token", default="test-token", help="API token with write permission")
    parser.add_argument(
        "--read-token",
        action="append",
        default=[],
        help="API token with read permission only (repeatable)",
    )
    parser.add_argument(
        "--legacy-key",
        action="append",
        default=[],
        type=_parse_legacy,
        metavar="EMAIL:KEY",
        help="accepted global API key (repeatable)",
    )
    parser.add_argument("--day-seconds", type=float, default=86400.0, help="real seconds per simulated day")
    parser.add_argument(
        "--interval-days",
        type=int,
        default=DEFAULT_INTERVAL_DAYS,
        help="initial key rotation interval of every account",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="real seconds added to every API request")
    parser.add_argument(
        "--rate-limit",
        type=_parse_rate_limit,
        default=None,
        metavar="REQUESTS/SECONDS",
        help="per-credential budget, e.g. 300/10",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for partial-ratio faults")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    sim = Simulator.with_accounts(
        args.accounts,
        token=args.token,
        tokens=dict.fromkeys(args.read_token, "read"),
        legacy_keys=args.legacy_key,
        day_seconds=args.day_seconds,
        interval_days=args.interval_days,
        latency=args.latency,
        rate_limit=args.rate_limit,
        seed=args.seed,
    )
    host, port = args.listen
    base_url = await sim.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    accounts = [
        {"account_id": a, "team_domain": sim.team_domain(a), **sim.key_state(a).to_json()}
        for a in sim.account_ids
    ]
    line = {
        "base_url": base_url,
        "admin_url": sim.admin_url,
        "certs_url": sim.certs_url_template,
        "accounts": accounts,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cloudflare_sim``."""
    asyncio.run(_serve(_arguments(argv)))
    return 0
