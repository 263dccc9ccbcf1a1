"""The daemon's HTTP endpoints: the status page / and /status, /metrics for Prometheus, /healthz and
/readyz for Kubernetes.

With a bearer token (``http.auth_token_file``), every endpoint but the two probes answers 401 to a
request without ``Authorization: Bearer <token>``: the kubelet probes without credentials, and a
probe says nothing an attacker could use.

/metrics is written in a thread, never on the event loop: with 10,000 accounts the page is 19 MB,
and the requests in flight would wait for it. Scrapes that arrive while it is being written
share that one. It is sent a family at a time, so the loop never copies the whole page at once.

Every body the server sends passes through rotator.redaction on its way out (``_redact``, the
outermost middleware; /metrics in its writing thread): no loaded secret, URL userinfo or echoed
credential reaches a reader, whichever endpoint carries it.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from rotator.metrics.families import exposition_chunks
from rotator.redaction import REDACTOR
from rotator.web.status import StatusBoard

# Bodies larger than this are redacted in a thread (``_redact``).
REDACT_OFF_LOOP_BYTES = 64 * 1024
# Open even with a token: the kubelet's probes carry no credentials.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class StatusServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        healthy: Callable[[], str | None],
        ready: Callable[[], str | None],
        status: StatusBoard | None = None,
        auth_token: str | None = None,
    ) -> None:
        """``healthy`` and ``ready`` return None when all is well, else the reason it is not;
        ``auth_token``: the bearer token every other endpoint requires (None: none)."""
        self._expected = f"Bearer {auth_token}".encode() if auth_token else None
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self._status = status
        self._writing: asyncio.Future[list[bytes]] | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_redact, self._authorize])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._probe(self._healthy))
        app.router.add_get("/readyz", self._probe(self._ready))
        app.add_routes(self._status.routes() if self._status else [])  # / and /status (rotator.web.status)
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

    @web.middleware
    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._expected is None or request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        # Constant time, so the answer's timing does not tell how much of a guess was right.
        if not hmac.compare_digest(given, self._expected):
            return web.Response(
                status=401,
                text="a bearer token is required (http.auth_token_file)\n",
                headers={"WWW-Authenticate": 'Bearer realm="rotator"'},
            )
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if self._writing is None:
            self._writing = asyncio.ensure_future(asyncio.to_thread(_redacted_exposition, self._registry))
            self._writing.add_done_callback(self._written)
        # Shielded: a scraper that hangs up leaves the page to the others waiting for it.
        chunks = await asyncio.shield(self._writing)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.content_length = sum(len(chunk) for chunk in chunks)
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    def _written(self, writing: asyncio.Future[list[bytes]]) -> None:
        self._writing = None
        if not writing.cancelled():
            writing.exception()  # retrieved here, so a failure no one awaited is not logged again

    @staticmethod
    def _probe(judge: Callable[[], str | None]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            problem = judge()
            if problem is None:
                return web.Response(text="ok\n")
            return web.Response(status=503, text=f"{problem}\n")

        return handler


@web.middleware
async def _redact(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every whole body redacted as it leaves (a streamed one, /metrics, is redacted as it is written)."""
    response = await handler(request)
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        body = response.body
        # The page and /status at thousands of accounts are megabytes, and each search for a
        # secret or a pattern's hint costs ~1 ms a MB: off the loop, which then waits at most for
        # one search (bench: 5,000 accounts' /status, 2.7 MB, 35 ms of searches in all).
        if len(body) > REDACT_OFF_LOOP_BYTES:
            redacted = await asyncio.to_thread(REDACTOR.data, body)
        else:
            redacted = REDACTOR.data(body)
        if redacted is not body:
            response.body = redacted
    return response


def _redacted_exposition(registry: CollectorRegistry) -> list[bytes]:
    return [REDACTOR.loaded_secrets(chunk) for chunk in exposition_chunks(registry)]


def why_not_listening(exc: OSError) -> str:
    """Why binding failed, in an operator's words (asyncio's own message names a sockaddr tuple)."""
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (is another rotator, or another program, listening there?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    if exc.errno == errno.EACCES:
        return "permission denied (a port below 1024 needs privileges)"
    return exc.strerror or str(exc)
