"""One check, one rotation protocol: the real Checker against a model of Cloudflare behind
``httpx.MockTransport``, on a fake clock.

Each test is a way the promise "rotated when due, never twice within the gap" was broken before the
ledger: a stale echo, a read that goes backwards, a reload that comes while a check waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rotator.check.checker import Checker
from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import Credential, CredentialSource
from rotator.config.model import Account, Config, parse_config
from rotator.core.records import State
from rotator.ledger.ledger import Ledger
from rotator.metrics.families import Metrics
from tests.support.clock import FakeClock

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
DAY = 86400.0
Hook = Callable[["Cloudflare"], httpx.Response | Exception | None]


def http_date(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass
class Cloudflare:
    """One account's key configuration, its clock (the fake one), and what reached it."""

    clock: FakeClock
    last: datetime = START - timedelta(days=40)  # due: 2 days until the 42-day interval ends
    interval: float = 42
    rotations: list[datetime] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    on_get: Hook | None = None
    on_post: Hook | None = None

    def now(self) -> datetime:
        return START + timedelta(seconds=self.clock.now)

    def answer(self, last: datetime | None = None) -> httpx.Response:
        last = last or self.last
        result = {
            "days_until_next_rotation": round(self.interval - (self.now() - last) / timedelta(days=1), 3),
            "key_rotation_interval_days": self.interval,
            "last_key_rotation_at": last.isoformat().replace("+00:00", "Z"),
        }
        body = {"success": True, "errors": [], "messages": [], "result": result}
        return httpx.Response(200, json=body, headers={"date": http_date(self.now())})

    def rotate(self) -> None:
        self.last = self.now()
        self.rotations.append(self.last)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.method)
        hook = self.on_get if request.method == "GET" else self.on_post
        reply = hook(self) if hook else None
        if isinstance(reply, Exception):
            raise reply
        if reply is not None:
            return reply
        if request.method == "POST":
            self.rotate()
        return self.answer()


def edge_502() -> httpx.Response:
    return httpx.Response(502, text="<html>502</html>", headers={"content-type": "text/html"})


@dataclass
class World:
    cloudflare: Cloudflare
    checker: Checker
    client: CloudflareClient
    ledger: Ledger
    accounts: dict[str, Account]
    registry: CollectorRegistry
    metrics: Metrics
    config_path: Path

    @property
    def account(self) -> Account:
        return self.accounts[ACCOUNT]

    def reload(self, **rotation: Any) -> None:
        """What a config reload does to the running config: the account's settings change."""
        self.accounts[ACCOUNT] = load(self.config_path, rotation).accounts[0]

    def sample(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"account": "prod", "account_id": ACCOUNT})

    def counter(self, name: str, result: str) -> float | None:
        return self.registry.get_sample_value(name, {"account": "prod", "result": result})


