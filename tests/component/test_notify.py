"""Notifications, against a webhook receiver on loopback that speaks real HTTP.

Every document the receiver gets must parse with the CloudEvents reference SDK, and its signature
must verify the way the README tells a receiver to verify it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from structlog.testing import capture_logs

from rotator.after.events import Event
from rotator.after.notify import Notifier, NotifyMetrics, Webhook, load_webhooks, signing_keys
from rotator.config.model import parse_config
from rotator.errors import CredentialError
from rotator.redaction import redact

SECRET = "whsec-7c0ffee-not-a-real-one"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Receiver:
    """A webhook receiver: answers each request with the next status (200 once they run out)."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        if self.hang:
            await asyncio.sleep(3600)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hook", state.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/hook"
    yield state
    await runner.cleanup()


def verify(headers: dict[str, str], body: bytes, secret: str | bytes) -> bool:
    """What a receiver does (README, Notifications): the standardwebhooks library's verify."""
    try:
        StandardWebhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def event(name: str = "key_rotated", **data: Any) -> Event:
    return Event(name, "production", "023e105f4ecef8ad9ca31a8372d0c353", T0, data or {"reason": "due"})


def notifier(webhook: Webhook, registry: CollectorRegistry, **kwargs: Any) -> Notifier:
    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    kwargs.setdefault("sleep", no_wait)
    return Notifier([webhook], NotifyMetrics(registry), **kwargs)


def count(registry: CollectorRegistry, result: str, webhook: str = "ops") -> float:
    value = registry.get_sample_value("rotator_notifications_total", {"webhook": webhook, "result": result})
    return value or 0.0


