"""Cloudflare's Access key configuration API: the three operations, safely.

Every failure leaves this module as one of rotator's own errors (``rotator.errors``), translated in
one place, ``_sent``, whatever the transport. GET and PUT are retried on what can pass (no answer,
429, 5xx) with backoff and jitter. The rotate POST is not idempotent, so it is never retried
blindly: see ``rotate``.

Every request is first reserved (``reserve``: the credential's budget, any 429 pause, a connection
slot), then sent by its ``Reservation``, which waits for nothing more: a caller that decides in
between (the rotation protocol, ``enforce_interval``) decides at the moment the request leaves.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx
import structlog

from rotator import __version__
from rotator.cloudflare.bounded import MalformedAnswer, loads
from rotator.cloudflare.ratelimit import SlidingWindowLimiter, pacing_delay
from rotator.cloudflare.transport import AiohttpTransport
from rotator.config.credentials import Credential
from rotator.core import rfc3339
from rotator.core.keys import KeyConfig
from rotator.errors import (
    Abandoned,
    APIError,
    AuthError,
    CloudflareMessage,
    ConnectError,
    HTTPStatusError,
    NotFoundError,
    RateLimitedError,
    ResponseError,
    ServerError,
    TransportError,
)

_T = TypeVar("_T")
USER_AGENT = f"rotator/{__version__} (+https://github.com/rotator/rotator)"
# What every request carries: httpx.AsyncClient's defaults, with rotator's Accept and User-Agent.
_DEFAULT_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": USER_AGENT,
}
# GET and PUT: attempts in all, and the backoff between them (exponential, with jitter).
READ_ATTEMPTS = 4
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: exponential from ``initial`` up to ``maximum``, with jitter."""

    initial: float = BACKOFF_INITIAL
    maximum: float = BACKOFF_MAX

    def wait(self, retry_num: int) -> float:
        """Seconds before retry ``retry_num`` (1: the first): ``initial`` doubled each time, plus up
        to ``initial`` of jitter, at most ``maximum`` (stamina's formula, which rotator used before)."""
        try:
            wait = self.initial * 2.0 ** (retry_num - 1)
        except OverflowError:
            return self.maximum
        return min(self.maximum, wait + random.uniform(0, self.initial))  # noqa: S311 - jitter, not a secret

    @classmethod
    def within(cls, check_interval: float) -> Backoff:
        """Retrying past the next check is pointless (that check retries anyway), so a short
        check interval shortens the backoff with it."""
        return cls(min(BACKOFF_INITIAL, check_interval / 40), min(BACKOFF_MAX, check_interval / 8))


# Without a retry-after header, how long a 429 pauses the credential.
DEFAULT_RETRY_AFTER = 60.0
# The longest a 429 pauses a credential, whatever its retry-after says (cloudflare.max_retry_after):
# `inf`, `1e308` or a date centuries away would otherwise hold it until a restart.
DEFAULT_MAX_RETRY_AFTER = 900.0

_PERMISSION = {
    "GET": "Access: Organizations, Identity Providers, and Groups Read",
    "PUT": "Access: Organizations, Identity Providers, and Groups Write",
    "POST": "Access: Organizations, Identity Providers, and Groups Write",
}


class RequestObserver(Protocol):
    def observe_request(self, method: str, endpoint: str, code: str, seconds: float) -> None: ...


class _Reply(Protocol):
    """An answer, read whole: an ``httpx.Response``, or rotator's transport's ``Answer``."""

    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    def json(self) -> Any: ...