def load(path: Path, rotation: dict[str, Any] | None = None) -> Config:
    text = "cloudflare: {base_url: 'https://api.cloudflare.test/client/v4'}\n"
    if rotation:
        text += "rotation: {" + ", ".join(f"{k}: {v}" for k, v in rotation.items()) + "}\n"
    text += f"accounts: [{{name: prod, account_id: '{ACCOUNT}'}}]\n"
    path.write_text(text)
    return parse_config(text, path)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock(auto=True)
    cloudflare = Cloudflare(clock)
    client = CloudflareClient(
        "https://api.cloudflare.test/client/v4",
        transport=httpx.MockTransport(cloudflare.handler),
        clock=cloudflare.now,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    config = load(tmp_path / "config.yaml")
    accounts = {a.account_id: a for a in config.accounts}
    credential: Credential = CredentialSource.token_env("T").load({"T": "t0k3n-rotation"})
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(config.accounts, 3600)
    ledger = Ledger(tmp_path / "state.json")
    checker = Checker(client, metrics, ledger, {ACCOUNT: credential}, accounts=accounts.get)
    yield World(cloudflare, checker, client, ledger, accounts, registry, metrics, tmp_path / "config.yaml")
    await client.aclose()


async def check(world: World, **kwargs: Any) -> list[dict[str, Any]]:
    with capture_logs() as logs:
        await world.checker.check(world.account, **kwargs)
    return logs


def names(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs]


async def pass_days(world: World, days: float) -> None:
    await world.cloudflare.clock.sleep(days * DAY)


# --------------------------------------------------------------------------- the server's echo


async def test_a_200_echoing_the_old_key_is_one_rotation_anchored_on_the_answer(world: World) -> None:
    cloudflare = world.cloudflare
    old = cloudflare.last

    def stale_echo(cf: Cloudflare) -> httpx.Response:
        cf.rotate()
        return cf.answer(last=old)  # a lagging replica answers the POST

    cloudflare.on_post = stale_echo
    logs = await check(world)
    (rotated,) = [e for e in logs if e["event"] == "key_rotated"]
    answered_at = cloudflare.rotations[0].replace(microsecond=0)  # the 200's Date: whole seconds
    assert rotated["rotated_at"] == answered_at.isoformat().replace("+00:00", "Z")
    assert rotated["answer_stale"] is True
    assert rotated["last_key_rotation_at"] == rotated["rotated_at"]  # not the echo's old time
    assert world.ledger.record(ACCOUNT).last_done == answered_at

    # Every later read lags too, for nine days: each is judged from rotator's own record.
    cloudflare.on_get = lambda cf: cf.answer(last=old)
    for _ in range(9):
        await pass_days(world, 1)
        logs = await check(world)
        (checked,) = [e for e in logs if e["event"] == "account_checked"]
        assert checked["reason"] == "not_due", checked["message"]
    assert cloudflare.requests.count("POST") == 1
    assert len(cloudflare.rotations) == 1
    # The gauge shows the rotation rotator made, not the stale answer's.
    assert world.sample("rotator_key_last_rotation_timestamp_seconds") == answered_at.timestamp()


# --------------------------------------------------------------------------- lost answers


async def test_a_lost_answer_is_never_sent_again_on_reads_that_show_no_change(world: World) -> None:
    cloudflare = world.cloudflare
    cloudflare.on_post = lambda cf: edge_502()  # not applied, but nobody can tell

    logs = await check(world)
    (failed,) = [e for e in logs if e["event"] == "rotation_failed"]
    assert failed["possibly_applied"] is True
    assert "rotation_unconfirmed" in names(logs)
    assert cloudflare.requests == ["GET", "POST", "GET", "GET"]  # two confirming reads, no resend
    assert world.sample("rotator_rotation_unconfirmed") == 1
    assert world.counter("rotator_rotations_total", "error") == 1

    # 30 minutes on: still within settle_time (1 h from the first read after the loss).
    await cloudflare.clock.sleep(1800)
    logs = await check(world)
    assert [e["reason"] for e in logs if e["event"] == "rotation_skipped"] == ["unsettled"]
    assert cloudflare.requests.count("POST") == 1

    # An hour after the loss, Cloudflare still shows the key from before: it was not applied.
    cloudflare.on_post = None
    await cloudflare.clock.sleep(1900)
    logs = await check(world)
    assert "rotation_not_applied" in names(logs)
    assert "key_rotated" in names(logs)
    assert cloudflare.requests.count("POST") == 2
    assert world.sample("rotator_rotation_unconfirmed") == 0
    assert world.counter("rotator_rotations_total", "success") == 1


async def test_a_read_that_went_backwards_confirms_nothing_and_moves_nothing_back(world: World) -> None:
    cloudflare = world.cloudflare
    before = cloudflare.last
    cloudflare.on_post = lambda cf: edge_502()
    # The confirming reads come from a replica whose clock shows an older rotation still.
    cloudflare.on_get = lambda cf: (
        cf.answer(last=before - timedelta(days=42)) if "POST" in cf.requests else None
    )

    logs = await check(world)
    assert "key_rotated" not in names(logs)
    record = world.ledger.record(ACCOUNT)
    assert record.rotation is not None
    assert record.rotation.state is State.UNCONFIRMED
    assert record.observed == before  # the backwards read did not move it back
    assert record.last_done is None


async def test_an_applied_rotation_whose_answer_was_lost_is_confirmed_by_a_read(world: World) -> None:
    cloudflare = world.cloudflare

    def applied_then_lost(cf: Cloudflare) -> Exception:
        cf.rotate()
        return httpx.ReadTimeout("timed out")

    cloudflare.on_post = applied_then_lost
    logs = await check(world)
    assert "rotation_done" in names(logs)
    assert "key_rotated" in names(logs)
    assert cloudflare.requests == ["GET", "POST", "GET"]
    assert world.counter("rotator_rotations_total", "success") == 1
    assert world.counter("rotator_rotations_total", "error") == 0


# --------------------------------------------------------------------------- the config in force


async def test_a_reload_to_dry_run_during_the_read_stops_the_rotation(world: World) -> None:
    def reload_during_get(cf: Cloudflare) -> None:
        world.reload(dry_run="true")

    world.cloudflare.on_get = reload_during_get
    logs = await check(world)
    assert "POST" not in world.cloudflare.requests
    (skipped,) = [e for e in logs if e["event"] == "rotation_skipped"]
    assert skipped["reason"] == "dry_run"
    assert "decided again right before sending" in skipped["message"]


async def test_an_account_removed_during_the_read_is_not_rotated_and_its_series_stay_gone(
    world: World,
) -> None:
    def remove_during_get(cf: Cloudflare) -> None:
        account = world.accounts.pop(ACCOUNT)
        world.metrics.forget(account)  # what the daemon's reload does

    world.cloudflare.on_get = remove_during_get
    account = world.account
    with capture_logs() as logs:
        result = await world.checker.check(account)
    assert "POST" not in world.cloudflare.requests
    assert [e["reason"] for e in logs if e["event"] == "rotation_skipped"] == ["removed"]
    assert not result.rotated
    assert world.counter("rotator_checks_total", "success") is None
    assert world.sample("rotator_key_last_rotation_timestamp_seconds") is None


async def test_a_reload_during_a_429_pause_is_obeyed_when_the_pause_ends(world: World) -> None:
    cloudflare = world.cloudflare

    def rate_limited(cf: Cloudflare) -> httpx.Response:
        world.reload(dry_run="true")  # comes while the credential waits out the pause
        body = {"success": False, "errors": [{"code": 10000, "message": "rate limited"}], "result": None}
        return httpx.Response(429, json=body, headers={"retry-after": "900"})

    cloudflare.on_post = rate_limited
    logs = await check(world)
    assert cloudflare.requests.count("POST") == 1
    assert "rotation_not_applied" in names(logs)
    assert [e["reason"] for e in logs if e["event"] == "rotation_skipped"] == ["dry_run"]


async def test_a_rate_limited_rotation_waits_out_the_pause_then_decides_and_sends_again(
    world: World,
) -> None:
    cloudflare = world.cloudflare
    refusals = [httpx.Response(429, json={"success": False, "errors": []}, headers={"retry-after": "900"})]
    cloudflare.on_post = lambda cf: refusals.pop() if refusals else None
    logs = await check(world)
    assert cloudflare.requests.count("POST") == 2
    assert 900.0 in cloudflare.clock.sleeps  # waited out before deciding again, not after
    assert names(logs).count("rotation_intent") == 2  # a new intent for the second POST
    assert "key_rotated" in names(logs)


async def test_an_account_gone_before_its_check_started_is_a_failed_check_not_an_exception(
    world: World,
) -> None:
    account = world.accounts.pop(ACCOUNT)
    world.checker.update({}, check_period=timedelta(0), settle_time=timedelta(hours=1))
    result = await world.checker.check(account)
    assert result.error is not None
    assert "no longer configured" in str(result.error)


async def test_nothing_escapes_a_check(world: World) -> None:
    world.cloudflare.on_get = lambda cf: RuntimeError("a bug below the client")
    with capture_logs() as logs:
        result = await world.checker.check(world.account)
    assert result.error is not None
    (crashed,) = [e for e in logs if e["event"] == "check_crashed"]
    assert "RuntimeError: a bug below the client" in crashed["error"]
    assert world.counter("rotator_checks_total", "error") == 1


async def test_shutdown_during_a_429_pause_sends_nothing(world: World) -> None:
    cloudflare = world.cloudflare

    def rate_limited(cf: Cloudflare) -> httpx.Response:
        world.client.stop_waiting()  # SIGTERM arrives
        return httpx.Response(429, json={"success": False, "errors": []}, headers={"retry-after": "900"})

    cloudflare.on_post = rate_limited
    logs = await check(world)
    assert cloudflare.requests.count("POST") == 1
    record = world.ledger.record(ACCOUNT)
    assert record.rotation is not None
    assert record.rotation.state is State.NOT_APPLIED
    assert "rotation_failed" in names(logs)