async def wait_for(predicate: Any) -> None:
    deadline = time.monotonic() + 5.0
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_signed_cloudevent_is_delivered(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    sender = notifier(Webhook("ops", receiver.url, frozenset({"key_rotated"}), (SECRET.encode(),)), registry)
    sender.start()

    sender.emit(event(previous_last_key_rotation_at="2029-12-01T00:00:00Z"))
    sender.emit(event("key_published"))  # not in this webhook's filter
    await wait_for(lambda: count(registry, "delivered") == 1)
    await sender.aclose()

    [(headers, body)] = receiver.received
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert verify(headers, body, SECRET.encode())
    assert not verify(headers, body + b" ", SECRET.encode()) and not verify(headers, body, b"another-secret")
    assert headers["webhook-id"] == json.loads(body)["id"]  # the CloudEvent's id: receivers dedupe by it
    parsed = from_http_event(HTTPMessage(headers=headers, body=body))
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_type() == "com.rotator.key_rotated"
    assert parsed.get_subject() == "production"
    assert parsed.get_source() == "rotator"
    assert parsed.get_time() == T0
    assert parsed.get_data() == {
        "account": "production",
        "account_id": "023e105f4ecef8ad9ca31a8372d0c353",
        "previous_last_key_rotation_at": "2029-12-01T00:00:00Z",
    }
    assert SECRET not in body.decode()


async def test_500s_are_retried_until_delivered(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    registry = CollectorRegistry()
    sender = notifier(Webhook("ops", receiver.url, frozenset({"key_rotated"}), attempts=5), registry)
    sender.start()
    with capture_logs() as logs:
        sender.emit(event())
        await wait_for(lambda: count(registry, "delivered") == 1)
        await sender.aclose()
    assert len(receiver.received) == 3
    assert len({body for _, body in receiver.received}) == 1  # the same document, id and all
    assert count(registry, "retried") == 2 and count(registry, "failed") == 0
    assert [line["event"] for line in logs if line["event"].startswith("notification")] == [
        "notification_retry",
        "notification_retry",
        "notification_sent",
    ]
    assert receiver.url not in json.dumps(logs)  # the URL may hold the receiver's own token


async def test_a_refusal_is_not_retried_and_a_last_failure_is_logged(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    sender = notifier(Webhook("ops", receiver.url, frozenset({"key_rotated"}), attempts=2), registry)
    sender.start()
    receiver.statuses = [400, 500, 500]
    with capture_logs() as logs:
        sender.emit(event())
        sender.emit(event())
        await wait_for(lambda: count(registry, "failed") == 2)
        await sender.aclose()
    assert len(receiver.received) == 3  # 400 once; 500 twice (attempts=2)
    failed = [line for line in logs if line["event"] == "notification_failed"]
    assert [f["error"] for f in failed] == ["answered 400", "answered 500"]
    assert failed[0]["log_level"] == "error" and failed[0]["account"] == "production"


async def test_a_hanging_receiver_delays_nothing_and_is_counted(receiver: Receiver) -> None:
    receiver.hang = True
    registry = CollectorRegistry()
    sender = notifier(
        Webhook("ops", receiver.url, frozenset({"key_rotated"}), timeout=0.2, attempts=2),
        registry,
        queue_size=2,
    )
    sender.start()
    started = time.perf_counter()
    for _ in range(5):
        sender.emit(event())
    emitting = time.perf_counter() - started
    assert emitting < 0.05  # emit only queues
    # The queue holds 2: the other 3 are dropped at once, and said so.
    assert count(registry, "dropped") == 3
    await wait_for(lambda: count(registry, "failed") == 1)
    with capture_logs() as logs:
        await sender.aclose(within=0.1)
    assert count(registry, "dropped") == 4  # the one in flight at shutdown, counted too
    assert any(line["event"] == "notification_dropped" and line["count"] >= 1 for line in logs)


def test_webhook_secrets_come_from_the_environment_and_are_redacted(tmp_path: Any) -> None:
    config = parse_config(
        """
notify:
  webhooks:
    - {url: "https://hooks.example.com/a", secret_env: HOOK_SECRET}
    - {name: audit, url: "http://127.0.0.1:9/b", events: [key_rotated_elsewhere]}
accounts:
  - {name: production, account_id: "023e105f4ecef8ad9ca31a8372d0c353"}
""",
        tmp_path / "config.yaml",
    )
    with pytest.raises(CredentialError, match=r"notify webhook webhook-0: .*HOOK_SECRET"):
        load_webhooks(config.settings.notify, {})
    first, second = load_webhooks(config.settings.notify, {"HOOK_SECRET": SECRET})
    assert (first.name, first.secrets, second.name, second.secrets) == (
        "webhook-0",
        (SECRET.encode(),),
        "audit",
        (),
    )
    # Two at once (rotating the receiver's secret): each is a key, and each is redacted alone.
    (both, _) = load_webhooks(config.settings.notify, {"HOOK_SECRET": f"{SECRET} second-hook-secret-99"})
    assert both.secrets == (SECRET.encode(), b"second-hook-secret-99")
    assert redact("x second-hook-secret-99 y") == "x [REDACTED] y"
    assert second.events == frozenset({"key_rotated_elsewhere"})
    assert redact(f"oops {SECRET}") == "oops [REDACTED]"
    assert SECRET not in repr(first)


async def test_a_rotation_is_not_delayed_by_a_hanging_webhook(receiver: Receiver) -> None:
    """The daemon's own path: the checker's result goes to the notifier, and the check returns."""
    from rotator.after.events import events_from_check
    from rotator.check.checker import CheckResult
    from rotator.check.rotation import Outcome
    from rotator.cloudflare.client import KeyConfig
    from rotator.core.policy import Decision, Reason
    from rotator.core.records import Rotation, State

    receiver.hang = True
    registry = CollectorRegistry()
    sender = notifier(Webhook("ops", receiver.url, frozenset({"key_rotated"}), timeout=5), registry)
    sender.start()
    account = parse_config(
        'accounts: [{name: production, account_id: "023e105f4ecef8ad9ca31a8372d0c353"}]', "x.yaml"
    ).accounts[0]
    result = CheckResult(
        account,
        KeyConfig(1.0, 42.0, T0, T0),
        Decision(True, Reason.DUE, "due"),
        rotation=Outcome(
            Rotation("r", State.DONE, T0, None, "host:1", settled_at=T0), answer=KeyConfig(42.0, 42.0, T0, T0)
        ),
    )
    started = time.perf_counter()
    for item in events_from_check(result):
        sender.emit(item)
    assert time.perf_counter() - started < 0.05
    await wait_for(lambda: len(receiver.received) == 1)
    await sender.aclose(within=0.05)
    assert count(registry, "dropped") == 1  # the one in flight when shutdown came: counted, not lost


async def test_a_trickling_receiver_holds_a_delivery_no_longer_than_its_timeout() -> None:
    """``timeout`` bounds the delivery as a whole: a receiver that answers 200 and then trickles
    its body a byte every 0.1 s (each read well within any per-read timeout) is judged by its
    status once the timeout has passed, not when its 5 s body ends."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = 50
        await response.prepare(request)
        try:
            for _ in range(50):
                await response.write(b" ")
                await asyncio.sleep(0.1)
        except ConnectionResetError:
            pass  # rotator hung up: what the test expects
        return response

    app = web.Application()
    app.router.add_post("/hook", trickle)
    runner = web.AppRunner(app, shutdown_timeout=0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    registry = CollectorRegistry()
    url = f"http://127.0.0.1:{site.port}/hook"
    sender = notifier(
        Webhook("ops", url, frozenset({"key_rotated"}), (SECRET.encode(),), timeout=1.0), registry
    )
    sender.start()
    try:
        started = time.monotonic()
        sender.emit(event())
        await wait_for(lambda: count(registry, "delivered") == 1)
        took = time.monotonic() - started
    finally:
        await sender.aclose()
        await runner.cleanup()
    assert took < 3.0, f"delivered after {took:.2f}s"
    assert count(registry, "failed") == 0 and count(registry, "retried") == 0


async def test_several_secrets_each_sign_and_each_attempt_is_signed_when_sent(receiver: Receiver) -> None:
    """Rotating a receiver's secret: the new one first, the old one after it, in the same value.
    Each verifies on its own (the standardwebhooks library, a receiver holding only one); an attempt
    after a 500 carries the same webhook-id and its own timestamp, so a receiver that drops ids it
    has seen and timestamps outside its tolerance refuses a replayed capture."""
    new = "whsec_" + base64.b64encode(b"the-new-key-32-bytes-long-000000").decode()
    old = "legacy-plain-secret"
    keys = signing_keys(f"{new}\n{old}\n")
    assert keys == (b"the-new-key-32-bytes-long-000000", old.encode())
    receiver.statuses = [500]
    attempts_at = iter([1_900_000_000.0, 1_900_000_061.0])  # the clock at each attempt
    registry = CollectorRegistry()
    sender = notifier(
        Webhook("ops", receiver.url, frozenset({"key_rotated"}), keys),
        registry,
        clock=lambda: next(attempts_at),
    )
    sender.start()
    sender.emit(event())
    await wait_for(lambda: count(registry, "delivered") == 1)
    await sender.aclose()

    (first, first_body), (second, second_body) = receiver.received
    assert first_body == second_body
    assert first["webhook-id"] == second["webhook-id"]
    assert (first["webhook-timestamp"], second["webhook-timestamp"]) == ("1900000000", "1900000061")
    assert len(second["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in second["webhook-signature"].split(" "))
    # The library checks the timestamp against the receiver's clock (5 minutes either way): these
    # were sent in 2030, so they verify only with a receiver clock of then; now, they are replays.
    with pytest.raises(WebhookVerificationError, match=r"too old|too new"):
        StandardWebhook(new).verify(second_body, second)
    live = {**second, **signed(second_body, second["webhook-id"], keys)}
    assert verify(live, second_body, new) and verify(live, second_body, old.encode())
    assert not verify(live, second_body, "whsec_" + base64.b64encode(b"someone-else").decode())


def signed(body: bytes, event_id: str, keys: tuple[bytes, ...]) -> dict[str, str]:
    """The headers rotator would send for this body now (a receiver's clock is the real one)."""
    from rotator.after.notify import signed_headers

    return signed_headers(event_id, int(time.time()), body, keys)


def test_a_whsec_secret_that_is_not_base64_is_refused_without_quoting_it() -> None:
    with pytest.raises(CredentialError) as caught:
        signing_keys("whsec_not*base64!")
    assert "not*base64" not in str(caught.value) and "not base64" in str(caught.value)
    with pytest.raises(CredentialError):
        signing_keys("  \n ")
