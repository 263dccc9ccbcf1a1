"""The checks' schedule (rotator.check.schedule) on a real event loop, driven by its own calls
(``run_soon``, ``remove``): nothing here waits for time to pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from structlog.testing import capture_logs

from rotator.check.schedule import Schedule

HOUR = 3600.0


class Runs:
    """The runs seen so far, awaitable by count."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._changed = asyncio.Condition()

    async def seen(self, job_id: str) -> None:
        async with self._changed:
            self.ids.append(job_id)
            self._changed.notify_all()

    async def reached(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.ids) >= count), 5)


async def test_every_job_runs_at_once_then_waits_its_interval() -> None:
    ran: list[str] = []
    both = asyncio.Event()

    async def run(job_id: str) -> None:
        ran.append(job_id)
        if len(ran) == 2:
            both.set()

    schedule = Schedule(run, interval=HOUR)
    schedule.add("a")
    schedule.add("b")
    schedule.start()
    await asyncio.wait_for(both.wait(), 5)
    await asyncio.sleep(0.05)
    assert sorted(ran) == ["a", "b"]  # once each, then an hour away
    next_run = schedule.next_run("a")
    assert next_run is not None
    assert 3590 < (next_run - datetime.now(UTC)).total_seconds() <= HOUR
    schedule.shutdown()


async def test_a_job_due_while_it_runs_runs_once_more_right_after_never_beside_itself() -> None:
    running = 0
    most = 0
    runs = Runs()
    release = asyncio.Event()

    async def run(job_id: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await runs.seen(job_id)
        if len(runs.ids) == 1:
            await release.wait()
        running -= 1

    schedule = Schedule(run, interval=HOUR)
    schedule.add("a")
    schedule.start()
    await runs.reached(1)
    for _ in range(3):  # a new leader, a retry: due again, three times, while it runs
        schedule.run_soon("a")
        await asyncio.sleep(0.01)
    release.set()
    await runs.reached(2)
    await asyncio.sleep(0.05)
    assert (len(runs.ids), most) == (2, 1)  # coalesced into one more run, never two at once
    schedule.shutdown()


async def test_a_removed_job_runs_no_more_and_a_crashing_one_goes_on() -> None:
    runs = Runs()

    async def run(job_id: str) -> None:
        await runs.seen(job_id)
        if job_id == "crashes":
            raise RuntimeError("a bug")

    schedule = Schedule(run, interval=HOUR)
    schedule.add("crashes")
    schedule.add("removed")
    with capture_logs() as logs:
        schedule.start()
        await runs.reached(2)
        schedule.remove("removed")
        schedule.run_soon("removed")  # no such job any more: nothing
        schedule.run_soon("crashes")
        await runs.reached(3)
        await asyncio.sleep(0.05)
    assert [e["error"] for e in logs if e["event"] == "scheduled_check_failed"] == ["RuntimeError: a bug"] * 2
    assert sorted(runs.ids) == ["crashes", "crashes", "removed"]
    assert schedule.next_run("removed") is None
    schedule.shutdown()
    assert schedule.next_run("crashes") is None  # stopped
