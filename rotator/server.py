"""The daemon's HTTP endpoints: /metrics for Prometheus, /healthz and /readyz for Kubernetes."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rotator.status import StatusBoard


class StatusServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        healthy: Callable[[], str | None],
        ready: Callable[[], str | None],
        status: StatusBoard | None = None,
    ) -> None:
        """``healthy`` and ``ready`` return None when all is well, else the reason it is not."""
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self._status = status

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._probe(self._healthy))
        app.router.add_get("/readyz", self._probe(self._ready))
        app.add_routes(self._status.routes() if self._status else [])  # / and /status (rotator.status)
        return app

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port) and return the port."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    def _probe(judge: Callable[[], str | None]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            problem = judge()
            if problem is None:
                return web.Response(text="ok\n")
            return web.Response(status=503, text=f"{problem}\n")

        return handler


def why_not_listening(exc: OSError) -> str:
    """Why binding failed, in an operator's words (asyncio's own message names a sockaddr tuple)."""
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (is another rotator, or another program, listening there?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    if exc.errno == errno.EACCES:
        return "permission denied (a port below 1024 needs privileges)"
    return exc.strerror or str(exc)
