"""The publication check: is the key Cloudflare now signs with served where applications look?

Every application that validates Access tokens reads the team's certs endpoint
(``https://<team>/cdn-cgi/access/certs``) and picks a key by the token's ``kid``. A rotation is
done for them only once the new key is served there, and only while the previous one still is.
So, per account:

- at every check, one read of the endpoint (``rotator_jwks_keys``, the current kid's first-seen
  time); the read before a rotation is the baseline: the kids served then;
- after a rotation, reads with backoff until a kid that was not in the baseline is served while
  the kid that was current stays published: ``key_published`` (and
  ``rotator_key_publication_seconds``, from the rotate answer to that read), or, once ``deadline``
  has passed without it, ``key_publication_late`` (``rotator_key_publication_late`` is 1 until a
  later read shows it published).

The endpoint is public: no credential is sent. It has its own HTTP client, timeout, backoff and
budget (``publication.rate_limit``), so it never takes from Cloudflare's API budget; only the
organization read that finds the team domain (``rotator.after.teams``) is an API request.

The budget serves two kinds of reads, and verification comes first. A read that verifies a
rotation waits for the budget (ahead of every routine read: those never wait), up to the
rotation's deadline; past it, the verdict is ``key_publication_late``, as for a key not served,
never silence. A routine read (the baseline, or the one at each check) is made only if it fits
the budget now and leaves the reserve (``rotator.config.capacity.verification_reserve``) for
verification; otherwise it is skipped, counted (``rotator_publication_reads_skipped_total``) and
logged once per spell (``certs_reads_skipped``, then ``certs_reads_resumed``). Time is the
endpoint's clock (its ``Date`` header) where it answered, like the policy's, and otherwise the
last such clock moved on by the local monotonic clock.

Layout: ``parse_certs`` and ``judge`` are pure; ``CertsReader`` does the HTTP; ``Publication``
keeps each account's state and runs the reads; ``PublicationMetrics`` exports it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, MutableSequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import Enum

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from rotator import __version__
from rotator.after.events import Event, EventSink, rotated
from rotator.check.checker import CheckResult
from rotator.cloudflare.bounded import ACCEPT_ENCODING, MalformedAnswer, loads, read_bounded
from rotator.cloudflare.ratelimit import SlidingWindowLimiter
from rotator.config.capacity import verification_reserve
from rotator.config.followup_settings import PublicationSettings
from rotator.config.model import Account
from rotator.core.records import iso
from rotator.errors import CertsError
from rotator.metrics.families import AccountTable

USER_AGENT = f"rotator/{__version__} (publication check)"
# Reads after a rotation: the first at once, then backing off to at most this many seconds apart.
POLL_INITIAL = 1.0
POLL_MAX = 30.0
# Attempts of one read (a transport error or a 5xx is tried again after a short backoff).
READ_ATTEMPTS = 2
READ_BACKOFF = 0.5


# --------------------------------------------------------------------------- what is served


@dataclass(frozen=True)
class KeySet:
    """What one read of a certs endpoint served, and when (by the endpoint's clock)."""

    kids: tuple[str, ...]  # keys[], in the order served
    current: str | None  # public_cert.kid: the key that signs now (may come from a cache)
    cert_kids: tuple[str, ...]  # public_certs[]
    observed_at: datetime

    @property
    def signing(self) -> str | None:
        """The kid taken as current: public_cert's if it is among keys[], else the first key."""
        if self.current in self.kids:
            return self.current
        return self.kids[0] if self.kids else None


def parse_certs(body: bytes, observed_at: datetime) -> KeySet:
    """Read ``keys[]``, ``public_cert`` and ``public_certs[]``; CertsError when it is not that."""
    try:
        data = loads(body)
    except MalformedAnswer as exc:
        raise CertsError(f"the certs endpoint's answer cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise CertsError("the certs endpoint answered with JSON that is not an object")
    keys = data.get("keys")
    if not isinstance(keys, list):
        raise CertsError("the certs endpoint's answer has no keys[] list")
    kids = []
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise CertsError(f"the certs endpoint's keys[{index}] is not a JWK with a kid")
        kids.append(key["kid"])
    public_cert = data.get("public_cert")
    current = public_cert.get("kid") if isinstance(public_cert, dict) else None
    certs = data.get("public_certs")
    cert_kids = tuple(
        c["kid"]
        for c in (certs if isinstance(certs, list) else [])
        if isinstance(c, dict) and isinstance(c.get("kid"), str)
    )
    return KeySet(tuple(kids), current if isinstance(current, str) else None, cert_kids, observed_at)


# --------------------------------------------------------------------------- the decision


class Verdict(Enum):
    PUBLISHED = "published"
    WAITING = "waiting"
    LATE = "late"


@dataclass(frozen=True)
class Pending:
    """A rotation of rotator's whose key is not known to be served yet."""

    rotated_at: datetime  # the rotate answer, Cloudflare's clock
    baseline: frozenset[str]  # kids served before the rotation (empty: no read before it)
    previous: str | None  # the kid that signed before the rotation
    deadline: datetime
    late_reported: bool = False


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    kid: str | None = None  # the new kid, when published
    why: str = ""


def judge(pending: Pending, seen: KeySet | None, now: datetime) -> Judgement:
    """Published once a kid not in the baseline is served and the previous one still is."""
    why = "the certs endpoint could not be read"
    if seen is not None:
        new = [kid for kid in seen.kids if kid not in pending.baseline]
        kept = pending.previous is None or pending.previous in seen.kids
        if new and kept:
            kid = seen.signing if seen.signing in new else new[0]
            return Judgement(Verdict.PUBLISHED, kid)
        if not new:
            why = "no new key is served: the endpoint still shows the keys from before the rotation"
        else:
            why = "a new key is served but the previous one is not: tokens it signed no longer validate"
    if now >= pending.deadline:
        return Judgement(Verdict.LATE, why=why)
    return Judgement(Verdict.WAITING, why=why)


# --------------------------------------------------------------------------- reading


class BudgetSpent(CertsError):
    """No read was made: publication.rate_limit had no room for it (in time)."""


class CertsReader:
    """Reads certs endpoints: its own client, timeout, concurrency, backoff and budget."""

    def __init__(
        self,
        settings: PublicationSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._template = settings.certs_url
        # ``timeout`` is the deadline of each read as a whole (``_get``); httpx's, per read, too.
        self._timeout = settings.timeout
        self._http = httpx.AsyncClient(
            timeout=settings.timeout,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            transport=transport,
            follow_redirects=False,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._budget = SlidingWindowLimiter(
            settings.rate_limit.requests, settings.rate_limit.per, monotonic=monotonic, sleep=sleep
        )
        self.reserve = verification_reserve(settings.rate_limit.requests)
        self._skipping = 0  # routine reads skipped since the last one admitted
        self._sleep = sleep

    def url(self, team_domain: str) -> str:
        return self._template.format(team_domain=team_domain)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _admitted(self, remaining: Callable[[], float] | None) -> bool:
        """A routine read (``remaining`` None): whether it fits now, leaving the reserve. A read
        verifying a rotation: wait for the budget while ``remaining()`` (seconds) is above 0."""
        if remaining is None:
            admitted = self._budget.try_acquire(leave=self.reserve)
            self._said(admitted)
            return admitted
        if self._budget.try_acquire():  # the reserve too; even just past the deadline, to judge by it
            return True
        while (left := remaining()) > 0:
            try:
                # Bounded steps: ``remaining`` follows Cloudflare's clock, which may move on faster.
                await asyncio.wait_for(self._budget.acquire(), timeout=min(left, 1.0))
            except TimeoutError:
                continue
            return True
        return False

    def _said(self, admitted: bool) -> None:
        """Once per spell of routine reads skipped: when it begins, and when it ends."""
        log = structlog.get_logger("rotator")
        if not admitted:
            self._skipping += 1
            if self._skipping == 1:
                log.warning(
                    "certs_reads_skipped",
                    reserved=self.reserve,
                    message="publication.rate_limit is spent: routine reads of certs endpoints are "
                    "skipped until it has room (counted in rotator_publication_reads_skipped_total); "
                    "reads that verify a rotation keep their reserve",
                )
        elif self._skipping:
            log.info("certs_reads_resumed", reads_skipped=self._skipping)
            self._skipping = 0

    async def read(
        self, team_domain: str, *, remaining: Callable[[], float] | None = None
    ) -> tuple[KeySet | None, datetime | None, CertsError | None]:
        """(key set, the endpoint's clock, error): the clock is there whenever it answered at all.

        ``remaining``: this read verifies a rotation, and may wait for the budget that long
        (seconds, asked again as it waits); without it, a routine read. BudgetSpent: not read."""
        url = self.url(team_domain)
        clock: datetime | None = None
        error: CertsError = BudgetSpent("publication.rate_limit has no room for this read")
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                await self._sleep(READ_BACKOFF * (1 + random.random()))  # noqa: S311 - jitter
            if not await self._admitted(remaining):
                return None, clock, error
            async with self._slots:
                try:
                    response, content = await self._get(url)
                except (TimeoutError, httpx.TimeoutException):
                    error = CertsError(f"{url}: no answer within the timeout ({self._timeout:g}s)")
                    continue
                except MalformedAnswer as exc:  # too large: sending it again will not help
                    return None, clock, CertsError(f"{url}: {exc}")
                except httpx.HTTPError as exc:
                    error = CertsError(f"{url}: {type(exc).__name__}" + (f": {exc}" if str(exc) else ""))
                    continue
            clock = _date(response) or clock
            if response.status_code >= 500:
                error = CertsError(f"{url}: answered {response.status_code}")
                continue
            if response.status_code != 200:
                return None, clock, CertsError(f"{url}: answered {response.status_code}")
            try:
                return parse_certs(content, clock or datetime.now(UTC)), clock, None
            except CertsError as exc:
                return None, clock, CertsError(f"{url}: {exc}")
        return None, clock, error

    async def _get(self, url: str) -> tuple[httpx.Response, bytes]:
        """One GET, its answer whole: within one deadline from connecting to the last byte (httpx's
        timeout bounds each read: an answer trickling a byte a second held a 5 s timeout for 26 s),
        and within MAX_BODY bytes once decompressed (read raw, decompressed by ``bounded``)."""
        async with asyncio.timeout(self._timeout), self._http.stream("GET", url) as response:
            encoding = response.headers.get("Content-Encoding")
            return response, await read_bounded(response.aiter_raw(), encoding)


def _date(response: httpx.Response) -> datetime | None:
    header = response.headers.get("date")
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).astimezone(UTC)
    except (TypeError, ValueError):
        return None


class ServerClock:
    """Cloudflare's clock as last seen (a Date header), moved on by the local monotonic clock."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._seen: tuple[datetime, float] | None = None

    def saw(self, moment: datetime) -> None:
        if self._seen is None or moment >= self.now():
            self._seen = (moment, self._monotonic())

    def now(self) -> datetime:
        if self._seen is None:
            return datetime.now(UTC)
        moment, at = self._seen
        return moment + timedelta(seconds=self._monotonic() - at)


# --------------------------------------------------------------------------- metrics


_KEYS, _FIRST_SEEN, _LATE, _READS_OK, _READS_ERROR = range(5)
_NEW_ROW = (math.nan, math.nan, 0.0, 0.0, 0.0)
_GAUGES = (
    ("rotator_jwks_keys", "Keys in keys[] at the last read of the account's certs endpoint.", _KEYS),
    (
        "rotator_jwks_current_kid_first_seen_timestamp_seconds",
        "When rotator first saw the key that signs now served by the certs endpoint.",
        _FIRST_SEEN,
    ),
    (
        "rotator_key_publication_late",
        "1 while a key rotator rotated to is past the publication deadline and not served.",
        _LATE,
    ),
)
_COUNTERS = (
    (
        "rotator_jwks_reads",
        "Reads of the account's certs endpoint, by result (success, error).",
        (("success", _READS_OK), ("error", _READS_ERROR)),
    ),
)


class PublicationMetrics:
    """Per-account series as rows of numbers (``rotator.metrics.families.AccountTable``, whose scrape is
    cheap), plus one histogram."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._created = time.time()
        self._table = AccountTable(_NEW_ROW, _GAUGES, _COUNTERS, account_id_on_counters=True)
        registry.register(self._table)
        self.reads_skipped = Counter(
            "rotator_publication_reads_skipped",
            "Routine reads of certs endpoints (at a check, or the baseline) not made because "
            "publication.rate_limit had no room left outside its reserve for verifying rotations.",
            registry=registry,
        )
        self.publication_seconds = Histogram(
            "rotator_key_publication_seconds",
            "Time from a rotate answer to the first read of the certs endpoint serving the new key.",
            registry=registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
        )

    def configure(self, accounts: Iterable[Account]) -> None:
        wanted = {a.name: a for a in accounts}
        rows = self._table.rows
        for name in list(rows):
            if name not in wanted:
                del rows[name]
        for account in wanted.values():
            self._table.row(account, created=self._created)

    def row(self, account: Account) -> MutableSequence[float]:
        return self._table.row(account, created=self._created).values


# --------------------------------------------------------------------------- per account


@dataclass
class _State:
    seen: KeySet | None = None
    first_seen: dict[str, datetime] = field(default_factory=dict)
    pending: Pending | None = None
    task: asyncio.Task[None] | None = None


TeamDomainLookup = Callable[[Account], Awaitable[str | None]]


class Publication:
    """Each account's certs: read at every check, watched after every rotation."""

    def __init__(
        self,
        settings: PublicationSettings,
        reader: CertsReader,
        metrics: PublicationMetrics,
        sink: EventSink,
        team_domain: TeamDomainLookup,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._deadline = timedelta(seconds=settings.deadline)
        self._reader = reader
        self._metrics = metrics
        self._sink = sink
        self._team_domain = team_domain
        self._clock = ServerClock(monotonic)
        self._sleep = sleep
        self._states: dict[str, _State] = {}
        self._log = structlog.get_logger("rotator")

    def forget(self, account: Account) -> None:
        state = self._states.pop(account.account_id, None)
        if state is not None and state.task is not None:
            state.task.cancel()

    def wants_baseline(self, account: Account) -> bool:
        """Whether ``before_check`` has a read to make (before the account's first check only)."""
        state = self._states.get(account.account_id)
        return state is None or (state.seen is None and state.task is None)

    async def before_check(self, account: Account) -> None:
        """Take a baseline before the account's first check of this process (one read)."""
        state = self._state(account)
        if state.seen is None and state.task is None:
            with structlog.contextvars.bound_contextvars(account=account.name, account_id=account.account_id):
                await self._read(account, state)

    def after_check(self, result: CheckResult) -> None:
        """Start what the check calls for in the background: a watch after a rotation, else a read."""
        account, state = result.account, self._state(result.account)
        if result.key is not None:
            self._clock.saw(result.key.observed_at)
        done = rotated(result)
        if done is not None:
            rotated_at = done[0].observed_at  # the rotate answer (or the read that showed it)
            self._clock.saw(rotated_at)
            baseline = state.seen
            state.pending = Pending(
                rotated_at,
                frozenset(baseline.kids) if baseline else frozenset(),
                baseline.signing if baseline else None,
                rotated_at + self._deadline,
            )
            self._metrics.row(account)[_LATE] = 0.0
            if state.task is not None:
                state.task.cancel()
            state.task = asyncio.create_task(self._watch(account, state))
        elif state.task is None:
            state.task = asyncio.create_task(self._read_once(account, state))

    async def verdict(self, account: Account) -> Verdict | None:
        """Wait for the watch of the account's latest rotation to end (it does by the deadline, and
        a read after it): PUBLISHED, LATE, or None when no rotation is watched."""
        state = self._states.get(account.account_id)
        if state is None or state.pending is None:
            return None
        while state.task is not None and state.pending is not None and not state.pending.late_reported:
            await asyncio.wait({state.task})
        if state.pending is None:
            return Verdict.PUBLISHED
        return Verdict.LATE if state.pending.late_reported else None

    async def aclose(self) -> None:
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._reader.aclose()

    def _state(self, account: Account) -> _State:
        return self._states.setdefault(account.account_id, _State())

    async def _read_once(self, account: Account, state: _State) -> None:
        try:
            with structlog.contextvars.bound_contextvars(account=account.name, account_id=account.account_id):
                await self._read(account, state)
        finally:
            if asyncio.current_task() is state.task:
                state.task = None

    async def _watch(self, account: Account, state: _State) -> None:
        """Read until the rotated key is published, or the deadline passes (then leave it to checks)."""
        wait = POLL_INITIAL
        try:
            with structlog.contextvars.bound_contextvars(account=account.name, account_id=account.account_id):
                while state.pending is not None and not state.pending.late_reported:
                    await self._read(account, state, verifying=True)
                    if state.pending is None or state.pending.late_reported:
                        break
                    # Back off, but read again soon after the deadline rather than long after it.
                    remaining = (state.pending.deadline - self._clock.now()).total_seconds()
                    await self._sleep(max(0.1, min(wait, remaining)) if remaining > 0 else wait)
                    wait = min(POLL_MAX, wait * 2)
        finally:
            if asyncio.current_task() is state.task:
                state.task = None

    async def _read(self, account: Account, state: _State, *, verifying: bool = False) -> None:
        """One read: record what is served, then judge a pending rotation by it."""
        domain = await self._team_domain(account)
        seen: KeySet | None = None
        why: str | None = None
        if domain is not None:
            try:
                seen, clock, error = await self._reader.read(
                    domain, remaining=self._remaining(state) if verifying else None
                )
            except Exception as exc:  # any answer at all is a failed read, never a dead watcher
                seen, clock, error = None, None, CertsError(f"{type(exc).__name__}: the read failed")
            if clock is not None:
                self._clock.saw(clock)
            row = self._metrics.row(account)
            if isinstance(error, BudgetSpent) and clock is None:
                if not verifying:
                    self._metrics.reads_skipped.inc()
                    return  # a routine read: a rotation still watched is the watch's to judge
                why = (
                    "the certs endpoint could not be read before the deadline: publication.rate_limit "
                    "was spent (rotator_publication_reads_skipped_total counts the routine reads it cut)"
                )
            elif seen is None:
                row[_READS_ERROR] += 1
                self._log.warning("certs_read_failed", team_domain=domain, error=str(error))
            else:
                row[_READS_OK] += 1
                self._record(account, state, seen)
        if state.pending is not None:
            self._judge(account, state, seen, why)

    def _remaining(self, state: _State) -> Callable[[], float]:
        """Seconds until the deadline of the rotation watched, by Cloudflare's clock as last seen."""

        def remaining() -> float:
            pending = state.pending
            if pending is None or pending.late_reported:
                return 0.0
            return (pending.deadline - self._clock.now()).total_seconds()

        return remaining

    def _record(self, account: Account, state: _State, seen: KeySet) -> None:
        for kid in seen.kids:
            state.first_seen.setdefault(kid, seen.observed_at)
        state.first_seen = {k: v for k, v in state.first_seen.items() if k in seen.kids}
        row = self._metrics.row(account)
        row[_KEYS] = float(len(seen.kids))
        signing = seen.signing
        if signing is not None:
            row[_FIRST_SEEN] = state.first_seen[signing].timestamp()
        if len(seen.kids) != 2 and (state.seen is None or len(state.seen.kids) != len(seen.kids)):
            self._log.warning(
                "jwks_key_count_unexpected",
                keys=len(seen.kids),
                message="the certs endpoint should serve two keys, the current and the previous",
            )
        state.seen = seen

    def _judge(self, account: Account, state: _State, seen: KeySet | None, why: str | None = None) -> None:
        pending = state.pending
        assert pending is not None
        now = seen.observed_at if seen is not None else self._clock.now()
        judgement = judge(pending, seen, now)
        if why is not None and seen is None:
            judgement = Judgement(judgement.verdict, judgement.kid, why)
        row = self._metrics.row(account)
        if judgement.verdict is Verdict.PUBLISHED:
            assert seen is not None
            seconds = max(0.0, (seen.observed_at - pending.rotated_at).total_seconds())
            self._metrics.publication_seconds.observe(seconds)
            row[_LATE] = 0.0
            state.pending = None
            fields = {
                "kid": judgement.kid,
                "previous_kid": pending.previous,
                "publication_seconds": round(seconds, 3),
                "late": pending.late_reported,
                "rotated_at": iso(pending.rotated_at),
            }
            self._log.info("key_published", **fields)
            self._sink.emit(Event("key_published", account.name, account.account_id, now, fields))
        elif judgement.verdict is Verdict.LATE and not pending.late_reported:
            state.pending = _replace_late(pending)
            row[_LATE] = 1.0
            fields = {
                "rotated_at": iso(pending.rotated_at),
                "deadline_seconds": self._deadline.total_seconds(),
                "previous_kid": pending.previous,
                "reason": judgement.why,
            }
            self._log.error("key_publication_late", **fields)
            self._sink.emit(Event("key_publication_late", account.name, account.account_id, now, fields))


def _replace_late(pending: Pending) -> Pending:
    return Pending(
        pending.rotated_at, pending.baseline, pending.previous, pending.deadline, late_reported=True
    )


__all__ = [
    "BudgetSpent",
    "CertsReader",
    "Judgement",
    "KeySet",
    "Pending",
    "Publication",
    "PublicationMetrics",
    "ServerClock",
    "Verdict",
    "judge",
    "parse_certs",
]
