"""The client's reservation (issue 16): every wait before the decision, nothing after it."""

from __future__ import annotations

import asyncio

import httpx

from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import Credential, CredentialSource
from rotator.errors import Abandoned
from tests.support.clock import FakeClock, settle

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
KEYS = {"days_until_next_rotation": 5, "key_rotation_interval_days": 30}


def _token(value: str = "t0k3n") -> Credential:
    return CredentialSource.token_env("T").load({"T": value})


def _client(seen: list[str], clock: FakeClock, **kwargs: object) -> CloudflareClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(200, json={"success": True, "result": KEYS})

    return CloudflareClient(
        "https://api.cloudflare.test/client/v4",
        transport=httpx.MockTransport(handler),
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_an_interval_put_unwanted_after_its_budget_wait_is_not_sent() -> None:
    clock, seen = FakeClock(auto=False), []
    client = _client(seen, clock, rate_limit=(1, 60.0))
    credential, wanted = _token(), {"on": True}
    await client.get_keys(ACCOUNT, credential)  # spends the budget for 60 s
    put = asyncio.ensure_future(
        client.enforce_interval(ACCOUNT, 30, lambda: credential if wanted["on"] else None)
    )
    await settle()
    assert seen == ["GET"]  # waiting for the budget
    wanted["on"] = False  # a reload set dry_run meanwhile
    await clock.advance(61)
    assert await put is None
    assert seen == ["GET"]
    await client.aclose()


async def test_a_reservation_left_unsent_gives_its_budget_back() -> None:
    clock, seen = FakeClock(auto=False), []
    client = _client(seen, clock, rate_limit=(1, 60.0))
    credential = _token()
    async with client.reserve(credential) as slot:
        assert not slot.waited
    # Decided not to send: the next request does not wait for the budget the first took.
    reading = asyncio.ensure_future(client.get_keys(ACCOUNT, credential))
    await settle()
    assert reading.done()
    assert seen == ["GET"]
    await client.aclose()


async def test_a_request_queued_on_a_slot_is_abandoned_at_shutdown_and_never_sent() -> None:
    clock, seen = FakeClock(auto=False), []
    client = _client(seen, clock, max_concurrency=1)
    credential = _token()
    release = asyncio.Event()

    async def hold() -> None:
        async with client.reserve(_token("other")):
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await settle()
    rotating = asyncio.ensure_future(client.rotate(ACCOUNT, credential))
    await settle()
    assert not rotating.done()  # queued on the one slot
    client.stop_waiting()  # SIGTERM
    await settle()
    assert isinstance(rotating.exception(), Abandoned)
    release.set()
    await holder
    assert seen == []
    await client.aclose()


async def test_a_slot_waited_for_says_so_and_a_later_one_does_not() -> None:
    clock, seen = FakeClock(auto=False), []
    client = _client(seen, clock, max_concurrency=1)
    release = asyncio.Event()
    waited: list[bool] = []

    async def hold() -> None:
        async with client.reserve(_token("other")):
            await release.wait()

    async def reserve() -> None:
        async with client.reserve(_token()) as slot:
            waited.append(slot.waited)

    holder = asyncio.ensure_future(hold())
    await settle()
    second = asyncio.ensure_future(reserve())
    await settle()
    release.set()
    await asyncio.gather(holder, second)
    await reserve()
    assert waited == [True, False]
    await client.aclose()