class _NoObserver:
    def observe_request(self, method: str, endpoint: str, code: str, seconds: float) -> None:
        pass


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CloudflareClient:
    """One client for every account: one connection pool, one budget per credential."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_concurrency: int = 4,
        rate_limit: tuple[int, float] = (1000, 300.0),
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        ca_bundle: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: RequestObserver | None = None,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: Backoff = Backoff(),
        read_attempts: int = READ_ATTEMPTS,
    ) -> None:
        self._backoff = backoff
        self._read_attempts = read_attempts
        self._stopping = asyncio.Event()
        # The transport is called directly, not through an httpx.AsyncClient: for three fixed
        # endpoints the client's layer (merging URLs, cookies, building and wrapping each request,
        # logging it) cost more CPU than the request itself (bench/RESULTS.md). What it did that
        # matters is done here, once: the base URL, the default headers, the timeout. Cookies are
        # not kept: the API authenticates by its headers, and a client shared by every account
        # must not send one account's cookies with another's requests.
        self._base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout).as_dict()
        # aiohttp's pool under httpx's API: httpcore's costs CPU per request in proportion to
        # the pool's size (rotator/cloudflare/transport.py, bench/RESULTS.md). A custom CA is for a
        # TLS-inspecting proxy; verification itself is never turned off. ``timeout`` is also
        # the deadline of each request as a whole: httpx's bound one read each, and an answer
        # trickling in a byte at a time held its check (and its account) for ever.
        self._transport = transport or AiohttpTransport(
            max_connections=max_concurrency, ca_bundle=ca_bundle, deadline=timeout
        )
        self._closed = False
        # Per credential fingerprint: the headers, as httpx's type and as (name, value) pairs.
        self._headers: dict[str, tuple[httpx.Headers, list[tuple[str, str]]]] = {}
        self._origin = httpx.URL(self._base_url)
        self._fetch = self._transport.fetch if isinstance(self._transport, AiohttpTransport) else None
        self._in_flight = _Slots(max_concurrency)
        self._rate_limit = rate_limit
        self._max_retry_after = max_retry_after
        self._limiters: dict[str, SlidingWindowLimiter] = {}
        self._observer = observer or _NoObserver()
        self._clock = clock
        # The clock of request durations and of every credential's rate budget, and how waits wait.
        self._monotonic = monotonic
        self._sleep = sleep
        self._server_seen: tuple[datetime, float] | None = None  # the latest Date, and when
        self._last_date: tuple[str, datetime | None] = ("", None)  # the latest Date header, parsed

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    def limiter(self, credential: Credential) -> SlidingWindowLimiter:
        """The budget of this credential, shared by every account that uses the same secret."""
        limiter = self._limiters.get(credential.fingerprint)
        if limiter is None:
            limiter = SlidingWindowLimiter(*self._rate_limit, monotonic=self._monotonic, sleep=self._sleep)
            self._limiters[credential.fingerprint] = limiter
        return limiter

    async def get_keys(self, account_id: str, credential: Credential) -> KeyConfig:
        """Read the key configuration; retried on transient failures."""
        config = await self._retrying(lambda: self._send("GET", "keys", account_id, credential))
        if config.is_empty:
            raise ResponseError(
                "Cloudflare's answer to GET keys carried no key configuration (no result and no key fields)"
            )
        return config

    async def get_team_domain(self, account_id: str, credential: Credential) -> str | None:
        """The organization's ``auth_domain`` (the team domain of its certs), None when it has none.

        One GET of ``/accounts/{id}/access/organizations``, retried like GET keys, within the
        credential's budget (it is Cloudflare's API); the Read permission is enough.
        """
        url = f"{self._base_url}/accounts/{account_id}/access/organizations"

        async def read() -> dict[str, Any]:
            response = await self._exchange("GET", "organizations", url, credential)
            return self._envelope("GET organizations", "GET", response)

        data = await self._retrying(read)
        result = data.get("result")
        domain = (result if isinstance(result, dict) else data).get("auth_domain")
        if not isinstance(domain, str) or not domain.strip():
            return None
        return domain.strip().lower()

    async def set_interval(self, account_id: str, credential: Credential, days: int) -> KeyConfig:
        """Set how often Cloudflare rotates on its own; retried (a PUT is idempotent)."""
        config = await self.enforce_interval(account_id, days, lambda: credential)
        assert config is not None  # always wanted
        return config

    async def enforce_interval(
        self, account_id: str, days: int, wanted: Callable[[], Credential | None]
    ) -> KeyConfig | None:
        """PUT the interval, retried like ``set_interval``, each attempt decided when it leaves:
        ``wanted`` is asked after every wait (budget, 429 pause, slot, backoff), right before the
        PUT is sent, for the credential to send it with; None (a reload set ``dry_run``, removed
        the account or changed its interval) and nothing is sent: None is returned."""

        async def attempt() -> KeyConfig | None:
            while True:
                credential = wanted()
                if credential is None:
                    return None
                async with self.reserve(credential) as slot:
                    now_wanted = wanted()  # decided again when nothing is left to wait for
                    if now_wanted is None:
                        return None
                    if now_wanted.fingerprint == credential.fingerprint:
                        return await slot.set_interval(account_id, days)
                # A reload changed the credential while this waited: reserve with the new one.

        return await self._retrying(attempt)

    async def rotate(self, account_id: str, credential: Credential) -> KeyConfig:
        """Rotate the key: one POST, never retried here (a rotation is not idempotent).

        What a failure means for the rotation is the caller's to judge (rotator.check.rotation): a
        RateLimitedError, a ConnectError or an Abandoned was never applied; an APIError is
        Cloudflare's refusal; any other error lost the answer, and the rotation may have happened.
        The protocol itself reserves first and decides inside (``reserve``, ``Reservation.rotate``).
        """
        async with self.reserve(credential) as slot:
            return await slot.rotate(account_id)

    def server_now(self) -> datetime:
        """Cloudflare's clock as last seen (its ``Date``), advanced by the time since then."""
        if self._server_seen is None:
            return self._clock()
        date, at = self._server_seen
        return date + timedelta(seconds=max(0.0, self._monotonic() - at))

    @property
    def server_seen(self) -> tuple[datetime, float] | None:
        """The latest ``Date`` Cloudflare sent, and the monotonic time it arrived (None before any)."""
        return self._server_seen

    @property
    def backoff(self) -> Backoff:
        return self._backoff

    def paused_for(self, credential: Credential) -> float:
        """Seconds left of the credential's pause after a 429 (0: not paused)."""
        return self.limiter(credential).paused_for

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait, unless rotator is shutting down: then raise Abandoned at once."""
        await self._unless_stopping(self._sleep(seconds))

    def stop_waiting(self) -> None:
        """Shutdown: requests still waiting for their budget, a slot or a backoff are not sent."""
        self._stopping.set()
        self._in_flight.stop()

    async def _unless_stopping(self, waiting: Awaitable[_T]) -> _T:
        """Wait, unless ``stop_waiting`` is called first: then raise Abandoned.

        The wait runs as a task of its own, so that a stop can cancel it. A task told to cancel
        has not finished cancelling (it has no outcome to read yet), so it is awaited first: its
        cleanup runs (a limiter's lock is released) and nothing is left for asyncio to report as
        never retrieved. When the caller itself is cancelled, the wait is cancelled with it and
        the cancellation goes on up, as any other.
        """
        task = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()  # done before the stop, or with it: its outcome stands
            task.cancel()
            await asyncio.wait({task})  # returns once it has finished; never raises its outcome
            if not task.cancelled():
                task.exception()  # finished otherwise as it was cancelled: read, and dropped
            raise Abandoned("not sent: rotator is shutting down")
        finally:
            stop.cancel()
            if not task.done():  # the caller was cancelled
                task.cancel()
                task.add_done_callback(_read_outcome)

    async def _retrying(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """``attempt`` (a GET or a PUT), sent again on what can pass (no answer, 429, 5xx): at most
        ``read_attempts`` in all, a backoff apart, each logged as ``request_retry_scheduled``.

        A loop of its own rather than stamina's: its retry context (tenacity's state, futures,
        locks) cost 35 µs per request and 45 objects in reference cycles, which only the garbage
        collector frees; a full collection walked every check in flight (bench/RESULTS.md). A
        backoff is a pause (``pause``): shutdown ends it, and the request is not sent again.
        A long retry-after is waited out by the credential's limiter, not cut short here.
        """
        retry_num = 0
        while True:
            try:
                return await attempt()
            except (TransportError, RateLimitedError, ServerError) as exc:
                retry_num += 1
                if retry_num >= self._read_attempts:
                    raise
                wait = self._backoff.wait(retry_num)
                _log.warning(
                    "request_retry_scheduled",
                    retry_num=retry_num,
                    wait_seconds=round(wait, 2),
                    error=str(exc),
                    error_type=type(exc).__name__,
                )
            await self.pause(wait)  # reached only after a failure that is retried

    async def _send(
        self,
        method: str,
        endpoint: str,
        account_id: str,
        credential: Credential,
        body: dict[str, Any] | None = None,
    ) -> KeyConfig:
        """Send one request; translate every outcome into a KeyConfig or a rotator error."""
        url = self._rotate_url(account_id) if endpoint == "rotate" else self._keys_url(account_id)
        response = await self._exchange(method, endpoint, url, credential, body)
        return self._parse(f"{method} {endpoint}", method, response)

    def _keys_url(self, account_id: str) -> str:
        return f"{self._base_url}/accounts/{account_id}/access/keys"

    def _rotate_url(self, account_id: str) -> str:
        return f"{self._base_url}/accounts/{account_id}/access/keys/rotate"

    def reserve(self, credential: Credential) -> Reservation:
        """Everything a request waits for, before it is decided: ``async with client.reserve(c) as
        slot`` returns once the credential's budget has room (a 429's pause waited out) and a
        connection slot is held. ``slot.send`` then waits for nothing more: a caller that decides
        between the two decides at the moment the request leaves. Unsent, the reservation gives
        its budget back. Abandoned, at once, once rotator is shutting down."""
        return Reservation(self, credential)

    async def _exchange(
        self,
        method: str,
        endpoint: str,
        url: str,
        credential: Credential,
        body: dict[str, Any] | None = None,
    ) -> _Reply:
        """One request: reserved, then sent (a read decides nothing in between)."""
        async with Reservation(self, credential) as slot:
            return await slot.exchange(method, endpoint, url, body)

    async def _sent(
        self,
        method: str,
        endpoint: str,
        url: str,
        credential: Credential,
        body: dict[str, Any] | None,
        limiter: SlidingWindowLimiter,
        acquired_at: float,
    ) -> _Reply:
        """The request on the wire, under a reservation; every outcome mapped to rotator's errors,
        here only, whatever the transport."""
        what = f"{method} {endpoint}"
        started = self._monotonic()
        try:
            response = await self._request(method, url, credential, body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._observe(method, endpoint, "error", started)
            raise ConnectError(f"{what}: could not connect to Cloudflare ({_describe(exc)})") from exc
        except httpx.TimeoutException as exc:
            self._observe(method, endpoint, "error", started)
            raise TransportError(f"{what}: no answer from Cloudflare within the timeout") from exc
        except httpx.TransportError as exc:
            self._observe(method, endpoint, "error", started)
            raise TransportError(f"{what}: connection failed ({_describe(exc)})") from exc
        finally:
            # Cloudflare counts a request when it arrives: the budget counts it from the answer.
            limiter.answered(acquired_at)
        self._observe(method, endpoint, str(response.status_code), started)
        # Other clients of the same user spend the same budget: slow down before a 429.
        limiter.pace(
            pacing_delay(response.headers.get("ratelimit"), response.headers.get("ratelimit-policy"))
        )
        if response.status_code == 429:
            retry_after = self._retry_after(response)
            limiter.pause(retry_after)
            raise RateLimitedError(
                f"{what}: rate limited by Cloudflare (429); this credential pauses for {retry_after:g}s",
                retry_after=retry_after,
                errors=_errors(response),
            )
        return response

    async def _request(
        self, method: str, url: str, credential: Credential, body: dict[str, Any] | None
    ) -> _Reply:
        """One request through the transport, its answer read whole (as httpx.AsyncClient does).

        One encoding for every transport: the client encodes the body and the headers once, and
        rotator's own transport sends exactly those (``fetch``: without httpx's Request, URL and
        Response, which cost a third of the request, bench/RESULTS.md); any other transport
        (``httpx.MockTransport`` in tests, one a caller injects) gets the same bytes and headers
        in httpx's types. Its errors are httpx's in both cases, mapped to rotator's in ``_sent``."""
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        _, header_items = self._headers_for(credential)
        content = None
        if body is not None:
            content = _json_body(body)
            header_items = [*header_items, ("Content-Type", "application/json")]
        if self._fetch is not None:
            return await self._fetch(
                method, url, header_items, content, origin=self._origin, timeouts=self._timeout
            )
        request = httpx.Request(
            method, url, headers=header_items, content=content, extensions={"timeout": self._timeout}
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    def _headers_for(self, credential: Credential) -> tuple[httpx.Headers, list[tuple[str, str]]]:
        """httpx.AsyncClient's default headers, rotator's, and the credential's, merged once."""
        merged = self._headers.get(credential.fingerprint)
        if merged is None:
            headers = httpx.Headers(_DEFAULT_HEADERS)
            headers.update(credential.headers)
            merged = self._headers[credential.fingerprint] = (headers, headers.multi_items())
        return merged

    def _parse(self, what: str, method: str, response: _Reply) -> KeyConfig:
        return _key_config(what, self._envelope(what, method, response), self._server_time(response))

    def _envelope(self, what: str, method: str, response: _Reply) -> dict[str, Any]:
        """The answer's JSON object, or the rotator error its status or body amounts to."""
        status = response.status_code
        data = _json(response)
        errors = _errors_in(data)
        detail = "; ".join(str(e) for e in errors) or response.reason_phrase
        if status >= 500:
            raise ServerError(
                f"{what}: Cloudflare answered {status} ({detail})", status=status, errors=errors
            )
        if status == 401:  # who is asking is unknown: no permission would help
            raise AuthError(
                f"{what}: Cloudflare did not accept the credential (401: {detail}): the API token (or "
                "the email and Global API Key) is invalid, expired or revoked; replace the secret",
                status=status,
                errors=errors,
            )
        if status == 403:
            raise AuthError(
                f"{what}: Cloudflare refused the credential (403: {detail}): it lacks the permission "
                f"'{_PERMISSION[method]}' on this account",
                status=status,
                errors=errors,
            )
        if status == 404:
            raise NotFoundError(
                f"{what}: Cloudflare knows no such account, or the credential cannot see it (404: {detail})",
                status=status,
                errors=errors,
            )
        if not 200 <= status < 300:
            raise APIError(f"{what}: Cloudflare answered {status} ({detail})", status=status, errors=errors)
        if not isinstance(data, dict):
            raise ResponseError(f"{what}: Cloudflare answered {status} with a body that is not a JSON object")
        if data.get("success") is False:
            raise APIError(
                f"{what}: Cloudflare answered success: false ({detail})",
                status=status,
                errors=errors,
            )
        return data

    def _retry_after(self, response: _Reply) -> float:
        """How long a 429 pauses its credential: the retry-after (seconds, or an HTTP date read
        against Cloudflare's clock), at most ``max_retry_after``. A value past the cap, or not
        finite (``inf``, ``nan``), is the cap, and a warning says so: one bad header must not hold
        a credential until a restart."""
        cap = self._max_retry_after
        value = response.headers.get("retry-after")
        seconds = None if value is None else _seconds_from(value, self._server_time(response))
        if seconds is None:
            return min(DEFAULT_RETRY_AFTER, cap)  # none, or unreadable: Cloudflare's usual pause
        if math.isfinite(seconds) and seconds <= cap:
            return max(0.0, seconds)
        _log.warning(
            "retry_after_capped",
            retry_after=(value or "")[:64],  # the server's words, whatever they are, within reason
            max_retry_after_seconds=cap,
        )
        return cap

    def _server_time(self, response: _Reply) -> datetime:
        """Cloudflare's clock from the Date header: it judges rotations, not a skewed local clock."""
        header = response.headers.get("date")
        if header:
            date = self._last_date[1] if header == self._last_date[0] else _http_date(header)
            if date is not None:
                self._last_date = (header, date)  # a Date has whole seconds: answers share it
                self._server_seen = (date, self._monotonic())
                return date
        return self._clock()

    def _observe(self, method: str, endpoint: str, code: str, started: float) -> None:
        self._observer.observe_request(method, endpoint, code, self._monotonic() - started)


class Reservation:
    """What one request waits for, had before it is decided (``CloudflareClient.reserve``).

    Entered: the credential's budget counts the request (any 429 pause waited out) and a connection
    slot is held; ``waited`` says whether either wait suspended. ``exchange``, ``rotate`` and
    ``set_interval`` wait for nothing of their own: the request leaves at once (its connection
    opened if the pool has none idle).
    Leaving unsent gives the budget back; leaving frees the slot either way.
    """

    __slots__ = ("_acquired_at", "_client", "_credential", "_limiter", "_used", "waited")

    def __init__(self, client: CloudflareClient, credential: Credential) -> None:
        self._client = client
        self._credential = credential
        self._limiter = client.limiter(credential)
        self._acquired_at = 0.0
        self._used = False
        self.waited = False

    async def __aenter__(self) -> Reservation:
        client, limiter = self._client, self._limiter
        # The budget first, then a slot: a request waiting out its credential's 429 pause or spent
        # window is not in flight, and must not hold a slot that other credentials' requests need.
        while True:
            if client.stopping:
                raise Abandoned("not sent: rotator is shutting down")
            if limiter.try_acquire():
                acquired_at = client._monotonic()
            else:
                acquired_at = await client._unless_stopping(limiter.acquire())
                self.waited = True
            in_flight = client._in_flight
            if not in_flight.try_take():
                try:
                    await in_flight.take()
                except BaseException:
                    limiter.unused(acquired_at)
                    raise
                self.waited = True
            if limiter.paused_for <= 0:
                break
            # A 429 paused the credential while this waited for its slot: wait that out too.
            client._in_flight.release()
            limiter.unused(acquired_at)
            self.waited = True
        self._acquired_at = acquired_at
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._client._in_flight.release()
        if not self._used:
            self._limiter.unused(self._acquired_at)

    async def exchange(
        self, method: str, endpoint: str, url: str, body: dict[str, Any] | None = None
    ) -> _Reply:
        """Send the request now, once: Abandoned, unsent, once rotator is shutting down."""
        client = self._client
        if self._used:
            raise RuntimeError("a reservation sends one request")
        if client.stopping:
            raise Abandoned("not sent: rotator is shutting down")
        self._used = True
        return await client._sent(
            method, endpoint, url, self._credential, body, self._limiter, self._acquired_at
        )

    async def rotate(self, account_id: str) -> KeyConfig:
        """The rotate POST, now (``CloudflareClient.rotate`` says what its errors mean)."""
        client = self._client
        response = await self.exchange("POST", "rotate", client._rotate_url(account_id))
        return client._parse("POST rotate", "POST", response)

    async def set_interval(self, account_id: str, days: int) -> KeyConfig:
        """The interval PUT, now, once."""
        client = self._client
        body = {"key_rotation_interval_days": days}
        response = await self.exchange("PUT", "keys", client._keys_url(account_id), body)
        return client._parse("PUT keys", "PUT", response)


class _Slots:
    """The connection slots (``max_concurrency``): first come, first served, as a semaphore, and
    a stop fails every waiter at once with Abandoned. (An ``asyncio.Semaphore`` raced against the
    stop event cost two tasks and an ``asyncio.wait`` per waiting request: a tenth of a check's
    CPU when thousands of checks queue for 64 slots.)"""

    __slots__ = ("_free", "_stopped", "_waiters")

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._stopped = False

    def try_take(self) -> bool:
        """Take a free slot without waiting (none while others wait: first come, first served)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot, handed over by ``release``; Abandoned once stopped."""
        if self._stopped:
            raise Abandoned("not sent: rotator is shutting down")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed the slot in the same instant: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def stop(self) -> None:
        self._stopped = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Abandoned("not sent: rotator is shutting down"))


