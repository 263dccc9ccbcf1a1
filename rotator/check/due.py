"""Due-aware checks: when the daemon reads each account next, and where a restart resumes.

After each check the policy names the earliest moment the account's decision could change
(rotator.core.policy.next_check, by Cloudflare's clock); rotator.core.schedule maps it onto the
local clock, bounded by ``schedule.max_check_interval``, with jitter. The moment is recorded in the
ledger (``AccountRecord.next_check``), so a restart or a new leader resumes each account's schedule
instead of reading every account at once; accounts with nothing recorded (a new install, accounts
added, plans already passed) have their reads spread over a period that is logged.

This module keeps the state (the measured clock rate, the plans); every computation is pure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import structlog

from rotator.check.checker import CheckResult
from rotator.config.model import Account, Config
from rotator.core.policy import NOTHING_RECORDED, next_check
from rotator.core.records import PlannedCheck
from rotator.core.schedule import ClockRate, check_delay, first_read_offset, first_read_period

# Plans are mapped onto the local clock again when the measured rate moves by more than this.
REMAP_RATE_CHANGE = 0.1

_log = structlog.get_logger("rotator")


class DueChecks:
    def __init__(
        self,
        config: Config,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._monotonic = monotonic
        self._wall = wall
        self._random = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.clock = ClockRate()
        self._mapped_rate = 1.0
        self._mapped_by_date = False  # whether the plans were last mapped by Cloudflare's clock
        self.plans: dict[str, PlannedCheck] = {}

    def configure(self, config: Config) -> None:
        self._config = config

    def after_check(
        self, result: CheckResult, server_seen: tuple[datetime, float] | None, settle_time: timedelta
    ) -> tuple[datetime, PlannedCheck] | None:
        """When (local wall clock) to check the account next, and the plan to record; None when
        the check read nothing (its trigger's regular interval stands)."""
        if server_seen is not None:
            self.clock.observe(*server_seen)
        key, decision = result.key, result.decision
        if key is None or decision is None or result.error is not None:
            return None
        account = result.account
        plan = next_check(
            decision,
            key,
            account.policy,
            now=key.observed_at,
            record=result.record or NOTHING_RECORDED,
            check_period=self.check_period,
            settle_time=settle_time,
        )
        schedule = self._config.settings.schedule
        local = self._monotonic()
        server_now = self.clock.server_now(local) or key.observed_at
        rate = self.clock.rate
        # Until the rate is measured, nothing waits longer than a regular check: a fast clock
        # (the simulator's) would otherwise be read as a real one for a day.
        longest = (
            schedule.max_check_interval if self.clock.known else schedule.check_interval + schedule.jitter
        )
        delay = check_delay(
            plan,
            server_now=server_now,
            rate=rate,
            check_interval=schedule.check_interval,
            max_check_interval=longest,
            jitter=schedule.jitter,
            random=self._random.random(),
        )
        planned = PlannedCheck(server_now + timedelta(seconds=delay * rate), plan.why.value, key.observed_at)
        self.plans[account.account_id] = planned
        return self._wall() + timedelta(seconds=delay), planned

    @property
    def check_period(self) -> timedelta:
        """check_interval plus jitter on Cloudflare's clock: what the policy judges "the last check
        before Cloudflare's deadline" by (the local seconds, times the measured rate)."""
        return self._config.check_period * self.clock.rate

    def remap(self) -> dict[str, datetime] | None:
        """New local times for every plan once Cloudflare's clock is first seen (a restart
        mapped the ledger's plans by the local clock) or when its measured rate moved much since
        (the first Dates of a fast clock, a simulator's jump); plans that have passed meanwhile
        are spread. None when nothing moved."""
        rate = self.clock.rate
        if self.clock.server_now(self._monotonic()) is None:
            return None
        if self._mapped_by_date and abs(rate / self._mapped_rate - 1) <= REMAP_RATE_CHANGE:
            return None
        self._mapped_rate, self._mapped_by_date = rate, True
        times, _ = self.resume(self.plans, ())
        passed = [a for a in self.plans if a not in times]
        return {**times, **self._spread_ids(passed, why="remapped")}

    def resume(
        self, plans: Mapping[str, PlannedCheck], accounts: Iterable[Account]
    ) -> tuple[dict[str, datetime], list[Account]]:
        """Local times for the accounts whose recorded plan is still ahead; the others of
        ``accounts`` (none recorded, or passed) are returned to be spread."""
        local, wall = self._monotonic(), self._wall()
        server_now = self.clock.server_now(local) or wall  # before any Date: the local clock
        rate = self.clock.rate
        longest = self._config.settings.schedule.max_check_interval
        times: dict[str, datetime] = {}
        for account_id, plan in plans.items():
            if plan.at > server_now:
                seconds = min((plan.at - server_now).total_seconds() / rate, longest)
                times[account_id] = wall + timedelta(seconds=seconds)
        self.plans.update({a: p for a, p in plans.items() if a in times})
        return times, [a for a in accounts if a.account_id not in times]

    def spread(self, accounts: list[Account], *, why: str) -> dict[str, datetime]:
        """Local times for reads of ``accounts`` spread evenly over a period, which is logged."""
        return self._spread_ids([a.account_id for a in accounts], why=why)

    def _spread_ids(self, accounts: list[str], *, why: str) -> dict[str, datetime]:
        if not accounts:
            return {}
        settings = self._config.settings
        limit = settings.cloudflare.rate_limit
        period = first_read_period(
            len(accounts),
            requests=limit.requests,
            per=limit.per,
        )
        _log.info("checks_spread", accounts=len(accounts), period_seconds=round(period, 3), why=why)
        wall = self._wall()
        return {
            a: wall + timedelta(seconds=first_read_offset(i, requests=limit.requests, per=limit.per))
            for i, a in enumerate(accounts)
        }
