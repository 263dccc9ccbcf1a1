"""When each account is checked: every ``check_interval`` on the monotonic clock.

A step of the system clock (an NTP correction, a VM restored from a snapshot, a person with
``date -s``) must neither stop the checks nor bunch them. APScheduler 3, used before, plans in
wall-clock datetimes: after a step a year back its next run was a year away, and after a step a day
forward every job was late at once and all ran together. Neither is a matter of APScheduler's
configuration (its triggers and its wake-up both compare wall-clock datetimes), and what rotator
asks of a scheduler is small, so this module replaces it: one task per account sleeps on the event
loop's clock (``loop.time()``, CLOCK_MONOTONIC), which no step moves.

Semantics kept from the APScheduler jobs: the first check at once, then one every ``interval`` from
the planned time (plus up to ``jitter``, drawn afresh each time), never two checks of one account at
once, a check that overran its slot run once right after (late checks are coalesced, not skipped),
``run_soon`` (a new leader, a retry at start-up) and a changed interval counted from now. Wall-clock
times appear only where a person reads them (``next_run``: the status page), computed from the
monotonic due time at the moment they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

_log = structlog.get_logger("rotator")


@dataclass
class _Job:
    id: str
    planned: float  # the slot this check belongs to (monotonic), before jitter
    due: float  # when it runs (monotonic)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Schedule:
    """Runs ``run(job_id)`` for each job every ``interval`` seconds (plus up to ``jitter``)."""

    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        *,
        interval: float,
        jitter: float = 0.0,
        uniform: Callable[[float, float], float] = random.uniform,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._run = run
        self._interval = interval
        self._jitter = jitter
        self._uniform = uniform
        self._wall = wall
        self._jobs: dict[str, _Job] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = False

    def start(self) -> None:
        """Start every job added so far; within the running event loop."""
        self._loop = asyncio.get_running_loop()
        self.running = True
        for job in self._jobs.values():
            self._spawn(job)

    def shutdown(self) -> None:
        """Stop: cancels each job's wait, and the check it runs (which may shield what must finish)."""
        self.running = False
        for job in self._jobs.values():
            if job.task is not None:
                job.task.cancel()

    def add(self, job_id: str) -> None:
        """A new job, its first run at once."""
        now = self._now()
        job = self._jobs[job_id] = _Job(job_id, planned=now, due=now)
        if self.running:
            self._spawn(job)

    def remove(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is not None and job.task is not None:
            job.task.cancel()

    def reschedule(self, job_ids: Iterable[str], *, interval: float, jitter: float) -> None:
        """A new interval (and jitter), counted from now for each of ``job_ids``."""
        self._interval, self._jitter = interval, jitter
        now = self._now()
        for job_id in job_ids:
            if (job := self._jobs.get(job_id)) is not None:
                job.planned = now + interval
                self._move(job, job.planned + self._jittered())

    def run_soon(self, job_id: str, delay: float = 0.0) -> None:
        """Run the job ``delay`` seconds from now; its later runs follow on from then."""
        if (job := self._jobs.get(job_id)) is not None:
            job.planned = self._now() + delay
            self._move(job, job.planned)

    def run_all_soon(self) -> None:
        for job_id in list(self._jobs):
            self.run_soon(job_id)

    def next_run(self, job_id: str) -> datetime | None:
        """When the job runs next, on the wall clock as it reads now."""
        job = self._jobs.get(job_id) if self.running else None
        if job is None:
            return None
        return self._wall() + timedelta(seconds=max(0.0, job.due - self._now()))

    # ----------------------------------------------------------------------- internals

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _jittered(self) -> float:
        return self._uniform(0.0, self._jitter) if self._jitter > 0 else 0.0

    def _move(self, job: _Job, due: float) -> None:
        job.due = due
        job.wake.set()

    def _spawn(self, job: _Job) -> None:
        assert self._loop is not None
        job.task = self._loop.create_task(self._loop_of(job), name=f"check {job.id}")

    async def _loop_of(self, job: _Job) -> None:
        while self.running and self._jobs.get(job.id) is job:
            delay = job.due - self._now()
            if delay > 0:
                job.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # no task of its own, unlike wait_for
                        await job.wake.wait()
                continue  # woken (run_soon, a new interval) or due: look again
            try:
                await self._run(job.id)
            except Exception as exc:  # the job is the daemon's; it must outlive any one failure
                _log.error("scheduled_check_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            # The next slot; a check that overran it runs once, at once (late checks coalesce).
            if job.due <= self._now():
                job.planned = max(job.planned + self._interval, self._now())
                job.due = job.planned + self._jittered()
