"""A fake monotonic clock, and a way to let every runnable task run: nothing here waits for real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools


async def settle() -> None:
    """Let every task that can run, run (the fakes never do real I/O)."""
    for _ in range(100):
        await asyncio.sleep(0)


class FakeClock:
    """A monotonic clock that moves only when told, and a ``sleep`` that waits on it.

    ``auto=True``: a sleep moves the clock forward by its length at once (fine where one task
    sleeps at a time, as behind the limiter's lock). ``auto=False``: sleepers wait until the test
    calls ``advance``, so it can look at the world at any instant in between.
    """

    def __init__(self, *, auto: bool, start: float = 0.0) -> None:
        self.now = start
        self.auto = auto
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._zero_sleeps = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            # A limiter that sleeps 0 again and again would spin forever on a fake clock.
            self._zero_sleeps += 1
            assert self._zero_sleeps < 1000, "sleep(0) in a loop: the caller never makes progress"
            await asyncio.sleep(0)
            return
        self._zero_sleeps = 0
        if self.auto:
            self.now += seconds
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline, in order."""
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
        await settle()
