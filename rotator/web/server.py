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

Every body the server sends passes through rotator.redaction on its way out (``_redact``, the
outermost middleware; /metrics, the page and /status in the thread that writes them): no loaded
secret, URL userinfo or echoed credential reaches a reader, whichever endpoint carries it.

The status page and /status are made the same way (``rotator.web.snapshot``: in a thread, at most
once a second, shared), and sent in chunks that wait for the reader.

Hostile clients (``rotator.web.guard``): connections are limited in number, overall and per
address, and each request has ``request_timeout`` from its connection (or the previous request)
to its answer read; a request's head and body are bounded by aiohttp's limits. Any
``Authorization`` value, bytes that are not text included, is compared as bytes: 401, never 500.
Every answer says ``X-Content-Type-Options: nosniff``, ``Cache-Control: no-store`` and a
``Content-Security-Policy`` that allows no script, no frame ancestor and nothing loaded (the
page's CSS is inline), and no ``Server`` header names aiohttp's or Python's version. The
probes are open and say only ``ready`` or ``not ready`` (``ok`` or ``not healthy``); why, with
``?verbose`` and, where a token is set, the token.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from rotator.metrics.families import exposition_chunks
from rotator.redaction import REDACTOR
from rotator.web.guard import GuardedSite, Limits, runner_options
from rotator.web.snapshot import Snapshot
from rotator.web.status import StatusBoard

# Bodies larger than this are redacted in a thread (``_redact``).
REDACT_OFF_LOOP_BYTES = 64 * 1024
# Open even with a token: the kubelet's probes carry no credentials.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Every answer's: nothing of it is to be sniffed, framed, cached, or run (the page has no script).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# aiohttp's own default ``Server`` header names its and Python's versions, and answers it makes
# itself (a 400 for a request it cannot parse) never reach the app's signals (``_secure``): its
# module's default is the only place to change it.
web_response.SERVER_SOFTWARE = "rotator"  # type: ignore[attr-defined]


class _Unparsable(logging.Filter):
    """aiohttp logs a request it cannot parse with a traceback that quotes the request's bytes (8 KB
    of a stranger's choosing, in rotator's log): one line naming the error instead. Any other
    error keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a request it cannot parse (%s)", (type(exc).__name__,)
            record.exc_info = record.exc_text = None
        return True


_HTTP_LOG = logging.getLogger("rotator.http")
_HTTP_LOG.addFilter(_Unparsable())
# Pages are sent in chunks of this size, each written once the reader has taken the one before.
CHUNK = 64 * 1024
DEFAULT_LIMITS = Limits()


class StatusServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        healthy: Callable[[], str | None],
        ready: Callable[[], str | None],
        status: StatusBoard | None = None,
        auth_token: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
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
        self._limits = limits
        self._writing: asyncio.Future[list[bytes]] | None = None
        self.site: GuardedSite | None = None
        if status is not None:
            # Redacted as they are made, in the snapshot's thread: streamed, they pass no middleware.
            self._page = Snapshot(lambda: REDACTOR.data(status.html().encode()))
            self._json = Snapshot(lambda: REDACTOR.data(json.dumps(status.as_json()).encode()))

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[_redact, self._authorize], client_max_size=self._limits.client_max_size
        )
        app.on_response_prepare.append(_secure)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._probe(self._healthy, "ok", "not healthy"))
        app.router.add_get("/readyz", self._probe(self._ready, "ready", "not ready"))
        if self._status is not None:  # the data of rotator.web.status, made off the loop
            app.router.add_get("/", self._snapshot(self._page, "text/html; charset=utf-8"))
            app.router.add_get("/status", self._snapshot(self._json, "application/json; charset=utf-8"))
        return app

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port) and return the port."""
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            logger=_HTTP_LOG,
            **runner_options(self._limits),
        )
        await self._runner.setup()
        site = self.site = GuardedSite(self._runner, host, port, self._limits)
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
        if self._expected is None or (request.path in OPEN_PATHS and "verbose" not in request.query):
            return await handler(request)
        if not self._authorized(request):
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

    def _authorized(self, request: web.Request) -> bool:
        # As bytes, whatever they are: aiohttp hands over undecodable bytes as lone surrogates.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        assert self._expected is not None
        # Constant time, so the answer's timing does not tell how much of a guess was right.
        return hmac.compare_digest(given, self._expected) or hmac.compare_digest(_basic(given), self._token)

    @staticmethod
    def _snapshot(
        snapshot: Snapshot, content_type: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = memoryview(await snapshot.get())
            response = web.StreamResponse(headers={"Content-Type": content_type})
            response.content_length = len(body)
            await response.prepare(request)
            for start in range(0, len(body), CHUNK):
                await response.write(body[start : start + CHUNK])  # waits while the reader is behind
            await response.write_eof()
            return response

        return handler

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
    def _probe(
        judge: Callable[[], str | None], good: str, bad: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Open: ``good`` or ``bad`` and nothing else (no account, host or error). With
        ``?verbose`` (and the token, where one is set), why it is not."""

        async def handler(request: web.Request) -> web.StreamResponse:
            problem = judge()
            if problem is None:
                return web.Response(text=f"{good}\n")
            if "verbose" in request.query:
                return web.Response(status=503, text=f"{bad}: {problem}\n")
            return web.Response(status=503, text=f"{bad}\n")

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


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer's security headers, and no ``Server: Python/3.11 aiohttp/3.x`` banner."""
    response.headers.update(SECURITY_HEADERS)
    response.headers.popall("Server", None)


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
