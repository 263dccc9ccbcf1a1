"""The HTTP transport under the Cloudflare client: httpx's API, aiohttp's connection pool.

Why not httpx's default transport (httpcore 1.0)? Its pool does work that grows with the pool's
size on every request, so at rotator's concurrency the client is CPU-bound long before the network
is: ``bench/RESULTS.md`` measures a bare httpx loop and this transport side by side (the profile is
in bench/PERFORMANCE.md). aiohttp's pool hands out a connection in constant time and
parses HTTP in C. ``CloudflareClient`` keeps httpx's API, and tests keep ``httpx.MockTransport``.

``AiohttpTransport.fetch`` is the same exchange for a caller that sends to fixed endpoints
(``CloudflareClient``): the same request on the wire, the same errors, an ``Answer`` read whole
instead of httpx's Request, URL and Response, which cost a third of the request's CPU.

What changes on the wire: nothing rotator relies on. One ``handle_async_request`` (or ``fetch``) is
one request sent at most once: aiohttp's silent second try of an idempotent request on a reused
connection is turned off, so every retry is rotator's own (with backoff, logged and counted), and a
POST is never sent twice by this layer. What is added: a ``deadline`` for the whole request (the wait for
a connection, sending, and the answer to its last byte), which httpx's timeouts, each for one
read or one connect, are not: an answer trickling a byte a second would otherwise hold a check,
and its account, for ever. Environment proxies (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``)
and the CA bundle are honoured as httpx honours them; the proxy is looked up once per origin, not
by aiohttp's ``trust_env`` (two hops to a thread on every request: 300 µs of CPU each time).

Errors are translated at this one boundary into httpx's, by *when* they happened, because that is
what ``CloudflareClient`` decides on (is a rotate known not to have been applied?):

    before the request could be sent           -> httpx.ConnectError, httpx.ConnectTimeout
      (refused, DNS, TLS handshake, connect timeout,
      the deadline passed before a connection was had)
    after it may have been sent                -> httpx.ReadTimeout, httpx.ReadError,
      (reset, disconnected, no or broken answer,   httpx.RemoteProtocolError
      the deadline passed once connected)
    a URL aiohttp cannot send to               -> httpx.UnsupportedProtocol

(httpx-aiohttp's transport maps every ``ClientConnectionError``, a dropped connection after the
request was sent included, to ``httpx.ConnectTimeout``: a rotate whose answer was lost would read
as one that never left, and be sent again. That is why this module exists rather than that one.)
"""

from __future__ import annotations

import errno
import socket
import ssl
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from rotator.cloudflare.bounded import MalformedAnswer, loads, read_bounded


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession``, created on first use
    (a session belongs to the event loop that runs it)."""

    def __init__(
        self,
        *,
        max_connections: int,
        ca_bundle: str | None = None,
        deadline: float | None = None,
        keepalive_expiry: float = 5.0,
        trust_env: bool = True,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        """``deadline``: seconds for each request as a whole, from the wait for a connection to the
        answer's last byte (None: none, only httpx's timeouts). A ``session_factory``'s session
        should use ``_Connector``, or every deadline passed counts as after sending."""
        self._max_connections = max_connections
        self._deadline = deadline
        self._ca_bundle = ca_bundle
        self._keepalive_expiry = keepalive_expiry
        self._trust_env = trust_env
        self._session_factory = session_factory or self._new_session
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[bytes, str, int | None], str | None] = {}

    def _new_session(self) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            ssl=_ssl_context(self._ca_bundle),
        )
        return aiohttp.ClientSession(
            connector=connector,
            # httpx sets every header it wants (User-Agent, Accept-Encoding, a JSON body's Content-Type)
            # and decodes bodies: an empty POST carries no Content-Type, as over httpx.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        response, body = await self._send(
            request.method,
            str(url),
            request.headers.multi_items(),
            request.content or None,
            timeouts=request.extensions.get("timeout", {}),
            proxy=self._proxy(url),
            request=request,
        )
        return httpx.Response(
            status_code=response.status,
            # The body is decompressed already (_send): httpx must not decode it again.
            headers=[(k, v) for k, v in response.raw_headers if k.lower() != b"content-encoding"],
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def fetch(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        origin: httpx.URL,
        timeouts: dict[str, float | None],
    ) -> Answer:
        """The same exchange as ``handle_async_request``, sent once and read whole, with its errors
        the same httpx errors, without building httpx's Request, URL and Response: for callers
        that send to fixed endpoints under an ``origin`` already parsed (``CloudflareClient``),
        those cost about 60 µs of CPU a request, a third of the request itself."""
        response, content = await self._send(
            method,
            url,
            headers,
            body,
            timeouts=timeouts,
            proxy=self._proxy(origin),
            request=None,
        )
        return Answer(response.status, response.reason or "", response.headers, content)

    async def _send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        timeouts: dict[str, float | None],
        proxy: str | None,
        request: httpx.Request | None,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        session = self._session
        if session is None:
            session = self._session = self._session_factory()
            # aiohttp sends a failed GET or PUT again, once, on a fresh connection; rotator
            # retries on its own terms, so this layer sends each request once. (aiohttp's
            # own test client turns it off the same way: aiohttp 3.14 has no public switch.)
            session._retry_connection = False
        phase = _Phase()
        reset = _PHASE.set(phase)
        try:
            with _translated(request, phase):
                async with session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=self._timeout(timeouts),
                    proxy=proxy,
                    auto_decompress=False,  # decompressed here, within MAX_BODY (bounded.py)
                ) as response:
                    # Cloudflare's answers are small JSON documents: read whole, the connection
                    # is back in the pool before the caller sees the answer. Never more than
                    # MAX_BODY bytes once decompressed, here for both APIs: httpx's decoders
                    # inflate a chunk without bound.
                    content = await read_bounded(
                        response.content.iter_any(), response.headers.get("Content-Encoding")
                    )
        finally:
            _PHASE.reset(reset)
        return response, content

    def _timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's four timeouts as aiohttp's, built once per distinct setting."""
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        cached = self._timeouts.get(key)
        if cached is None:
            connect, read, pool = key
            cached = self._timeouts[key] = aiohttp.ClientTimeout(
                # The whole request, the answer's body included (aiohttp's total covers its read).
                total=self._deadline,
                # Waiting for a pooled connection and opening it: the request is not sent yet.
                connect=self._within_deadline(None if connect is None or pool is None else connect + pool),
                sock_connect=self._within_deadline(connect),
                sock_read=self._within_deadline(read),
            )
        return cached

    def _within_deadline(self, seconds: float | None) -> float | None:
        """A timeout that can pass before the deadline, or None: one no shorter can never fire
        first, and each armed costs a timer per request (per read, for sock_read: about 60 µs
        of CPU a request in all). Whichever fires, the error is the same, by when it happened."""
        if seconds is not None and self._deadline is not None and seconds >= self._deadline:
            return None
        return seconds

    def _proxy(self, url: httpx.URL) -> str | None:
        """The environment's proxy for this origin (None: go direct), as httpx would choose it."""
        if not self._trust_env:
            return None
        origin = (url.raw_scheme, url.host, url.port)
        if origin not in self._proxies:
            proxies = urllib.request.getproxies_environment()
            bypass = urllib.request.proxy_bypass_environment(url.host, proxies)  # type: ignore[attr-defined]
            self._proxies[origin] = None if bypass else proxies.get(url.scheme) or proxies.get("all")
        return self._proxies[origin]

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read whole (``AiohttpTransport.fetch``): what ``CloudflareClient`` reads of an
    ``httpx.Response``, by the same names."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    def json(self) -> Any:
        return loads(self.content)  # as httpx.Response.json does, no deeper than MAX_DEPTH


