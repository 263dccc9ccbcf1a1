"""A client-side budget per credential: never more than ``requests`` sends in any ``per`` window.

Cloudflare counts requests in a window (1,200 per 5 minutes) and, past it, refuses everything for
five minutes. A token bucket that refills while its burst is spent would send up to twice the budget
inside one window; a log of send times cannot. The log holds at most ``requests`` timestamps.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable

# Below this share of Cloudflare's quota left, requests are spread over what remains of its
# window: other clients of the same user are spending the budget, and a 429 stops everything.
PACING_RESERVE = 0.1
# Longer headers are not read (a bounded parse of an outside answer).
MAX_HEADER = 1024
_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*([0-9]+)")


def _params(header: str | None) -> list[dict[str, int]]:
    """The integer parameters of each item of a structured-field list (``"default";r=50;t=30``)."""
    if not header or len(header) > MAX_HEADER:
        return []
    return [{k: int(v) for k, v in _PARAM.findall(item)} for item in header.split(",")]


def pacing_delay(ratelimit: str | None, policy: str | None, *, reserve: float = PACING_RESERVE) -> float:
    """Seconds to wait before the next request on a credential, from Cloudflare's ``Ratelimit``
    (``r`` remaining, ``t`` seconds until the window resets) and ``Ratelimit-Policy`` (``q``
    quota) headers (draft-ietf-httpapi-ratelimit-headers). Pure.

    Nothing while more than ``reserve`` of the quota is left (without a policy: while any is);
    below it, what is left spread over the rest of the window (``t / r``); none left: the whole
    ``t``. The client-side budget (``SlidingWindowLimiter``) stays the ceiling: this only slows.
    """
    items = [p for p in _params(ratelimit) if "r" in p and "t" in p]
    if not items:
        return 0.0
    quota = min((p["q"] for p in _params(policy) if "q" in p), default=None)
    tightest = min(items, key=lambda p: (p["r"], -p["t"]))
    remaining, reset = tightest["r"], float(tightest["t"])
    if remaining <= 0:
        return reset
    if quota is None or remaining > reserve * quota:
        return 0.0
    return reset / remaining


class SlidingWindowLimiter:
    def __init__(
        self,
        requests: int,
        per: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._requests = requests
        self._per = per
        self._monotonic = monotonic
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._paused_until = 0.0  # Cloudflare's retry-after, or its Ratelimit header's pace
        # asyncio.Lock wakes waiters first come, first served: no request starves.
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait until one more request fits the budget, count it as sent, and return when."""
        async with self._lock:
            while True:
                now = self._monotonic()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                while self._sent and self._sent[0] <= now - self._per:
                    self._sent.popleft()
                if len(self._sent) < self._requests:
                    self._sent.append(now)
                    return now
                await self._sleep(self._sent[0] + self._per - now)

    def try_acquire(self, *, leave: int = 0) -> bool:
        """Count one more request if it fits the budget now, without waiting; else False.

        ``leave``: fit only while at least this many more requests remain in the window after it,
        kept for those who ``acquire`` (rotator.after.publication reserves them for verification)."""
        if self._lock.locked():
            return False  # others are waiting: first come, first served
        now = self._monotonic()
        if now < self._paused_until:
            return False
        while self._sent and self._sent[0] <= now - self._per:
            self._sent.popleft()
        if len(self._sent) >= self._requests - leave:
            return False
        self._sent.append(now)
        return True

    def answered(self, acquired_at: float) -> None:
        """Count the request admitted at ``acquired_at`` (what ``acquire`` returned, or this
        limiter's clock read as ``try_acquire`` returned True) from now, when its answer came.

        Cloudflare counts a request when it arrives, which can be well after ``acquire``: the wait
        for a connection slot, a busy event loop, the way there. Counted from ``acquire``, the
        window could end here while Cloudflare's still holds the request, and the next window's
        burst would meet a 429. Counted from the answer, no request is counted here earlier than
        there; it costs the window one round trip.
        """
        sent = self._sent
        # Its own entry: the latest one not after acquired_at (none left if it already expired).
        index = bisect.bisect_right(sent, acquired_at) - 1
        if index >= 0:
            del sent[index]
        sent.append(self._monotonic())

    def unused(self, acquired_at: float) -> None:
        """Give back the request admitted at ``acquired_at``: its reservation ended unsent (the
        decision taken with it said not to send, or rotator is shutting down)."""
        sent = self._sent
        index = bisect.bisect_right(sent, acquired_at) - 1
        if index >= 0:
            del sent[index]

    def pace(self, seconds: float) -> None:
        """Hold the next request ``seconds`` (``pacing_delay``: Cloudflare's budget runs low)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    def pause(self, seconds: float) -> None:
        """Hold every request on this credential for ``seconds`` (Cloudflare's retry-after)."""
        self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._monotonic())
