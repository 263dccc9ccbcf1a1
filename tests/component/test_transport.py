"""The aiohttp transport under the Cloudflare client, against the simulator over real sockets.

What the client decides on is *when* a failure happened: a connect error means the request never
left (a rotate may be sent again), anything else means it may have arrived (read back first). So
each test makes the failure happen at one moment and checks the httpx error it became, and that
the transport itself never sent anything twice.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from cloudflare_sim import Fault, SimulatorThread
from cloudflare_sim.certs import gzip_bomb
from rotator.cloudflare.client import CloudflareClient
from rotator.cloudflare.transport import AiohttpTransport
from rotator.config.credentials import CredentialSource
from rotator.errors import ConnectError, RotatorError, TransportError

AUTH = {"Authorization": "Bearer test-token"}
AUTH_TOKEN = CredentialSource.token_env("CLOUDFLARE_API_TOKEN").load({"CLOUDFLARE_API_TOKEN": "test-token"})
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"


@pytest.fixture
async def client(simulator: SimulatorThread) -> AsyncIterator[httpx.AsyncClient]:
    transport = AiohttpTransport(max_connections=4)
    async with httpx.AsyncClient(base_url=simulator.base_url, transport=transport, timeout=2.0) as http:
        yield http


def keys_path(simulator: SimulatorThread) -> str:
    return f"/accounts/{simulator.sim.account_ids[0]}/access/keys"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_answer_comes_back_whole_with_status_headers_and_json(
    client: httpx.AsyncClient, simulator: SimulatorThread
) -> None:
    response = await client.get(keys_path(simulator), headers=AUTH)
    assert response.status_code == 200
    assert response.reason_phrase == "OK"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["result"]["key_rotation_interval_days"] == 42


async def test_a_json_body_reaches_the_server(client: httpx.AsyncClient, simulator: SimulatorThread) -> None:
    """PUT with a body: the simulator refuses an interval out of range, so it read the body."""
    path = keys_path(simulator)
    refused = await client.put(path, json={"key_rotation_interval_days": 7}, headers=AUTH)
    applied = await client.put(path, json={"key_rotation_interval_days": 30}, headers=AUTH)
    assert refused.status_code == 400
    assert applied.json()["result"]["key_rotation_interval_days"] == 30


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=1)) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{closed_port()}/client/v4/accounts/x/access/keys")


async def test_a_rotate_whose_connection_drops_after_it_was_applied_is_not_a_connect_error(
    client: httpx.AsyncClient, simulator: SimulatorThread
) -> None:
    """The one that matters: read as 'never sent', this rotate would be sent a second time."""
    account_id = simulator.sim.account_ids[0]
    simulator.sim.add_fault(Fault(kind="apply_then_drop", op="rotate", times=1))
    with pytest.raises(httpx.TransportError) as caught:
        await client.post(keys_path(simulator) + "/rotate", headers=AUTH)
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert len(simulator.sim.requests(op="rotate")) == 1
    assert [r.source for r in simulator.sim.rotations(account_id)] == ["api"]


async def test_a_failed_get_on_a_reused_connection_is_sent_once(
    client: httpx.AsyncClient, simulator: SimulatorThread
) -> None:
    """aiohttp would quietly send a GET again on a fresh connection; rotator's retries are its own."""
    path = keys_path(simulator)
    assert (await client.get(path, headers=AUTH)).status_code == 200  # the connection is pooled now
    simulator.sim.add_fault(Fault(kind="drop", op="get", times=2))
    with pytest.raises(httpx.TransportError) as caught:
        await client.get(path, headers=AUTH)
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert len(simulator.sim.requests(op="get")) == 2


async def test_no_answer_within_the_read_timeout_is_a_read_timeout(simulator: SimulatorThread) -> None:
    simulator.sim.add_fault(Fault(kind="hang", op="get", times=1))
    async with httpx.AsyncClient(
        base_url=simulator.base_url, transport=AiohttpTransport(max_connections=1), timeout=0.3
    ) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(keys_path(simulator), headers=AUTH)


