"""The client-side budget per credential, on a fake clock: nothing here waits for real time.

Cloudflare counts requests in a window and, past it, refuses everything for five minutes; the
limiter must never put more than ``requests`` sends in any window of length ``per``, serve waiters
first come first served, and hold everything during a pause (a 429's retry-after).
"""

from __future__ import annotations

import asyncio
import bisect
import random

import pytest

from rotator.cloudflare.ratelimit import SlidingWindowLimiter, pacing_delay
from tests.support.clock import FakeClock, settle


def busiest_window(sends: list[float], per: float) -> int:
    """The most sends in any half-open window [t, t + per); it suffices to start one at each send."""
    ordered = sorted(sends)
    return max((bisect.bisect_left(ordered, t + per) - i for i, t in enumerate(ordered)), default=0)


async def test_never_more_than_requests_in_any_window_over_a_long_run() -> None:
    """Bursts and lulls for hours of simulated time; every window holds at most `requests` sends,
    and no send waited longer than the window required (the budget is used, not wasted)."""
    requests, per = 10, 60.0
    clock = FakeClock(auto=True)
    limiter = SlidingWindowLimiter(requests, per, monotonic=clock.monotonic, sleep=clock.sleep)
    rng = random.Random(20240501)
    arrivals: list[float] = []
    sends: list[float] = []

    async def send() -> None:
        arrived = clock.now
        await limiter.acquire()
        arrivals.append(arrived)  # appended in the order acquire returned
        sends.append(clock.now)

    for _ in range(600):
        clock.now += rng.choice([0.0, 0.0, 0.25, 1.0, 5.5, 30.0, 59.75, 60.0, 90.0])
        await asyncio.gather(*(send() for _ in range(rng.randint(1, 2 * requests))))

    assert len(sends) > 5000
    assert busiest_window(sends, per) == requests
    assert sends == sorted(sends)
    # A FIFO sliding window sends each request at the first instant the budget allows.
    for k, (arrived, sent) in enumerate(zip(arrivals, sends, strict=True)):
        earliest = max(arrived, sends[k - 1] if k else arrived)
        if k >= requests:
            earliest = max(earliest, sends[k - requests] + per)
        assert sent == earliest, f"send {k} went out at {sent}, allowed at {earliest}"
    assert clock.now > 10 * 3600