_log = structlog.get_logger("rotator")


def _read_outcome(task: asyncio.Future[Any]) -> None:
    """Read a finished task's outcome, which nobody awaits, so asyncio does not report it."""
    if not task.cancelled():
        task.exception()


def _describe(exc: httpx.HTTPError) -> str:
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _http_date(header: str) -> datetime | None:
    try:
        return parsedate_to_datetime(header).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _seconds_from(retry_after: str, now: datetime) -> float | None:
    """A retry-after's seconds from ``now`` (any float, ``inf`` and ``nan`` included), or None."""
    try:
        return float(retry_after)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    # An HTTP date is in GMT; a "-0000" zone reads as naive.
    return (when.replace(tzinfo=when.tzinfo or UTC) - now).total_seconds()


def _json_body(body: dict[str, Any]) -> bytes:
    """A request's JSON body as httpx encodes ``json=``."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _json(response: _Reply) -> Any:
    """The answer's JSON document, None when it is not JSON (an HTML page from the edge)."""
    try:
        return loads(response.content)  # no deeper than MAX_DEPTH: a deep one is no JSON either
    except MalformedAnswer:
        return None


def _errors(response: _Reply) -> tuple[CloudflareMessage, ...]:
    return _errors_in(_json(response))


def _errors_in(data: Any) -> tuple[CloudflareMessage, ...]:
    raw = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return ()
    messages = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("message"), str):
            code = item.get("code")
            messages.append(CloudflareMessage(code if isinstance(code, int) else None, item["message"]))
    return tuple(messages)


