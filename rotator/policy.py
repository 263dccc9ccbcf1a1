"""The rotation policy: a pure function from what was observed to what to do, and why.

No I/O, no clock reads: ``now`` is an argument (Cloudflare's clock, read from the response), so
the policy is tested as a table. The checks run in order and the first that settles it wins,
like cert-manager's trigger policy chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.cloudflare import KeyConfig
from rotator.config import RotationSettings
from rotator.windows import Windows, WindowState

DAY = timedelta(days=1)
# How long after an unconfirmed rotate POST a read of Cloudflare's configuration is trusted to show
# whether it happened: far longer than a replica lags, far shorter than a check interval.
POSSIBLE_SETTLED_AFTER = timedelta(minutes=10)


class Reason(StrEnum):
    DUE = "due"  # days_until_next_rotation reached the threshold: rotate
    REQUESTED = "requested"  # a person asked (rotator rotate): rotate if the gap allows
    FORCED = "forced"  # a person asked with --force: rotate whatever the gap
    NOT_DUE = "not_due"
    TOO_SOON = "too_soon"  # the previous key may still sign tokens in flight
    DRY_RUN = "dry_run"
    UNKNOWN = "unknown"  # Cloudflare did not say enough to judge
    OUTSIDE_WINDOW = "outside_window"  # due, waiting for a maintenance window
    # Due, no window opens before Cloudflare would rotate on its own, and this is the last check
    # before that: rotate now rather than let Cloudflare pick the moment.
    WINDOW_DEADLINE = "window_deadline"


@dataclass(frozen=True)
class Decision:
    rotate: bool
    reason: Reason
    message: str
    # The interval to enforce with PUT, when Cloudflare's differs from the configured one.
    set_interval: int | None = None
    days_until_next_rotation: float | None = None
    window: WindowState | None = None  # None: no windows configured


def decide(
    key: KeyConfig,
    policy: RotationSettings,
    *,
    now: datetime,
    confirmed_rotation: datetime | None = None,
    possible_rotation: datetime | None = None,
    requested: bool = False,
    force: bool = False,
    windows: Windows | None = None,
    check_period: timedelta = timedelta(0),
) -> Decision:
    """Decide whether to rotate an account's key now.

    ``confirmed_rotation`` is the latest rotation this process made and saw confirmed: it holds the
    minimum gap, and when Cloudflare's answer predates it the answer is stale, so the days left are
    judged from that rotation instead. ``possible_rotation`` is a rotate POST whose outcome could
    not be confirmed: it holds the gap until a read taken ``POSSIBLE_SETTLED_AFTER`` later settles
    it (the rotation shows in ``last_key_rotation_at``, or it never happened). ``check_period`` is
    the longest time until the next check (interval plus jitter): with maintenance windows, it
    tells whether this check is the last one before Cloudflare would rotate on its own. A person
    asking (``requested``, ``force``) picks the moment, so windows do not apply to them.
    """
    stale = _predates(key, confirmed_rotation)
    if stale and confirmed_rotation is not None and key.key_rotation_interval_days is not None:
        elapsed = (now - confirmed_rotation) / DAY
        days: float | None = max(0.0, round(key.key_rotation_interval_days - elapsed, 3))
    else:
        days = days_until_rotation(key, now)
    set_interval = _interval_to_enforce(key, policy)
    window = windows.state(now) if windows else None

    def outcome(rotate: bool, reason: Reason, message: str) -> Decision:
        return Decision(rotate, reason, message, set_interval, days, window)

    if force:
        return _dry_run_or(
            outcome, policy, Reason.FORCED, "rotation forced by request; the gap is not checked"
        )
    if not requested:
        if days is None:
            return outcome(
                False,
                Reason.UNKNOWN,
                "Cloudflare reported neither days_until_next_rotation nor the last rotation and "
                "interval: cannot tell whether the key is due",
            )
        if days > policy.threshold_days:
            return outcome(
                False,
                Reason.NOT_DUE,
                f"{days:g} days until Cloudflare rotates on its own; rotating at "
                f"{policy.threshold_days:g} or fewer"
                + (
                    f" (Cloudflare's answer predates the rotation rotator made at "
                    f"{confirmed_rotation.isoformat()}: judged from that one)"
                    if stale and confirmed_rotation is not None
                    else ""
                ),
            )
    if possible_rotation is not None and _settles(key, possible_rotation):
        possible_rotation = None
    last = _latest(key.last_key_rotation_at, confirmed_rotation, possible_rotation)
    min_gap = policy.min_days_between_rotations * DAY
    if last is not None and now - last < min_gap:
        allowed_at = last + min_gap
        return outcome(
            False,
            Reason.TOO_SOON,
            f"the last rotation was at {last.isoformat()}, less than "
            f"{policy.min_days_between_rotations:g} days ago; the previous key may still sign "
            f"tokens in flight, so the next rotation waits until {allowed_at.isoformat()}",
        )
    if requested:
        return _dry_run_or(outcome, policy, Reason.REQUESTED, "rotation requested")
    assert days is not None
    if window is not None and window.open_until is None:
        cloudflare_rotates_at = now + days * DAY
        opening = window.next_opening
        if opening is not None and opening + check_period < cloudflare_rotates_at:
            return outcome(
                False,
                Reason.OUTSIDE_WINDOW,
                f"due ({days:g} days until Cloudflare rotates on its own), waiting for the "
                f"maintenance window that opens at {opening.isoformat()}",
            )
        if now + check_period < cloudflare_rotates_at:
            return outcome(
                False,
                Reason.OUTSIDE_WINDOW,
                f"due, and no maintenance window opens before Cloudflare rotates on its own at "
                f"{cloudflare_rotates_at.isoformat()}: rotating at the last check before then",
            )
        return _dry_run_or(
            outcome,
            policy,
            Reason.WINDOW_DEADLINE,
            f"no maintenance window opens before Cloudflare rotates on its own at "
            f"{cloudflare_rotates_at.isoformat()}, and this is the last check before then: "
            "rotating now rather than letting Cloudflare pick the moment",
        )
    return _dry_run_or(
        outcome,
        policy,
        Reason.DUE,
        f"{days:g} days until Cloudflare rotates on its own, at or below the threshold of "
        f"{policy.threshold_days:g}",
    )


def days_until_rotation(key: KeyConfig, now: datetime) -> float | None:
    """Cloudflare's figure, or, when it left it out, what its last rotation and interval imply."""
    if key.days_until_next_rotation is not None:
        return key.days_until_next_rotation
    if key.last_key_rotation_at is not None and key.key_rotation_interval_days is not None:
        elapsed = (now - key.last_key_rotation_at) / DAY
        return max(0.0, round(key.key_rotation_interval_days - elapsed, 3))
    return None


