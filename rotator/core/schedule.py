"""When the daemon checks an account next, on the local clock. Pure: every input is an argument.

The policy (rotator.core.policy.next_check) names the moment an account's decision could next
change, by Cloudflare's clock (its ``Date``); the scheduler runs on the local one. The two may run
at different speeds (the simulator and ``make demo`` run Cloudflare's fast), so ``ClockRate``
measures how many of Cloudflare's seconds pass per local monotonic second, and ``check_delay``
maps the moment through it, bounded by ``schedule.max_check_interval``, with jitter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.core.policy import NextCheck

# Below this much of Cloudflare's time between two samples, the rate is taken as 1: a Date has
# whole seconds, so a shorter span says too little (60 s: at most 2% off).
MIN_SPAN_SECONDS = 60.0
# A Date's arrival is timed when its answer is read, which a busy event loop can delay: the local
# span is taken this much short, so the rate errs high (checks early, never late). Below twice
# this much local time the rate is not measured (a fast clock's first answers, milliseconds apart).
LOCAL_SLACK_SECONDS = 0.05


@dataclass(frozen=True)
class Sample:
    server: datetime  # Cloudflare's Date
    local: float  # the local monotonic clock when it arrived


class ClockRate:
    """How fast Cloudflare's clock runs against the local monotonic clock, from its Dates.

    The first Date seen and the latest one give the rate; a Date has whole seconds (truncated),
    and its arrival may be timed late, so the rate is taken high (a second more of Cloudflare's,
    ``LOCAL_SLACK_SECONDS`` less of the local span): a check lands early rather than late, and an
    early check finds the moment still ahead and waits for the rest.
    """

    def __init__(self) -> None:
        self._first: Sample | None = None
        self._last: Sample | None = None

    def observe(self, server: datetime, local: float) -> None:
        sample = Sample(server, local)
        if self._first is None:
            self._first = sample
        self._last = sample

    @property
    def known(self) -> bool:
        """Whether the Dates seen span enough of Cloudflare's time to measure the rate."""
        first, last = self._first, self._last
        if first is None or last is None:
            return False
        span = (last.server - first.server).total_seconds()
        return span >= MIN_SPAN_SECONDS and last.local - first.local > 2 * LOCAL_SLACK_SECONDS

    @property
    def rate(self) -> float:
        """Cloudflare's seconds per local second (1 until ``known``)."""
        first, last = self._first, self._last
        if not self.known or first is None or last is None:
            return 1.0
        server = (last.server - first.server).total_seconds()
        return (server + 1.0) / (last.local - first.local - LOCAL_SLACK_SECONDS)

    def server_now(self, local: float) -> datetime | None:
        """Cloudflare's clock at local monotonic time ``local``; None before any Date."""
        if self._last is None:
            return None
        return self._last.server + timedelta(seconds=(local - self._last.local) * self.rate)


def check_delay(
    plan: NextCheck,
    *,
    server_now: datetime,
    rate: float,
    check_interval: float,
    max_check_interval: float,
    jitter: float,
    random: float,
) -> float:
    """Local seconds until the account's next check.

    ``random`` in [0, 1) draws the jitter. A moment is checked in the ``min(jitter,
    check_interval)`` after it, so a rotation allowed from then happens within one
    check_interval; a regular check (a read may change the decision, or the moment passed
    without changing it) comes after ``check_interval`` plus up to ``jitter``, as before due-aware
    checks; and nothing is later than ``max_check_interval``, jitter included.
    """
    candidates: list[tuple[float, float]] = []
    if plan.at is not None and plan.at > server_now:
        candidates.append(((plan.at - server_now).total_seconds() / rate, min(jitter, check_interval)))
    if plan.regular or not candidates:
        candidates.append((check_interval, jitter))
    base, spread = min(candidates)
    base = min(base, max_check_interval - spread)
    return max(0.0, base) + random * spread


# Of the first reads of accounts with nothing planned, this share of the client-side budget goes at
# once (100 at the default 1,000 per 5 minutes: under a tenth of Cloudflare's 1,200), the rest
# spread at half the budget, so other clients of the same user keep the other half.
AT_ONCE_SHARE = 0.1


def first_read_offset(index: int, *, requests: int, per: float) -> float:
    """Seconds from now for the ``index``-th (from 0) of the first reads of accounts with nothing
    planned: the first ``AT_ONCE_SHARE`` of the budget at once, then one every ``per / (requests /
    2)`` seconds (a few accounts: all at once; 100,000: over about 17 hours at the default budget)."""
    at_once = int(requests * AT_ONCE_SHARE)
    return max(0, index - at_once + 1) * per / max(1.0, requests / 2)


def first_read_period(count: int, *, requests: int, per: float) -> float:
    """How long the first reads of ``count`` accounts with nothing planned take (logged)."""
    return first_read_offset(count - 1, requests=requests, per=per) if count > 0 else 0.0