async def test_a_spent_budget_is_not_refilled_inside_the_window() -> None:
    """A token bucket would let a second burst through while the first is still in the window."""
    clock = FakeClock(auto=True)
    limiter = SlidingWindowLimiter(5, 300.0, monotonic=clock.monotonic, sleep=clock.sleep)
    sends = []
    for _ in range(15):
        await limiter.acquire()
        sends.append(clock.now)
    assert sends == [0.0] * 5 + [300.0] * 5 + [600.0] * 5


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = FakeClock(auto=False)
    limiter = SlidingWindowLimiter(2, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    served: list[tuple[int, float]] = []

    async def send(n: int) -> None:
        await limiter.acquire()
        served.append((n, clock.now))

    tasks = [asyncio.create_task(send(n)) for n in range(6)]
    await settle()
    assert served == [(0, 0.0), (1, 0.0)]
    await clock.advance(5)
    tasks.append(asyncio.create_task(send(6)))  # arrives later: must not jump the queue
    await clock.advance(30)
    await asyncio.gather(*tasks)
    assert served == [(0, 0.0), (1, 0.0), (2, 10.0), (3, 10.0), (4, 20.0), (5, 20.0), (6, 30.0)]


async def test_a_cancelled_waiter_does_not_hold_up_or_spend_the_budget() -> None:
    clock = FakeClock(auto=False)
    limiter = SlidingWindowLimiter(1, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire())
    after = asyncio.create_task(limiter.acquire())
    await settle()
    gone.cancel()
    await clock.advance(10)
    await after
    assert clock.now == 10.0
    # `after` took the only slot of the new window; the cancelled waiter took none.
    late = asyncio.create_task(limiter.acquire())
    await clock.advance(9.5)
    assert not late.done()
    await clock.advance(0.5)
    await late
    assert gone.cancelled()


async def test_pause_holds_every_request_until_it_ends_then_the_budget_applies() -> None:
    clock = FakeClock(auto=True)
    limiter = SlidingWindowLimiter(3, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    limiter.pause(120)
    assert limiter.paused_for == 120
    sends = []
    for _ in range(5):
        await limiter.acquire()
        sends.append(clock.now)
    # A pause is not a refill: after it, the usual budget, not a bigger burst.
    assert sends == [120.0, 120.0, 120.0, 130.0, 130.0]
    assert limiter.paused_for == 0


async def test_pause_holds_requests_already_waiting_and_concurrent_ones() -> None:
    clock = FakeClock(auto=False)
    limiter = SlidingWindowLimiter(1, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())  # waits for the window, until t=10
    await clock.advance(5)
    limiter.pause(50)  # a 429 arrives meanwhile (another request's answer): hold until t=55
    others = [asyncio.create_task(limiter.acquire()) for _ in range(2)]
    await clock.advance(49.5)
    assert not waiting.done()
    assert not any(t.done() for t in others)
    await clock.advance(0.5)
    await waiting
    assert clock.now == 55.0
    await clock.advance(20)
    await asyncio.gather(*others)


@pytest.mark.parametrize("second", [0.0, 5.0, 119.0])
async def test_a_shorter_pause_does_not_cut_a_longer_one(second: float) -> None:
    clock = FakeClock(auto=True)
    limiter = SlidingWindowLimiter(3, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    limiter.pause(120)
    limiter.pause(second)
    assert limiter.paused_for == 120
    await limiter.acquire()
    assert clock.now == 120


async def test_a_request_is_counted_from_its_answer_so_the_window_never_ends_before_cloudflares() -> None:
    """Cloudflare counts a request when it arrives, which can be long after the budget let it go
    (a wait for a connection, a busy loop): counted from the answer, the next window cannot start
    while Cloudflare's still holds it. Each answer moves its own request, whatever the order."""
    clock = FakeClock(auto=True)
    limiter = SlidingWindowLimiter(3, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    first = await limiter.acquire()
    clock.now = 1.0
    assert limiter.try_acquire()
    second = clock.monotonic()
    clock.now = 2.0
    third = await limiter.acquire()
    assert (first, second, third) == (0.0, 1.0, 2.0)
    clock.now = 4.0
    limiter.answered(second)  # answered out of order: the others are still on their way
    clock.now = 6.0
    limiter.answered(first)
    clock.now = 10.5  # the first went out 10.5 s ago, but was answered only 4.5 s ago
    assert not limiter.try_acquire()
    clock.now = 12.0  # the third was never answered: it counts from its send, and it expired
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.now = 14.0  # the second's answer is 10 s old
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.now = 16.0
    assert limiter.try_acquire()


async def test_try_acquire_leaves_what_it_is_told_to_for_those_who_wait() -> None:
    clock = FakeClock(auto=False)
    limiter = SlidingWindowLimiter(5, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert [limiter.try_acquire(leave=2) for _ in range(4)] == [True, True, True, False]
    await limiter.acquire()  # the reserve is there for acquire
    await limiter.acquire()
    assert not limiter.try_acquire()


@pytest.mark.parametrize(
    ("ratelimit", "policy", "expected"),
    [
        pytest.param('"default";r=900;t=120', '"default";q=1200;w=300', 0.0, id="plenty left"),
        pytest.param('"default";r=120;t=60', '"default";q=1200;w=300', 0.5, id="at the reserve: spread"),
        pytest.param('"default";r=30;t=60', '"default";q=1200;w=300', 2.0, id="others spent most"),
        pytest.param('"default";r=0;t=45', '"default";q=1200;w=300', 45.0, id="none left: until reset"),
        pytest.param('"default";r=0;t=45', None, 45.0, id="none left, no policy"),
        pytest.param('"default";r=3;t=45', None, 0.0, id="no quota known: only at zero"),
        pytest.param(None, None, 0.0, id="no headers"),
        pytest.param("garbage", '"default";q=1200;w=300', 0.0, id="unreadable"),
        pytest.param('"default";r=1;t=' + "9" * 2000, None, 0.0, id="too long to read"),
        pytest.param('"burst";r=500;t=10, "default";r=20;t=200', '"default";q=1200', 10.0, id="tightest"),
    ],
)
def test_pacing_from_cloudflares_headers(ratelimit: str | None, policy: str | None, expected: float) -> None:
    assert pacing_delay(ratelimit, policy) == pytest.approx(expected)


async def test_a_pace_holds_the_next_request_and_no_more() -> None:
    clock = FakeClock(auto=True)
    limiter = SlidingWindowLimiter(100, 60.0, monotonic=clock.monotonic, sleep=clock.sleep)
    await limiter.acquire()
    limiter.pace(2.0)
    assert not limiter.try_acquire()
    await limiter.acquire()
    assert clock.now == pytest.approx(2.0)
    limiter.pace(0.0)
    assert limiter.try_acquire()
