"""Notifications: each event sent to the configured webhooks as a CloudEvents 1.0 document.

Delivery never touches a rotation: ``Notifier.emit`` only puts the document on each matching
webhook's bounded queue and returns. One worker per webhook sends its queue in order, so a slow or
hanging receiver holds back only its own notifications. A send is tried up to ``attempts`` times,
with exponential backoff and jitter, on no answer, 408, 429 and 5xx; any other answer outside 2xx
fails at once (sending it again will not help). Nothing is lost silently: every outcome is counted
in ``rotator_notifications_total{webhook, result}`` and every failure logged:

- ``delivered``: a 2xx answer;
- ``retried``: an attempt failed and another follows (``notification_retry``);
- ``failed``: the last attempt failed, or a 4xx refused it (``notification_failed``);
- ``dropped``: the queue was full, or shutdown came first (``notification_dropped``).

The document (structured mode, ``Content-Type: application/cloudevents+json``) has ``type``
``com.rotator.<event>``, ``subject`` the account's name, and ``data`` the event's fields, the
account and its id. With a secret (``secret_env`` or ``secret_file``), each delivery is signed
as Standard Webhooks specify (https://www.standardwebhooks.com, verified by their
``standardwebhooks`` library): ``webhook-id`` (the CloudEvent's ``id``, the same on every attempt,
for receivers to drop a delivery seen before), ``webhook-timestamp`` (Unix seconds, at each
attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``. The secret's
value may hold several secrets (whitespace-separated: a file's lines): each signs, and the
signatures are listed space-separated, so a receiver may move to a new secret while the old still
verifies; the first is the one to keep. A secret is ``whsec_<base64>`` (its key is the decoded
bytes, as the spec and its libraries read it) or any other text, whose UTF-8 bytes are the key
(the secrets configured before, unchanged: a receiver passes those bytes to the library). No credential
is ever part of a document: events are built from rotator's own fields, and every string passes
through rotator.redaction as it is encoded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter

from rotator import __version__
from rotator.after.events import Event
from rotator.cloudflare.bounded import ACCEPT_ENCODING, MalformedAnswer, read_bounded
from rotator.config.credentials import read_secret, remember_secret
from rotator.config.followup_settings import NotifySettings
from rotator.core.records import iso
from rotator.errors import CredentialError
from rotator.redaction import REDACTOR

# Standard Webhooks' headers (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
CONTENT_TYPE = "application/cloudevents+json"
EVENT_TYPE_PREFIX = "com.rotator."
RESULTS = ("delivered", "retried", "failed", "dropped")
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str = ""  # never logged: it may carry a token of the receiver's in its query
    events: frozenset[str] = frozenset()
    secrets: tuple[bytes, ...] = ()  # HMAC keys: each signs every delivery, the first is the current
    timeout: float = 5.0
    attempts: int = 5

    def __repr__(self) -> str:
        return f"Webhook({self.name})"


def load_webhooks(settings: NotifySettings, environ: Mapping[str, str] | None = None) -> list[Webhook]:
    """The configured webhooks with their secrets read; CredentialError naming each one missing."""
    webhooks, problems = [], []
    for name, webhook in settings.named():
        secrets: tuple[bytes, ...] = ()
        if webhook.secret_env is not None or webhook.secret_file is not None:
            try:
                secrets = signing_keys(read_secret(webhook.secret_env, webhook.secret_file, environ))
            except CredentialError as exc:
                problems.append(f"notify webhook {name}: its signing secret cannot be read: {exc}")
                continue
        webhooks.append(
            Webhook(name, webhook.url, frozenset(webhook.events), secrets, webhook.timeout, webhook.attempts)
        )
    if problems:
        raise CredentialError("\n".join(problems))
    return webhooks


def cloudevent(event: Event, *, source: str, event_id: str | None = None) -> dict[str, Any]:
    """The CloudEvents 1.0 document of ``event`` (structured mode)."""
    data = {"account": event.account, "account_id": event.account_id, **event.data}
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": EVENT_TYPE_PREFIX + event.name,
        "subject": event.account,
        "time": iso(event.time),
        "datacontenttype": "application/json",
        "data": data,
    }


def encode(document: Mapping[str, Any]) -> bytes:
    """The body as sent: every field redacted (rotator.redaction), then compact JSON."""
    return json.dumps(REDACTOR.value(document), separators=(",", ":"), sort_keys=True).encode()


def signing_keys(value: str) -> tuple[bytes, ...]:
    """The HMAC keys of a secret's value: one per whitespace-separated word, ``whsec_<base64>``
    decoded, any other word's UTF-8 bytes; CredentialError (quoting nothing) when there is none
    or a ``whsec_`` one is not base64."""
    keys = []
    for position, word in enumerate(value.split(), start=1):
        remember_secret(word)  # each one alone is a secret too, for the log's redaction
        if word.startswith(SECRET_PREFIX):
            try:
                key = base64.b64decode(word[len(SECRET_PREFIX) :], validate=True)
            except (binascii.Error, ValueError):
                raise CredentialError(
                    f"secret {position} starts with {SECRET_PREFIX} but the rest is not base64"
                ) from None
        else:
            key = word.encode()
        if not key:
            raise CredentialError(f"secret {position} is empty")
        keys.append(key)
    if not keys:
        raise CredentialError("the secret is empty")
    return tuple(keys)


def signed_headers(event_id: str, timestamp: int, body: bytes, keys: tuple[bytes, ...]) -> dict[str, str]:
    """Standard Webhooks' three headers: the id, the timestamp, and one ``v1,<base64>`` signature
    of ``id.timestamp.body`` per key, space-separated."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
    )
    return {ID_HEADER: event_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signatures}


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "rotator_notifications",
            "Notifications to webhooks, by webhook and result (delivered, retried, failed, dropped).",
            ["webhook", "result"],
            registry=registry,
        )

    def configure(self, webhooks: list[Webhook]) -> None:
        for webhook in webhooks:
            for result in RESULTS:
                self.notifications.labels(webhook.name, result)

    def count(self, webhook: Webhook, result: str, n: int = 1) -> None:
        self.notifications.labels(webhook.name, result).inc(n)


