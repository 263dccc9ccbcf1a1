"""Events that leave the process: what happened to an account, as the notifier sends it.

The checker logs what it does; the daemon hands each ``CheckResult`` to ``events_from_check``,
which says the same in events (``key_rotated``, ``rotation_failed``, ``rotation_unconfirmed``).
The publication check and the watch for rotations made elsewhere emit theirs directly. Whatever
emits only needs an ``EventSink``: the notifier is one, and nothing here knows how the checker
works inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rotator.check.checker import CheckResult
from rotator.core.keys import KeyConfig
from rotator.core.records import iso


@dataclass(frozen=True)
class Event:
    """One event about one account; ``time`` is Cloudflare's clock where an answer gave it."""

    name: str
    account: str
    account_id: str
    time: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Take the event now; never block, never raise."""


class Sinks:
    """Several sinks as one: each hears every event, and one that raises does not stop the others."""

    def __init__(self, sinks: tuple[EventSink, ...]) -> None:
        self._sinks = sinks

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:  # noqa: S112 - "never raise" is each sink's promise; keep it for them
                continue


class NoSink:
    def emit(self, event: Event) -> None:
        pass


def rotated(result: CheckResult) -> tuple[KeyConfig, datetime] | None:
    """(the answer, when the key rotated) when the check saw a rotation of rotator's applied.

    When: Cloudflare's ``last_key_rotation_at`` if the answer shows it, else the ledger's time.
    """
    outcome = result.rotation
    if not result.rotated or outcome is None or outcome.answer is None or outcome.rotation is None:
        return None
    answer, settled = outcome.answer, outcome.rotation.settled_at
    if answer.last_key_rotation_at is not None and not answer.predates(settled):
        return answer, answer.last_key_rotation_at
    return answer, settled or answer.observed_at


def events_from_check(result: CheckResult) -> list[Event]:
    """The rotation events a check amounts to, with the fields its log lines carry."""
    account, decision, outcome = result.account, result.decision, result.rotation
    if outcome is None:
        return []
    done = rotated(result)
    if done is not None:
        answer, at = done
        entry = outcome.rotation
        return [
            Event(
                "key_rotated",
                account.name,
                account.account_id,
                answer.observed_at,
                {
                    # "confirmed": a rotation left unconfirmed earlier, shown by this check's read.
                    "reason": decision.reason.value if decision and decision.rotate else "confirmed",
                    "previous_last_key_rotation_at": iso(entry.rotates_from if entry else None),
                    "last_key_rotation_at": iso(at),
                    "days_until_next_rotation": answer.days_until_next_rotation,
                },
            )
        ]
    if outcome.error is None or result.key is None:
        return []
    unconfirmed = outcome.possibly_applied
    return [
        Event(
            "rotation_unconfirmed" if unconfirmed else "rotation_failed",
            account.name,
            account.account_id,
            result.key.observed_at,
            {
                "reason": decision.reason.value if decision else None,
                "error": str(outcome.error),
                "error_type": type(outcome.error).__name__,
                "possibly_applied": unconfirmed,
            },
        )
    ]