def _dry_run_or(
    outcome: Callable[[bool, Reason, str], Decision],
    policy: RotationSettings,
    reason: Reason,
    message: str,
) -> Decision:
    if policy.dry_run:
        return outcome(False, Reason.DRY_RUN, f"dry run: would rotate ({message})")
    return outcome(True, reason, message)


def _interval_to_enforce(key: KeyConfig, policy: RotationSettings) -> int | None:
    wanted = policy.key_rotation_interval_days
    if wanted is None or policy.dry_run or key.key_rotation_interval_days == wanted:
        return None
    return wanted


def _settles(key: KeyConfig, possible_rotation: datetime) -> bool:
    """Whether this answer, read well after an unconfirmed rotate POST, tells what became of it.

    The POST either shows as a later ``last_key_rotation_at`` (then Cloudflare's record holds the
    gap) or did not happen. A read right after it may lag, so only a later one settles it.
    """
    return (
        key.last_key_rotation_at is not None and key.observed_at - possible_rotation >= POSSIBLE_SETTLED_AFTER
    )


def _predates(key: KeyConfig, confirmed_rotation: datetime | None) -> bool:
    """Whether Cloudflare's answer is older than a rotation known to have happened."""
    if confirmed_rotation is None:
        return False
    return key.last_key_rotation_at is None or key.last_key_rotation_at < confirmed_rotation


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None
