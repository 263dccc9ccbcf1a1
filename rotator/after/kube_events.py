"""Kubernetes Events of what rotator did, as cert-manager gives its users: ``kubectl get events``.

With leader election, each rotation (``key_rotated``), unconfirmed or failed rotation, publication
verdict (``key_published``, ``key_publication_late``) and rotation made elsewhere is also an
events.k8s.io/v1 Event. It is about (``regarding``) the leader election's Lease: the one object
every replica shares, which outlives any pod (an Event on a pod is gone with the pod, and a
failover would split one account's history over two), which rotator can already name and read
without more RBAC than ``create`` on Events, and whose Events ``kubectl describe lease rotator``
lists. ``reportingInstance`` is the acting replica's identity (its pod), so who acted is there too,
and the note names the account.

Emitting never blocks nor raises (an ``EventSink``): Events queue (at most ``QUEUE_SIZE``; past
it the newest is dropped and logged), and one task creates them, each call bounded by
``DEADLINE``; a failure is logged (``kube_event_failed``) and the next one goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import structlog

from rotator.after.events import Event
from rotator.errors import KubernetesError
from rotator.ha.kube import KubeAPI
from rotator.redaction import redact

# Seconds one Event's creation may take.
DEADLINE = 5.0
QUEUE_SIZE = 1000
# At shutdown, Events still queued get this long to be created.
DRAIN_SECONDS = 3.0
REPORTING_CONTROLLER = "rotator"
# events.k8s.io/v1's limits (ValidateEventCreate).
FIELD_LIMIT = 128
NOTE_LIMIT = 1024

# An event's name: (type, reason, action).
KINDS = {
    "key_rotated": ("Normal", "KeyRotated", "Rotate"),
    "rotation_unconfirmed": ("Warning", "RotationUnconfirmed", "Rotate"),
    "rotation_failed": ("Warning", "RotationFailed", "Rotate"),
    "key_published": ("Normal", "KeyPublished", "VerifyPublication"),
    "key_publication_late": ("Warning", "KeyPublicationLate", "VerifyPublication"),
    "key_rotated_elsewhere": ("Warning", "KeyRotatedElsewhere", "Check"),
}


def note(event: Event) -> str:
    """What an operator reads in ``kubectl get events``: the account, then what happened."""
    data = event.data
    what = {
        "key_rotated": f"signing key rotated (reason: {data.get('reason')}); last_key_rotation_at "
        f"{data.get('last_key_rotation_at')}",
        "rotation_unconfirmed": "rotation sent, outcome unknown (it may have been applied): "
        f"{data.get('error')}",
        "rotation_failed": f"rotation failed: {data.get('error')}",
        "key_published": f"new key {data.get('kid')} served at the team's certs endpoint after "
        f"{data.get('publication_seconds')} s" + (" (late)" if data.get("late") else ""),
        "key_publication_late": f"new key not served at the team's certs endpoint within "
        f"{data.get('deadline_seconds')} s: {data.get('reason')}",
        "key_rotated_elsewhere": f"key rotated, not by rotator: last_key_rotation_at "
        f"{data.get('last_key_rotation_at')}",
    }.get(event.name, event.name)
    text = redact(f"account {event.account} ({event.account_id}): {what}")
    return text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - 3] + "..."


def event_body(
    event: Event, *, lease: str, namespace: str, uid: str | None, instance: str, name: str
) -> dict[str, Any]:
    """The events.k8s.io/v1 Event of ``event``, regarding the Lease ``lease``."""
    kind, reason, action = KINDS[event.name]
    regarding: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "name": lease,
        "namespace": namespace,
    }
    if uid:
        regarding["uid"] = uid  # kubectl describe matches Events to the object by it
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "eventTime": event.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "type": kind,
        "reason": reason,
        "action": action,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:FIELD_LIMIT],
        "regarding": regarding,
        "note": note(event),
    }


class KubeEvents:
    """An EventSink that creates each event worth an operator's look as a Kubernetes Event."""

    def __init__(self, kubernetes: KubeAPI, lease: str, instance: str) -> None:
        self._kubernetes = kubernetes
        self._lease = lease
        self._instance = instance
        self._uid: str | None = None
        self._queue: asyncio.Queue[Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._sequence = itertools.count()
        self._log = structlog.get_logger("rotator")

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
            self._task = asyncio.create_task(self._work(self._queue), name="kube-events")

    def emit(self, event: Event) -> None:
        if event.name not in KINDS:
            return
        if self._queue is None:
            self._dropped(event, "the Event sender is not running")
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped(event, f"its queue is full ({QUEUE_SIZE} waiting)")

    async def aclose(self, within: float = DRAIN_SECONDS) -> None:
        if self._queue is not None and self._task is not None:
            join = asyncio.ensure_future(self._queue.join())
            _, waiting = await asyncio.wait({join}, timeout=within)
            for left in waiting:
                left.cancel()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            if self._queue.qsize():
                self._log.error("kube_event_dropped", count=self._queue.qsize(), reason="shutting down")

    async def _work(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._create(event)
            except Exception as exc:  # never the sender's end: the next Event goes on
                self._log.error(
                    "kube_event_failed",
                    account=event.account,
                    account_id=event.account_id,
                    notification=event.name,
                    error=str(exc) if isinstance(exc, KubernetesError) else repr(exc),
                )
            finally:
                queue.task_done()

    async def _create(self, event: Event) -> None:
        namespace = self._kubernetes.namespace
        if self._uid is None:
            try:
                found = await self._kubernetes.read_lease(self._lease, deadline=DEADLINE)
                self._uid = found.uid if found is not None else None
            except KubernetesError:
                pass  # the Event goes without it: kubectl get events still shows it
        name = f"{self._lease}.{time.time_ns():x}{next(self._sequence)}"
        body = event_body(
            event, lease=self._lease, namespace=namespace, uid=self._uid, instance=self._instance, name=name
        )
        await self._kubernetes.create_event(body, deadline=DEADLINE)

    def _dropped(self, event: Event, why: str) -> None:
        self._log.error(
            "kube_event_dropped",
            account=event.account,
            account_id=event.account_id,
            notification=event.name,
            reason=why,
        )
