"""Rotations rotator did not make: Cloudflare's own, a person's in the dashboard, another tool's.

``rotated_elsewhere`` is the decision, pure: Cloudflare's ``last_key_rotation_at`` moved forward
and none of rotator's own rotations explains the new value. ``ElsewhereWatch`` feeds it from the
daemon's check results and says so (``key_rotated_elsewhere``, ``rotator_rotations_total{result=
"elsewhere"}``, an event for the notifier).

An own rotation is a span of time: a confirmed one is the instant Cloudflare reports for it; one
whose rotate POST may or may not have been applied spans from before the POST until the read that
followed it (``latest`` None while no read has followed yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from rotator.after.events import Event, EventSink, rotated
from rotator.check.checker import CheckResult
from rotator.config.model import Account
from rotator.core.records import iso
from rotator.metrics.families import Metrics

# Cloudflare reports a rotation's time to the microsecond; this absorbs rounding, nothing more.
SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class OwnRotation:
    earliest: datetime
    latest: datetime | None = None  # None: not settled by a later read yet

    @classmethod
    def at(cls, moment: datetime) -> OwnRotation:
        return cls(moment, moment)


def rotated_elsewhere(
    previous: datetime | None,
    current: datetime | None,
    own: Iterable[OwnRotation],
    *,
    slack: timedelta = SLACK,
) -> bool:
    """Whether ``last_key_rotation_at`` moving from ``previous`` to ``current`` was someone else's.

    False when either is unknown or it did not move forward (a stale read moves it back), or when
    one of rotator's own rotations spans the new value.
    """
    if previous is None or current is None or current <= previous:
        return False
    for rotation in own:
        latest = rotation.latest if rotation.latest is not None else current
        if rotation.earliest - slack <= current <= latest + slack:
            return False
    return True


@dataclass
class _Seen:
    last: datetime | None = None
    own: list[OwnRotation] = field(default_factory=list)


class ElsewhereWatch:
    """Per account: the latest ``last_key_rotation_at`` seen, and rotator's own rotations since."""

    def __init__(self, metrics: Metrics, sink: EventSink) -> None:
        self._metrics = metrics
        self._sink = sink
        self._seen: dict[str, _Seen] = {}
        self._log = structlog.get_logger("rotator")

    def forget(self, account: Account) -> None:
        self._seen.pop(account.account_id, None)

    def observe(self, result: CheckResult) -> bool:
        """Judge the check's read, then record what the check itself did; True: rotated elsewhere."""
        key = result.key
        if key is None:
            return False
        seen = self._seen.setdefault(result.account.account_id, _Seen())
        current = key.last_key_rotation_at
        elsewhere = rotated_elsewhere(seen.last, current, seen.own)
        if elsewhere:
            self._report(result.account, seen.last, current, key.observed_at)
        # A read settles the span of a possible rotation: it was applied, if at all, before now.
        seen.own = [r if r.latest is not None else OwnRotation(r.earliest, key.observed_at) for r in seen.own]
        seen.last = _later(seen.last, current)
        outcome = result.rotation
        if outcome is not None and outcome.rotation is not None:
            entry = outcome.rotation
            done = rotated(result)
            if done is not None:
                # Applied between the intent (before the POST left) and the answer or the read.
                seen.own.append(OwnRotation(min(entry.intended_at, done[1]), entry.settled_at or done[1]))
                seen.last = _later(seen.last, done[1])
            elif outcome.possibly_applied:
                seen.own.append(OwnRotation(entry.intended_at))
        # Own rotations before the latest value seen can explain nothing any more.
        if seen.last is not None:
            seen.own = [r for r in seen.own if r.latest is None or r.latest + SLACK >= seen.last]
        return elsewhere

    def _report(
        self, account: Account, previous: datetime | None, current: datetime | None, at: datetime
    ) -> None:
        self._log.warning(
            "key_rotated_elsewhere",
            account=account.name,
            account_id=account.account_id,
            previous_last_key_rotation_at=iso(previous),
            last_key_rotation_at=iso(current),
            message="last_key_rotation_at moved forward and no rotation of rotator's explains it: "
            "Cloudflare rotated on its own, or someone else rotated the key",
        )
        self._metrics.record_rotation(account, "elsewhere", at)
        self._sink.emit(
            Event(
                "key_rotated_elsewhere",
                account.name,
                account.account_id,
                at,
                {"previous_last_key_rotation_at": iso(previous), "last_key_rotation_at": iso(current)},
            )
        )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
