"""The aiohttp transport under the Cloudflare client, against the simulator over real sockets.

What the client decides on is *when* a failure happened: a connect error means the request never
left (a rotate may be sent again), anything else means it may have arrived (read back first). So
each test makes the failure happen at one moment and checks the httpx error it became, and that
the transport itself never sent anything twice.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from rotator.simulator import Fault, SimulatorThread
from rotator.transport import AiohttpTransport

AUTH = {"Authorization": "Bearer test-token"}


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
