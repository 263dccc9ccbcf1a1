"""The daemon's HTTP endpoints: the status page / and /status, /metrics for Prometheus, /healthz and
/readyz for Kubernetes.

With a token (``http.auth_token_file``), every endpoint but the two probes answers 401 to a request
without it: the kubelet probes without credentials, and a probe says nothing an attacker could use.
The token is accepted as ``Authorization: Bearer <token>`` (Prometheus, curl) and as HTTP Basic's
password, with any user name: a browser cannot send a bearer token, but it asks for a Basic
password itself when the 401 offers Basic, so a person opens the status page with the same token
and no second setting (which would be a second secret to guard, or a page left open).

/metrics is written in a thread, never on the event loop: with 10,000 accounts the page is 19 MB,
and the requests in flight would wait for it. Scrapes that arrive while it is being written
share that one. It is sent a family at a time, so the loop never copies the whole page at once.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from rotator.metrics.families import exposition_chunks
from rotator.web.status import StatusBoard

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
        self._token = auth_token.encode() if auth_token else b""
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self._status = status
        self._writing: asyncio.Future[list[bytes]] | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorize])
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
        if not (
            hmac.compare_digest(given, self._expected) or hmac.compare_digest(_basic(given), self._token)
        ):
            return web.Response(
                status=401,
                text="the token of http.auth_token_file is required: as a bearer token, or as the "
                "password (any user name) a browser asks for\n",
                headers=[  # a browser answers the first: Basic
                    ("WWW-Authenticate", 'Basic realm="rotator", charset="UTF-8"'),
                    ("WWW-Authenticate", 'Bearer realm="rotator"'),
                ],
            )
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if self._writing is None:
            self._writing = asyncio.ensure_future(asyncio.to_thread(exposition_chunks, self._registry))
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


def _basic(header: bytes) -> bytes:
    """The password of an ``Authorization: Basic`` header (b"" when it is none or malformed)."""
    scheme, _, encoded = header.partition(b" ")
    if scheme.lower() != b"basic":
        return b"\0"  # never equal to a token, which is never empty
    try:
        return base64.b64decode(encoded.strip(), validate=True).partition(b":")[2] or b"\0"
    except ValueError:
        return b"\0"


def why_not_listening(exc: OSError) -> str:
    """Why binding failed, in an operator's words (asyncio's own message names a sockaddr tuple)."""
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (is another rotator, or another program, listening there?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    if exc.errno == errno.EACCES:
        return "permission denied (a port below 1024 needs privileges)"
    return exc.strerror or str(exc)
