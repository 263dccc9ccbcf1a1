"""When the next check comes, on the local clock: the policy's moment mapped through Cloudflare's
measured clock rate, bounded by max_check_interval, with jitter (rotator.core.schedule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.core.policy import NextCheck, Why
from rotator.core.schedule import ClockRate, check_delay, first_read_offset, first_read_period

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = 3600.0
DAY = 86400.0


def delay(plan: NextCheck, *, rate: float = 1.0, random: float = 0.0, jitter: float = 300.0) -> float:
    return check_delay(
        plan,
        server_now=NOW,
        rate=rate,
        check_interval=HOUR,
        max_check_interval=DAY,
        jitter=jitter,
        random=random,
    )


@pytest.mark.parametrize(
    ("plan", "random", "expected"),
    [
        pytest.param(NextCheck(NOW + timedelta(hours=5), Why.THRESHOLD), 0.0, 5 * HOUR, id="at the moment"),
        pytest.param(
            NextCheck(NOW + timedelta(hours=5), Why.THRESHOLD), 0.5, 5 * HOUR + 150, id="jitter after it"
        ),
        pytest.param(
            NextCheck(NOW + timedelta(days=7), Why.THRESHOLD), 0.0, DAY - 300, id="far: max_check_interval"
        ),
        pytest.param(
            NextCheck(NOW + timedelta(days=7), Why.THRESHOLD), 0.999, DAY - 0.3, id="max includes jitter"
        ),
        pytest.param(NextCheck(None, Why.CHECK_INTERVAL, regular=True), 0.0, HOUR, id="regular"),
        pytest.param(
            NextCheck(None, Why.CHECK_INTERVAL, regular=True), 0.5, HOUR + 150, id="regular, jitter"
        ),
        pytest.param(
            NextCheck(NOW + timedelta(minutes=10), Why.SETTLE, regular=True), 0.0, 600, id="settle sooner"
        ),
        pytest.param(
            NextCheck(NOW + timedelta(hours=3), Why.SETTLE, regular=True), 0.0, HOUR, id="interval sooner"
        ),
        pytest.param(
            NextCheck(NOW - timedelta(minutes=1), Why.THRESHOLD), 0.0, HOUR, id="passed: a regular check"
        ),
    ],
)
def test_check_delay(plan: NextCheck, random: float, expected: float) -> None:
    assert delay(plan, random=random) == pytest.approx(expected)


def test_a_fast_cloudflare_clock_shortens_the_local_wait() -> None:
    # The simulator's day lasts 2 s: 43,200 of Cloudflare's seconds per local one.
    plan = NextCheck(NOW + timedelta(days=5), Why.THRESHOLD)
    assert delay(plan, rate=43_200.0, jitter=0.0) == pytest.approx(10.0)


def test_a_moment_is_checked_within_one_check_interval_whatever_the_jitter() -> None:
    plan = NextCheck(NOW + timedelta(hours=5), Why.WINDOW_OPENS)
    latest = delay(plan, random=0.999999, jitter=4 * HOUR)
    assert 5 * HOUR <= latest < 6 * HOUR


def test_the_clock_rate_is_measured_from_dates() -> None:
    clock = ClockRate()
    assert (clock.known, clock.rate, clock.server_now(0.0)) == (False, 1.0, None)
    clock.observe(NOW, 100.0)
    clock.observe(NOW + timedelta(seconds=30), 100.001)  # too short a span to tell
    assert (clock.known, clock.rate) == (False, 1.0)
    clock.observe(NOW + timedelta(seconds=90), 100.002)  # a fast clock's first answers: too close
    assert (clock.known, clock.rate) == (False, 1.0)
    clock.observe(NOW + timedelta(days=1), 102.0)  # a day in 2 s
    assert clock.known
    assert clock.rate == pytest.approx(43_200, rel=0.03)
    assert clock.rate > 43_200  # taken high: a check lands early rather than late
    # A local second later, about half a day on: a little more, as the rate errs high.
    ahead = clock.server_now(103.0)
    assert ahead is not None
    assert NOW + timedelta(days=1.5) <= ahead < NOW + timedelta(days=1.5, minutes=30)


def test_a_real_clock_runs_at_one() -> None:
    clock = ClockRate()
    clock.observe(NOW, 0.0)
    clock.observe(NOW + timedelta(hours=1), 3600.2)
    assert clock.rate == pytest.approx(1.0, abs=1e-3)


def test_first_reads_go_at_once_up_to_a_tenth_of_the_budget_then_at_half_of_it() -> None:
    assert first_read_period(3, requests=1000, per=300) == 0.0
    assert first_read_period(100, requests=1000, per=300) == 0.0
    # Then one every 0.6 s: 100,000 accounts over 59,940 s.
    assert first_read_period(100_000, requests=1000, per=300) == pytest.approx(59_940)
    offsets = [first_read_offset(i, requests=1000, per=300) for i in (0, 99, 100, 101)]
    assert offsets == pytest.approx([0.0, 0.0, 0.6, 1.2])