class _Phase:
    """How far one request got: once it has a connection, it may have been sent."""

    __slots__ = ("connected",)

    def __init__(self) -> None:
        self.connected = False


# The request this task is sending. A context variable rather than aiohttp's tracing, its public
# hook for the same moment: a TraceConfig added about 50 µs of CPU to every request on loopback
# (140 µs without it, client and server together), as its signals fire at every step.
_PHASE: ContextVar[_Phase] = ContextVar("rotator_transport_phase")


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, noting when a request has its connection: a deadline that passes
    before then passed before anything was sent (httpx.ConnectTimeout), after it, maybe not."""

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own signature and keyword
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        if (phase := _PHASE.get(None)) is not None:
            phase.connected = True
        return connection


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """httpx's own choice of CAs (certifi, or $SSL_CERT_FILE), or the configured bundle."""
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    return httpx.create_ssl_context()


@contextmanager
def _translated(request: httpx.Request | None, phase: _Phase) -> Iterator[None]:
    """aiohttp's exceptions as httpx's: connect-phase errors apart from those after sending."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # connect or sock_connect: never sent
        raise httpx.ConnectTimeout(str(exc) or "timed out connecting", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake: never sent
        raise httpx.ConnectError(_cannot_connect(exc), request=request) from exc
    except TimeoutError as exc:  # the deadline, sock_read (aiohttp.SocketTimeoutError), any other wait
        if not phase.connected:  # the deadline, still waiting for a connection: never sent
            raise httpx.ConnectTimeout("no connection within the deadline", request=request) from exc
        raise httpx.ReadTimeout(str(exc) or "timed out waiting for the answer", request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except MalformedAnswer as exc:  # too large once decompressed, or an encoding not asked for
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # reset or broken while sending or reading: may have arrived
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


def _cannot_connect(exc: aiohttp.ClientConnectorError) -> str:
    """Where and why, in an operator's words: aiohttp's own message says "ssl:default" even for
    plain http:// and quotes asyncio's "Connect call failed ('127.0.0.1', 9)"."""
    os_error = exc.os_error
    tls_reason = getattr(os_error, "reason", None)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        why = f"its TLS certificate was not accepted ({exc.certificate_error})"
    elif isinstance(exc, aiohttp.ClientSSLError) and tls_reason == "WRONG_VERSION_NUMBER":
        why = "it does not speak TLS at this port: does base_url say https:// for a plain-HTTP server?"
    elif isinstance(exc, aiohttp.ClientSSLError):
        why = f"the TLS handshake failed ({tls_reason or os_error})"
    elif isinstance(os_error, socket.gaierror):
        why = f"the host name could not be resolved ({exc.strerror})"
    elif exc.errno == errno.ECONNREFUSED:
        why = "connection refused (nothing listens at that address)"
    else:
        why = exc.strerror or type(os_error).__name__
    return f"cannot connect to {exc.host}:{exc.port}: {why}"