async def test_the_environment_proxy_is_used_unless_no_proxy_names_the_host(
    simulator: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As httpx does by default: HTTP(S)_PROXY from the environment, NO_PROXY honoured."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    async with httpx.AsyncClient(
        base_url=simulator.base_url, transport=AiohttpTransport(max_connections=1)
    ) as http:
        with pytest.raises(httpx.ConnectError):  # the proxy is down
            await http.get(keys_path(simulator), headers=AUTH)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with httpx.AsyncClient(
        base_url=simulator.base_url, transport=AiohttpTransport(max_connections=1)
    ) as http:
        assert (await http.get(keys_path(simulator), headers=AUTH)).status_code == 200


# --- the deadline of a request as a whole ----------------------------------------------------

TIMEOUT = 1.0
TRICKLE_EVERY = 0.2  # well inside the per-read timeout: only a deadline for the whole answer ends it


@dataclass
class Trickler:
    """A loopback server whose answer to every request trickles in a byte every TRICKLE_EVERY
    seconds, for longer than the timeout; it counts the requests that reached it."""

    base_url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def trickler() -> AsyncIterator[Trickler]:
    server = Trickler("")

    async def trickle(request: web.Request) -> web.StreamResponse:
        server.requests.append(request.path)
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        try:
            for _ in range(int(5 * TIMEOUT / TRICKLE_EVERY)):
                await response.write(b" ")
                await asyncio.sleep(TRICKLE_EVERY)
            await response.write(b'{"success": true, "errors": [], "messages": [], "result": {}}')
        except ConnectionResetError:
            pass  # the client gave up: what the test expects
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trickle)
    runner = web.AppRunner(app, shutdown_timeout=0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{site.port}/client/v4"
    yield server
    await runner.cleanup()


async def test_a_trickling_answer_fails_the_request_within_about_the_timeout(trickler: Trickler) -> None:
    """cloudflare.timeout bounds a request as a whole: each byte arrives well within the per-read
    timeout, and still the GET fails at the timeout, as an answer that did not come (it was sent)."""
    client = CloudflareClient(trickler.base_url, timeout=TIMEOUT, read_attempts=1)
    started = time.monotonic()
    try:
        with pytest.raises(TransportError) as caught:
            await client.get_keys(ACCOUNT, AUTH_TOKEN)
    finally:
        await client.aclose()
    took = time.monotonic() - started
    assert TIMEOUT <= took < 2 * TIMEOUT, f"failed after {took:.2f}s"
    assert str(caught.value) == "GET keys: no answer from Cloudflare within the timeout"
    assert not isinstance(caught.value, ConnectError)  # it was sent: a rotate would be read back
    assert len(trickler.requests) == 1


@pytest.fixture
def unopened_port() -> Iterator[int]:
    """A loopback port whose listener never accepts and whose backlog is full: the kernel drops
    every further connection attempt, so a connection to it never opens (nor is refused)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_deadline_passed_before_a_connection_opened_is_a_connect_timeout(unopened_port: int) -> None:
    """Nothing was sent, which is what lets a rotate be sent again: so it says ConnectTimeout,
    though httpx's own connect timeout is far off."""
    transport = AiohttpTransport(max_connections=1, deadline=TIMEOUT)
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport, timeout=10 * TIMEOUT) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"http://127.0.0.1:{unopened_port}/client/v4/accounts/x/access/keys")
    assert time.monotonic() - started < 2 * TIMEOUT


@dataclass
class Recorder:
    """A loopback server that answers every request with a gzip-compressed key configuration and
    records what reached it: method, headers and body."""

    base_url: str
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    server = Recorder("")

    async def answer(request: web.Request) -> web.Response:
        server.requests.append((request.method, dict(request.headers), await request.read()))
        body = {
            "success": True,
            "errors": [],
            "messages": [],
            "result": {"days_until_next_rotation": 3, "key_rotation_interval_days": 30},
        }
        response = web.json_response(body)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, shutdown_timeout=0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{site.port}/client/v4"
    yield server
    await runner.cleanup()


