"""/metrics as Prometheus reads it: the page rotator writes is the one prometheus-client would write.

rotator writes the per-account families' text itself and keeps it between scrapes (prometheus-client's
exposition takes a second of CPU at 10,000 accounts). These tests hold that text to
``generate_latest``'s, byte for byte and parsed, over every state a row can be in; show that a
number changed after a scrape is in the next one; and that a scrape, written in a thread, leaves
the event loop free.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from rotator.after.publication import PublicationMetrics
from rotator.config.credentials import CredentialSource
from rotator.config.model import Account, RotationSettings
from rotator.core.keys import KeyConfig
from rotator.metrics.families import Metrics, _number, exposition
from rotator.web.server import StatusServer

NOW = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)


def _account(name: str, account_id: str | None = None, **rotation: object) -> Account:
    return Account(
        name=name,
        account_id=account_id or f"{abs(hash(name)):032x}"[:32],
        rotation=RotationSettings.model_validate(rotation),
        credential=CredentialSource.token_env("CLOUDFLARE_API_TOKEN"),
    )


def _key(last: datetime | None, interval: float | None, days_left: float | None = None) -> KeyConfig:
    return KeyConfig(
        days_until_next_rotation=days_left,
        key_rotation_interval_days=interval,
        last_key_rotation_at=last,
        observed_at=NOW,
    )


def _fleet(n: int) -> tuple[Metrics, CollectorRegistry, list[Account]]:
    """n accounts, each with a key read and a successful check, as after a first pass."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    accounts = [_account(f"account-{i}", f"{i:032x}") for i in range(n)]
    metrics.configure(accounts, 3600)
    for i, account in enumerate(accounts):
        metrics.record_key(account, _key(NOW - timedelta(days=i % 40, seconds=i), 42))
        metrics.record_check(account, ok=True, at=NOW + timedelta(seconds=i, microseconds=i))
    return metrics, registry, accounts


def _parsed(text: bytes) -> list[tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples],
        )
        for family in text_string_to_metric_families(text.decode())
    ]


def _assert_as_prometheus_client_writes(registry: CollectorRegistry) -> bytes:
    ours, theirs = exposition(registry), generate_latest(registry)
    assert _parsed(ours) == _parsed(theirs)
    assert ours == theirs
    return ours


@pytest.fixture
def created_series() -> Iterator[None]:
    """Restores prometheus-client's PROMETHEUS_DISABLE_CREATED_SERIES switch after a test."""
    yield
    prometheus_client.enable_created_metrics()


@pytest.mark.usefixtures("created_series")
@pytest.mark.parametrize("created", [True, False], ids=["with _created", "without _created"])
def test_the_page_is_the_one_prometheus_client_writes_in_every_state(created: bool) -> None:
    if created:
        prometheus_client.enable_created_metrics()
    else:
        prometheus_client.disable_created_metrics()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    _assert_as_prometheus_client_writes(registry)  # nothing configured yet

    never_read = _account("never-read")
    interval_only = _account("interval-only")
    days_left_only = _account("days-left-only", dry_run=True, threshold_days=2.5)
    rotated = _account("rotated")
    # Label values prometheus-client escapes (config names are tamer; the page must not depend on it).
    odd = _account('quote"back\\slash\nnewline-ünï', 'id"with\\odd\nchars')
    metrics.configure([never_read, interval_only, days_left_only, rotated, odd], 3600)
    first = _assert_as_prometheus_client_writes(registry)

    metrics.record_key(interval_only, _key(None, 42))
    metrics.record_key(days_left_only, _key(None, None, days_left=12.75))
    metrics.record_key(rotated, _key(NOW - timedelta(days=41, microseconds=7), 30))
    metrics.record_key(odd, _key(NOW - timedelta(days=1), 365))
    metrics.record_check(never_read, ok=False, at=NOW)
    for account in (interval_only, days_left_only, rotated, odd):
        metrics.record_check(account, ok=True, at=NOW + timedelta(microseconds=1))
    metrics.record_rotation(days_left_only, "dry_run", NOW)
    metrics.record_rotation(rotated, "error", NOW)
    metrics.record_rotation(rotated, "success", NOW + timedelta(minutes=1))
    metrics.record_rotation(odd, "elsewhere", NOW)
    metrics.record_unconfirmed(days_left_only, True)
    metrics.record_unconfirmed(rotated, False)
    metrics.observe_request("GET", "keys", "200", 0.02)
    metrics.observe_request("POST", "rotate", "error", 31.0)
    metrics.config_reloads.labels("success").inc()
    second = _assert_as_prometheus_client_writes(registry)
    assert second != first

    # A reload: one account gone, one name now naming another account, one new.
    metrics.forget(interval_only)
    renamed = _account("rotated", "f" * 32)
    metrics.configure([never_read, days_left_only, renamed, odd, _account("added")], 60)
    third = _assert_as_prometheus_client_writes(registry)
    assert b'account="interval-only"' not in third
    assert f'account_id="{rotated.account_id}"'.encode() not in third


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.0, 3.5, 999999.9999999999, 1e6, 1e6 + 0.5, 3628800.0, 1764230400.0, 1764230400.123456,
     1.0000001e9, 12345678901234.5, 1e16, 1.5e22, -2.5e9, 5e-324, math.inf, -math.inf, math.nan],
)  # fmt: skip
def test_numbers_are_written_as_prometheus_client_writes_them(value: float) -> None:
    assert _number(value) == floatToGoString(value)