@dataclass(frozen=True)
class _Queued:
    event: Event
    body: bytes
    event_id: str


class Notifier:
    """An ``EventSink`` that sends to webhooks in the background; ``emit`` never waits."""

    def __init__(
        self,
        webhooks: list[Webhook],
        metrics: NotifyMetrics,
        *,
        source: str = "rotator",
        queue_size: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: tuple[float, float] = (BACKOFF_INITIAL, BACKOFF_MAX),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: Unix time, each attempt's ``webhook-timestamp``."""
        self._webhooks = webhooks
        self._metrics = metrics
        self._source = source
        self._queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[_Queued]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(
            headers={
                "User-Agent": f"rotator/{__version__}",
                "Content-Type": CONTENT_TYPE,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            transport=transport,
            follow_redirects=False,
        )
        self._sleep = sleep
        self._backoff = backoff
        self._clock = clock
        self._log = structlog.get_logger("rotator")
        metrics.configure(webhooks)

    def start(self) -> None:
        """Start one worker per webhook on the running loop."""
        if self._workers:
            return
        for webhook in self._webhooks:
            queue: asyncio.Queue[_Queued] = asyncio.Queue(self._queue_size)
            self._queues[webhook.name] = queue
            self._workers.append(
                asyncio.create_task(self._work(webhook, queue), name=f"notify-{webhook.name}")
            )

    def emit(self, event: Event) -> None:
        for webhook in self._webhooks:
            if event.name not in webhook.events:
                continue
            queue = self._queues.get(webhook.name)
            event_id = str(uuid.uuid4())
            if queue is None:
                self._dropped(webhook, event, "the notifier is not running", 1)
                continue
            body = encode(cloudevent(event, source=self._source, event_id=event_id))
            try:
                queue.put_nowait(_Queued(event, body, event_id))
            except asyncio.QueueFull:
                self._dropped(webhook, event, f"its queue is full ({self._queue_size} waiting)", 1)

    async def aclose(self, within: float = 2.0) -> None:
        """Let the queues drain for at most ``within`` seconds, then count what is left as dropped."""
        if self._queues:
            joins = [asyncio.ensure_future(q.join()) for q in self._queues.values()]
            _, waiting = await asyncio.wait(joins, timeout=within)
            for join in waiting:
                join.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for webhook in self._webhooks:
            queue = self._queues.get(webhook.name)
            left = queue.qsize() if queue is not None else 0
            if left:
                self._metrics.count(webhook, "dropped", left)
                self._log.error(
                    "notification_dropped",
                    webhook=webhook.name,
                    count=left,
                    reason="rotator is shutting down",
                )
        await self._http.aclose()

    def _dropped(self, webhook: Webhook, event: Event, reason: str, count: int) -> None:
        self._metrics.count(webhook, "dropped", count)
        self._log.error(
            "notification_dropped",
            webhook=webhook.name,
            notification=event.name,
            account=event.account,
            account_id=event.account_id,
            count=count,
            reason=reason,
        )

    async def _work(self, webhook: Webhook, queue: asyncio.Queue[_Queued]) -> None:
        while True:
            item = await queue.get()
            try:
                await self._deliver(webhook, item)
            except asyncio.CancelledError:
                self._dropped(webhook, item.event, "rotator is shutting down", 1)
                raise
            except Exception as exc:  # a worker must outlive any one notification
                self._metrics.count(webhook, "failed")
                self._log.error("notification_failed", webhook=webhook.name, error=repr(exc))
            finally:
                queue.task_done()

    async def _deliver(self, webhook: Webhook, item: _Queued) -> None:
        fields = {
            "webhook": webhook.name,
            "notification": item.event.name,
            "notification_id": item.event_id,
            "account": item.event.account,
            "account_id": item.event.account_id,
        }
        for attempt in range(1, webhook.attempts + 1):
            # Signed at each attempt: its timestamp is when it is sent (receivers refuse old ones).
            headers = (
                signed_headers(item.event_id, int(self._clock()), item.body, webhook.secrets)
                if webhook.secrets
                else {}
            )
            error, retryable = await self._send(webhook, item.body, headers)
            if error is None:
                self._metrics.count(webhook, "delivered")
                self._log.debug("notification_sent", attempt=attempt, **fields)
                return
            if not retryable or attempt == webhook.attempts:
                self._metrics.count(webhook, "failed")
                self._log.error("notification_failed", attempt=attempt, error=error, **fields)
                return
            wait = min(self._backoff[1], self._backoff[0] * 2 ** (attempt - 1)) * (0.5 + random.random())  # noqa: S311
            self._metrics.count(webhook, "retried")
            self._log.warning(
                "notification_retry", attempt=attempt, wait_seconds=round(wait, 2), error=error, **fields
            )
            await self._sleep(wait)

    async def _send(self, webhook: Webhook, body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (why, whether another attempt may succeed)."""
        # ``timeout`` is the deadline of the whole delivery, to the answer's last byte (httpx's
        # bounds each read alone: a receiver trickling its answer held a 5 s timeout for 26 s).
        # The answer's body says nothing rotator uses: it is read (so the connection can be kept)
        # up to MAX_BODY once decompressed, and the delivery judged by its status whatever the
        # body holds or however slowly it comes.
        status: int | None = None
        try:
            async with (
                asyncio.timeout(webhook.timeout),
                self._http.stream(
                    "POST", webhook.url, content=body, headers=headers, timeout=webhook.timeout
                ) as response,
            ):
                status = response.status_code
                with contextlib.suppress(MalformedAnswer):
                    await read_bounded(response.aiter_raw(), response.headers.get("Content-Encoding"))
        except (TimeoutError, httpx.TimeoutException):
            if status is None:
                return f"no answer within {webhook.timeout:g}s", True
        except httpx.HTTPError as exc:
            if status is None:
                return f"{type(exc).__name__}: the request failed", True
        if 200 <= status < 300:
            return None, False
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        return f"answered {status}", retryable