async def test_the_client_over_its_own_transport_sends_json_and_reads_a_compressed_answer(
    recorder: Recorder,
) -> None:
    """CloudflareClient asks its own transport without httpx's types: what goes on the wire and what
    is read back are the same (the credential, a JSON body with its type, a gzip answer decoded)."""
    client = CloudflareClient(recorder.base_url)
    try:
        read = await client.get_keys(ACCOUNT, AUTH_TOKEN)
        written = await client.set_interval(ACCOUNT, AUTH_TOKEN, 30)
    finally:
        await client.aclose()
    assert read.days_until_next_rotation == written.days_until_next_rotation == 3.0
    (get, get_headers, _), (put, put_headers, put_body) = recorder.requests
    assert (get, put) == ("GET", "PUT")
    for headers in (get_headers, put_headers):
        assert headers["Authorization"] == "Bearer test-token"
        assert headers["Accept"] == "application/json"
        assert headers["User-Agent"].startswith("rotator/")
        assert "gzip" in headers["Accept-Encoding"]
    assert put_headers["Content-Type"] == "application/json"
    assert put_body == b'{"key_rotation_interval_days":30}'


async def test_a_mock_transport_sees_exactly_what_production_sends(recorder: Recorder) -> None:
    """Issue 16, item 6: one code path under every request. The client encodes the body and the
    headers once, whatever transport is injected, so a unit test over ``httpx.MockTransport`` sees
    the bytes and headers that rotator's own transport puts on the wire."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, dict(request.headers), request.content))
        body = {"success": True, "result": {"days_until_next_rotation": 3, "key_rotation_interval_days": 30}}
        return httpx.Response(200, json=body)

    async def exercise(client: CloudflareClient) -> None:
        try:
            await client.get_keys(ACCOUNT, AUTH_TOKEN)
            await client.set_interval(ACCOUNT, AUTH_TOKEN, 30)
            await client.rotate(ACCOUNT, AUTH_TOKEN)
        finally:
            await client.aclose()

    await exercise(CloudflareClient(recorder.base_url))
    await exercise(CloudflareClient(recorder.base_url, transport=httpx.MockTransport(handler)))

    def normal(requests: list[tuple[str, dict[str, str], bytes]]) -> list[tuple[str, dict[str, str], bytes]]:
        framing = {"host"}  # the same value either way, as each layer spells it
        return [
            (method, {k.lower(): v for k, v in headers.items() if k.lower() not in framing}, body)
            for method, headers, body in requests
        ]

    assert normal(seen) == normal(recorder.requests)
    assert [m for m, _, _ in seen] == ["GET", "PUT", "POST"]


async def hostile_server(body: bytes, headers: dict[str, str]) -> tuple[web.AppRunner, str]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": "application/json", **headers})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, shutdown_timeout=0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}/client/v4"


@pytest.mark.parametrize(
    ("body", "headers", "said"),
    [
        # 1 MB sent, 1 GiB once inflated: refused at MAX_BODY, not read whole and then found no JSON.
        (gzip_bomb(1 << 30), {"Content-Encoding": "gzip"}, "larger than 1048576 bytes"),
        (b'{"success": true, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, "not a JSON object"),
        (b"{}", {"Content-Encoding": "br"}, "was not asked for"),
    ],
    ids=["gzip-bomb", "nested", "unasked-encoding"],
)
async def test_a_hostile_api_answer_is_a_bad_answer_of_that_request(
    body: bytes, headers: dict[str, str], said: str
) -> None:
    """Decompressed here, never past MAX_BODY, and JSON no deeper than MAX_DEPTH: each is a
    rotator error of that request (what a check reports), not a gigabyte or a RecursionError."""
    runner, base_url = await hostile_server(body, headers)
    client = CloudflareClient(base_url, timeout=TIMEOUT, read_attempts=1)
    try:
        with pytest.raises(RotatorError) as caught:
            await client.get_keys(ACCOUNT, AUTH_TOKEN)
    finally:
        await client.aclose()
        await runner.cleanup()
    assert "GET keys" in str(caught.value)
    assert said in str(caught.value)