def test_the_publication_checks_series_are_written_as_prometheus_client_writes_them() -> None:
    _, registry, accounts = _fleet(20)
    publication = PublicationMetrics(registry)
    publication.configure(accounts[:15])
    _assert_as_prometheus_client_writes(registry)
    for i, account in enumerate(accounts[:10]):
        row = publication.row(account)
        row[0] = 2.0  # keys served
        row[1] = (NOW - timedelta(days=i, microseconds=i)).timestamp()  # current kid first seen
        row[2] = float(i % 2)  # late
        row[3 + i % 2] += 1 + i  # reads, success or error
    _assert_as_prometheus_client_writes(registry)
    publication.configure(accounts[5:20])  # a reload: five gone, five new
    page = _assert_as_prometheus_client_writes(registry)
    assert b'rotator_jwks_reads_total{account="account-19",account_id=' in page
    assert b'rotator_jwks_keys{account="account-0",' not in page


def test_a_number_changed_after_a_scrape_is_in_the_next() -> None:
    metrics, registry, accounts = _fleet(50)
    before = _assert_as_prometheus_client_writes(registry)
    assert _assert_as_prometheus_client_writes(registry) == before  # kept, and still the same

    later = NOW + timedelta(hours=1, microseconds=5)
    metrics.record_check(accounts[7], ok=True, at=later)
    after = _assert_as_prometheus_client_writes(registry)
    samples = {(s[0], s[1]): s[2] for f in _parsed(after) for s in f[3]}
    account_7 = (("account", "account-7"), ("account_id", f"{7:032x}"))
    assert samples[("rotator_last_successful_check_timestamp_seconds", account_7)] == later.timestamp()
    assert samples[("rotator_checks_total", (("account", "account-7"), ("result", "success")))] == 2


def test_changes_while_a_thread_writes_the_page_are_never_lost() -> None:
    """The daemon changes numbers on its event loop while a scrape is written in a thread."""
    metrics, registry, accounts = _fleet(2000)
    stop = threading.Event()

    def scrape_until_stopped() -> None:
        while not stop.is_set():
            exposition(registry)

    scraper = threading.Thread(target=scrape_until_stopped)
    scraper.start()
    try:
        for round_ in range(5):
            for i, account in enumerate(accounts):
                metrics.record_check(account, ok=i % 3 != 0, at=NOW + timedelta(hours=round_, seconds=i))
                if i % 100 == round_:
                    metrics.record_rotation(account, "success", NOW + timedelta(days=round_))
    finally:
        stop.set()
        scraper.join()
    _assert_as_prometheus_client_writes(registry)


async def test_a_scrape_leaves_the_event_loop_free() -> None:
    # What a scrape costs when written at once, on the loop: a fleet like the one served, cold.
    _, cold, _ = _fleet(20_000)
    started = time.perf_counter()
    exposition(cold)
    writing = time.perf_counter() - started

    _, registry, _ = _fleet(20_000)
    server = StatusServer(registry, healthy=lambda: None, ready=lambda: None)
    port = await server.start("127.0.0.1", 0)
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - before - 0.001)

    def scrape() -> tuple[str, bytes]:
        # urllib, not httpx: a client that allocates little, so what the loop waits for is the server.
        loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the env
        with loopback.open(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
            return response.headers["Content-Type"], response.read()

    # A full collection stops every thread, whoever's allocation sets it off, and 40,000 accounts'
    # objects take a tenth of a second to walk: start from a clean slate so it is not counted here
    # (the daemon freezes what start-up made, so its collections do not walk them at all).
    gc.collect()
    probing = asyncio.create_task(probe())
    try:
        content_type, page = await asyncio.to_thread(scrape)
    finally:
        done.set()
        await probing
        await server.stop()

    assert content_type == "text/plain; version=1.0.0; charset=utf-8"
    assert page == generate_latest(registry)
    # Written on the loop, the scrape would stall it for the whole `writing`; in a thread the loop
    # waits at most for the interpreter's switch interval (5 ms) or one family's copy.
    assert max(lags) < writing / 4, (max(lags), writing)


async def test_scrapes_that_arrive_together_share_one_page() -> None:
    _, registry, _ = _fleet(3000)
    server = StatusServer(registry, healthy=lambda: None, ready=lambda: None)
    port = await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
            pages = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/metrics") for _ in range(4)))
            head = await client.head(f"http://127.0.0.1:{port}/metrics")
    finally:
        await server.stop()
    assert {page.status_code for page in pages} == {200}
    assert {page.content for page in pages} == {generate_latest(registry)}
    assert head.status_code == 200
    assert head.content == b""