def _key_config(what: str, data: dict[str, Any], observed_at: datetime) -> KeyConfig:
    """Read the three fields from ``result``, or from the top level (the 2024 spec's shape)."""
    result = data.get("result")
    sources = [result, data] if isinstance(result, dict) else [data]

    def field(name: str) -> Any:
        return next((s[name] for s in sources if s.get(name) is not None), None)

    days, interval, last = (
        field("days_until_next_rotation"),
        field("key_rotation_interval_days"),
        field("last_key_rotation_at"),
    )
    for name, value in (
        ("days_until_next_rotation", days),
        ("key_rotation_interval_days", interval),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ResponseError(f"{what}: Cloudflare's {name} is not a number")
    return KeyConfig(
        days_until_next_rotation=None if days is None else float(days),
        key_rotation_interval_days=None if interval is None else float(interval),
        last_key_rotation_at=None if last is None else _timestamp(what, last),
        observed_at=observed_at,
    )


def _timestamp(what: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise ResponseError(
            f"{what}: Cloudflare's last_key_rotation_at is not a string: expected {rfc3339.EXPECTED}"
        )
    try:
        return rfc3339.parse(value)
    except ValueError as exc:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ResponseError(
            f"{what}: Cloudflare's last_key_rotation_at {shown!r} is not RFC 3339: {exc}"
        ) from None


__all__ = ["CloudflareClient", "HTTPStatusError"]
