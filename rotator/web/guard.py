"""What keeps slow, silent or greedy HTTP clients from holding the daemon's sockets and memory.

aiohttp bounds a request's head (line and field sizes, header count), its body
(``client_max_size``) and an idle kept-alive connection (``keepalive_timeout``), but not the time
a client may take: a connection that sends its head a byte every few seconds, or asks for the
page and never reads the answer, is kept for ever. ``GuardedSite`` is aiohttp's ``TCPSite`` with
a guard in front of every connection:

- at most ``max_connections`` open at once, and ``max_per_peer`` from one address: one more
  takes the place of the oldest (of that address, or of all), which is closed;
- ``request_timeout`` seconds for each request as a whole, from the connection's opening (or the
  previous request's head) to the next request's head: the head must have arrived, the answer
  been made and written, and the client read it, by then. A kept-alive connection idle for
  ``keepalive_timeout`` (shorter) is closed by aiohttp first. A connection past its time is
  aborted, its buffered answer dropped.

Answers are written in chunks that wait for the client to read them (``StatusServer``), so a client
that never reads holds one chunk's worth of memory, not a page, and only until its time is up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Limits:
    # Enough for Prometheus, the kubelet and a few dozen readers behind one address (a NAT, a
    # proxy); each holds at most a chunk of an answer and aiohttp's read buffer.
    max_connections: int = 128
    max_per_peer: int = 32
    request_timeout: float = 15.0
    keepalive_timeout: float = 5.0
    # Of aiohttp's own: a request line, a header field, their count, and a body (none is read).
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    client_max_size: int = 64 * 1024


class _Guarded(asyncio.Protocol):
    """One connection, aiohttp's protocol behind it."""

    __slots__ = ("_guard", "_inner", "_requests", "deadline", "peer", "transport")

    def __init__(self, guard: _Guard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.deadline = 0.0
        self._requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self._guard.admit(self)
        self.transport = transport
        self.deadline = self._guard.loop.time() + self._guard.limits.request_timeout
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self._inner.data_received(data)
        # A new request's head parsed (aiohttp counts them): its own time starts now. Without
        # that count (another aiohttp), the connection's first deadline stands: still bounded.
        requests = getattr(self._inner, "_request_count", 0)
        if requests != self._requests:
            self._requests = requests
            self.deadline = self._guard.loop.time() + self._guard.limits.request_timeout

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self.transport is not None else None

    def pause_writing(self) -> None:
        if self.transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self._guard.release(self)
        self.transport = None
        self._inner.connection_lost(exc)


class _Guard:
    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self._open: set[_Guarded] = set()
        self._per_peer: Counter[str | None] = Counter()
        self._sweeper: asyncio.TimerHandle | None = None
        self.evicted = 0
        self.expired = 0

    def admit(self, connection: _Guarded) -> None:
        """Always, making room first: the oldest connection of the same address when it has its
        fill, else the oldest of all when the server has. A refused newcomer would let a flood
        of slow connections lock out the kubelet's next probe; evicting the oldest lets the probe
        in (its request takes milliseconds) and costs the flood its slowest."""
        if self._per_peer[connection.peer] >= self.limits.max_per_peer:
            self._evict([c for c in self._open if c.peer == connection.peer])
        elif len(self._open) >= self.limits.max_connections:
            self._evict(list(self._open))
        self._open.add(connection)
        self._per_peer[connection.peer] += 1
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _evict(self, candidates: list[_Guarded]) -> None:
        oldest = min(candidates, key=lambda c: c.deadline)
        self.evicted += 1
        self.release(oldest)  # now: its connection_lost comes later, from the loop
        if oldest.transport is not None:
            oldest.transport.abort()

    def release(self, connection: _Guarded) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self._per_peer[connection.peer] -= 1
            if self._per_peer[connection.peer] <= 0:
                del self._per_peer[connection.peer]

    def _sweep(self) -> None:
        """Once a second while any connection is open: abort those past their time."""
        now = self.loop.time()
        for connection in [c for c in self._open if c.deadline <= now]:
            self.expired += 1
            if connection.transport is not None:
                connection.transport.abort()  # connection_lost follows, and releases it
        self._sweeper = self.loop.call_later(1.0, self._sweep) if self._open else None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` with every connection behind a ``_Guard`` (the module's docstring)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: Limits) -> None:
        super().__init__(runner, host, port)
        self._limits = limits
        self.guard: _Guard | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # not TCPSite's: it would listen without the guard
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self.guard = _Guard(self._limits, loop)
        self._server = await loop.create_server(
            lambda: _Guarded(guard, server()), self._host, self._port, backlog=self._backlog
        )

    async def stop(self) -> None:
        if self.guard is not None:
            self.guard.close()
        await super().stop()


def runner_options(limits: Limits) -> dict[str, Any]:
    """``web.AppRunner``'s keyword arguments for ``limits`` (aiohttp's own bounds)."""
    return {
        "keepalive_timeout": limits.keepalive_timeout,
        "max_line_size": limits.max_line_size,
        "max_field_size": limits.max_field_size,
        "max_headers": limits.max_headers,
    }


__all__ = ["GuardedSite", "Limits", "runner_options"]
