"""Expensive pages made off the event loop, once for all the readers that ask at about one time.

At 10,000 accounts the status page and ``/status`` take a few hundred milliseconds of CPU to
make; made on the event loop for each reader, 20 readers pushed ``/healthz`` to two seconds and
held every check meanwhile. A ``Snapshot`` makes the page in a thread, and every request that
arrives while it is being made, or within ``max_age`` seconds after, gets that same page: the
loop only hands out bytes. (The thread shares the GIL with the loop, which gets it back every
``sys.getswitchinterval()``, 5 ms by default.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Snapshot:
    """``render()`` in a thread, at most once per ``max_age`` seconds, shared by every reader."""

    def __init__(
        self,
        render: Callable[[], bytes],
        *,
        max_age: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self._max_age = max_age
        self._monotonic = monotonic
        self._made: tuple[float, bytes] | None = None
        self._making: asyncio.Future[bytes] | None = None

    async def get(self) -> bytes:
        made = self._made
        if made is not None and self._monotonic() - made[0] < self._max_age:
            return made[1]
        if self._making is None:
            started = self._monotonic()
            self._making = asyncio.ensure_future(asyncio.to_thread(self._render))
            self._making.add_done_callback(lambda f: self._done(f, started))
        # Shielded: a reader that hangs up leaves the page to the others waiting for it.
        return await asyncio.shield(self._making)

    def _done(self, making: asyncio.Future[bytes], started: float) -> None:
        self._making = None
        if not making.cancelled() and making.exception() is None:
            self._made = (started, making.result())


__all__ = ["Snapshot"]
