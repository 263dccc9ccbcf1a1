"""When each account is checked: every ``check_interval`` on the monotonic clock.

A step of the system clock (an NTP correction, a VM restored from a snapshot, a person with
``date -s``) must neither stop the checks nor bunch them. APScheduler 3, used before, plans in
wall-clock datetimes: after a step a year back its next run was a year away, and after a step
forward every job was due at once, its jitter lost. Neither is a matter of APScheduler's
configuration (its triggers and its wake-up both compare wall-clock datetimes), and what rotator
asks of a scheduler is small, so this module replaces it: one task keeps every account's next
check in a heap and sleeps on the event loop's clock (``loop.time()``, CLOCK_MONOTONIC), which no
step moves; each check runs as a task of its own (about 330 bytes an account while it waits,
against 3 KB for a task per account).

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
import heapq
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

_log = structlog.get_logger("rotator")


@dataclass(slots=True)
class _Job:
    planned: float  # the slot this check belongs to (monotonic), before jitter
    due: float  # when it runs next (monotonic)
    running: asyncio.Task[None] | None = None
    again: bool = False  # due while it ran: run once more, at once, when it ends


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
        # (due, job id): an entry whose due time is no longer its job's is skipped when reached.
        self._heap: list[tuple[float, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.Task[None] | None = None
        self.running = False

    def start(self) -> None:
        """Start running the jobs; within the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.running = True
        self._timer = self._loop.create_task(self._serve(), name="schedule")

    def shutdown(self) -> None:
        """Stop: no job starts again, and the checks running are cancelled (they may shield what
        must finish)."""
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
        for job in self._jobs.values():
            if job.running is not None:
                job.running.cancel()

    def add(self, job_id: str, *, at: datetime | None = None) -> None:
        """A new job, its first run at once, or at ``at`` (on the wall clock as it reads now)."""
        now = self._now() + (self._until(at) if at is not None else 0.0)
        self._jobs[job_id] = _Job(planned=now, due=now)
        self._push(job_id, now)

    def has(self, job_id: str) -> bool:
        return job_id in self._jobs

    def remove(self, job_id: str) -> None:
        """No more runs of the job (a run in progress finishes)."""
        self._jobs.pop(job_id, None)

    def reschedule(self, job_ids: Iterable[str], *, interval: float, jitter: float) -> None:
        """A new interval (and jitter), counted from now for each of ``job_ids``."""
        self._interval, self._jitter = interval, jitter
        now = self._now()
        for job_id in job_ids:
            if (job := self._jobs.get(job_id)) is not None:
                job.planned = now + interval
                self._move(job_id, job, job.planned + self._jittered())

    def run_soon(self, job_id: str, delay: float = 0.0) -> None:
        """Run the job ``delay`` seconds from now; its later runs follow on from then."""
        if (job := self._jobs.get(job_id)) is not None:
            job.planned = self._now() + delay
            self._move(job_id, job, job.planned)

    def run_at(self, job_id: str, at: datetime) -> None:
        """``run_soon`` at ``at``, a wall-clock time read as the clock reads now: the delay is
        taken at once, so a later step of the wall clock moves nothing."""
        self.run_soon(job_id, self._until(at))

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

    def _until(self, at: datetime) -> float:
        return max(0.0, (at - self._wall()).total_seconds())

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _jittered(self) -> float:
        return self._uniform(0.0, self._jitter) if self._jitter > 0 else 0.0

    def _move(self, job_id: str, job: _Job, due: float) -> None:
        job.due = due
        if job.running is not None:
            job.again = due <= self._now()
        self._push(job_id, due)

    def _push(self, job_id: str, due: float) -> None:
        heapq.heappush(self._heap, (due, job_id))
        if self._wake is not None and self._heap[0][0] == due:
            self._wake.set()  # earlier than what the timer sleeps for

    async def _serve(self) -> None:
        assert self._wake is not None
        while self.running:
            now = self._now()
            while self._heap and self._heap[0][0] <= now:
                due, job_id = heapq.heappop(self._heap)
                job = self._jobs.get(job_id)
                if job is None or job.due != due:
                    continue  # removed, or moved since this entry was pushed
                if job.running is not None:
                    job.again = True  # never two checks of one account at once
                    continue
                self._begin(job_id, job)
            self._wake.clear()
            delay = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _begin(self, job_id: str, job: _Job) -> None:
        assert self._loop is not None
        job.running = self._loop.create_task(self._run_one(job_id), name=f"check {job_id}")

    async def _run_one(self, job_id: str) -> None:
        try:
            await self._run(job_id)
        except Exception as exc:  # the job is the daemon's; it must outlive any one failure
            _log.error("scheduled_check_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        finally:
            job = self._jobs.get(job_id)
            if job is not None and self.running:
                job.running = None
                now = self._now()
                if job.again:
                    job.again = False
                    self._move(job_id, job, now)  # due while it ran: once more, at once
                elif job.due <= now:
                    # The next slot; a check that overran it runs once, at once (late ones coalesce).
                    job.planned = max(job.planned + self._interval, now)
                    self._move(job_id, job, job.planned + self._jittered())
