"""Pacing from Cloudflare's own rate-limit headers, against the simulator over real HTTP.

Another client of the same user (Terraform, a dashboard) spends most of the budget; rotator sees
it only in the ``Ratelimit`` header and slows down, so Cloudflare never answers 429.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from cloudflare_sim import RateLimit, SimulatorThread
from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import CredentialSource
from tests.conftest import TEST_TOKEN

MakeSimulator = Callable[..., SimulatorThread]


def test_the_simulator_serves_the_rate_limit_headers(make_simulator: MakeSimulator) -> None:
    running = make_simulator(1, rate_limit=RateLimit(100, 60))
    running.sim.spend_budget(TEST_TOKEN, 40)
    account = running.sim.account_ids[0]
    answer = httpx.get(
        f"{running.base_url}/accounts/{account}/access/keys",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
    )
    assert answer.headers["ratelimit"] == '"default";r=59;t=60'
    assert answer.headers["ratelimit-policy"] == '"default";q=100;w=60'


async def test_the_client_slows_down_when_other_clients_spend_the_budget(
    make_simulator: MakeSimulator,
) -> None:
    window = 2.0
    running = make_simulator(1, rate_limit=RateLimit(100, window))
    sim = running.sim
    sim.spend_budget(TEST_TOKEN, 94)  # another client: 6 requests of 100 left in this window
    credential = CredentialSource.token_env("T").load({"T": TEST_TOKEN})
    client = CloudflareClient(running.base_url, rate_limit=(1000, 300.0), max_retry_after=30.0)
    started = time.monotonic()
    try:
        for _ in range(12):
            await client.get_keys(sim.account_ids[0], credential)
    finally:
        await client.aclose()
    # Before: the 7th request met a 429 (and its retry-after paused the credential).
    assert sim.snapshot()["requests"]["rate_limited"] == 0
    assert time.monotonic() - started >= window * 0.5  # it waited for the window to turn
