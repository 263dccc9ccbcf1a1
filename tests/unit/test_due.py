"""Where a restart resumes each account's schedule, and how plans follow Cloudflare's clock once
it is seen (rotator.check.due), on fake clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.check.due import DueChecks
from rotator.config.model import parse_config
from rotator.core.records import PlannedCheck

WALL = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
IDS = ["023e105f4ecef8ad9ca31a8372d0c353", "0123456789abcdef0123456789abcdef"]
CONFIG = f"""
schedule: {{check_interval: 1h, jitter: 0s}}
accounts:
  - {{name: a, account_id: "{IDS[0]}"}}
  - {{name: b, account_id: "{IDS[1]}"}}
"""


class Clock:
    def __init__(self) -> None:
        self.local = 100.0

    def monotonic(self) -> float:
        return self.local

    def wall(self) -> datetime:
        return WALL + timedelta(seconds=self.local - 100.0)


def due(clock: Clock) -> DueChecks:
    config = parse_config(CONFIG, Path("config.yaml"))
    return DueChecks(config, monotonic=clock.monotonic, wall=clock.wall)


def plan(at: datetime) -> PlannedCheck:
    return PlannedCheck(at, "threshold", at - timedelta(days=1))


def test_a_restart_resumes_recorded_plans_and_spreads_the_rest() -> None:
    clock = Clock()
    checks = due(clock)
    config = parse_config(CONFIG, Path("config.yaml"))
    times, rest = checks.resume({IDS[0]: plan(WALL + timedelta(hours=5))}, config.accounts)
    assert times == {IDS[0]: WALL + timedelta(hours=5)}
    assert [a.account_id for a in rest] == [IDS[1]]  # nothing recorded: spread
    times, rest = checks.resume({IDS[0]: plan(WALL - timedelta(hours=1))}, config.accounts)
    assert times == {}  # passed while none ran: spread too
    assert len(rest) == 2


def test_plans_move_once_a_fast_cloudflare_clock_is_seen() -> None:
    # A simulator whose clock is 30 days ahead and runs 43,200 times fast (a day in 2 s).
    clock = Clock()
    checks = due(clock)
    cloudflare = WALL + timedelta(days=30)
    times, _ = checks.resume(
        {IDS[0]: plan(cloudflare + timedelta(days=2)), IDS[1]: plan(cloudflare - timedelta(days=1))}, []
    )
    assert times[IDS[0]] == WALL + timedelta(days=1)  # mapped by the local clock: max_check_interval
    checks.clock.observe(cloudflare, clock.local)
    moved = checks.remap()  # Cloudflare's clock seen: one plan ahead, one passed
    assert moved is not None
    assert moved[IDS[0]] == WALL + timedelta(days=1)  # rate not measured yet: still capped
    assert moved[IDS[1]] == WALL  # passed: read now (spread over the time two reads take)
    clock.local += 1.0
    checks.clock.observe(cloudflare + timedelta(days=0.5), clock.local)
    moved = checks.remap()  # the rate is measured: 1.5 days of Cloudflare's are about 3 s here
    assert moved is not None
    assert 2.7 < (moved[IDS[0]] - clock.wall()).total_seconds() <= 3.0  # early rather than late
    assert checks.remap() is None  # nothing moved since
