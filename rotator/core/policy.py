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

from rotator.core.keys import KeyConfig, days_until_rotation
from rotator.core.records import AccountRecord, iso, latest
from rotator.core.windows import Windows, WindowState

DAY = timedelta(days=1)
NOTHING_RECORDED = AccountRecord()


@dataclass(frozen=True)
class PolicySettings:
    """The policy's knobs for one account, as plain values (the config builds them)."""

    threshold_days: float = 3.0
    min_days_between_rotations: float = 7.0
    key_rotation_interval_days: int | None = None  # enforced with PUT when set
    dry_run: bool = False


class Reason(StrEnum):
    DUE = "due"  # days_until_next_rotation reached the threshold: rotate
    REQUESTED = "requested"  # a person asked (rotator rotate): rotate if the gap allows
    FORCED = "forced"  # a person asked with --force: rotate whatever the gap
    NOT_DUE = "not_due"
    TOO_SOON = "too_soon"  # the previous key may still sign tokens in flight
    DRY_RUN = "dry_run"
    UNKNOWN = "unknown"  # Cloudflare did not say enough to judge
    # A rotation that may have happened is not settled yet (rotator.ledger.ledger): it holds the gap.
    UNSETTLED = "unsettled"
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
    policy: PolicySettings,
    *,
    now: datetime,
    record: AccountRecord = NOTHING_RECORDED,
    requested: bool = False,
    force: bool = False,
    windows: Windows | None = None,
    check_period: timedelta = timedelta(0),
) -> Decision:
    """Decide whether to rotate an account's key now.

    ``record`` is the ledger's record of the account. Its anchor (the latest rotation known to have
    happened: one rotator saw applied, or the latest Cloudflare ever showed) holds the minimum gap,
    and an answer older than it is stale, so the days left are judged from the anchor instead. A
    rotation still open in the ledger (it may have happened) holds the gap until a read settles it.
    ``check_period`` is the longest time until the next check (interval plus jitter): with
    maintenance windows, it tells whether this check is the last one before Cloudflare would rotate
    on its own. A person asking (``requested``, ``force``) picks the moment, so windows do not apply
    to them; only ``force`` overrides the gap, an open rotation included.
    """
    anchor = record.anchor
    stale = key.predates(anchor)
    seen = key.as_of(anchor)
    days = days_until_rotation(seen, now)
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
                    f" (Cloudflare's answer predates the rotation at {iso(anchor)}: judged from that one)"
                    if stale
                    else ""
                ),
            )
    if (open_rotation := record.open) is not None:
        return outcome(
            False,
            Reason.UNSETTLED,
            f"a rotation begun at {iso(open_rotation.intended_at)} may have been applied and is "
            f"{open_rotation.state.value}: it holds the gap until a read of Cloudflare settles it",
        )
    last = latest(seen.last_key_rotation_at, anchor)
    min_gap = policy.min_days_between_rotations * DAY
    if last is not None and now - last < min_gap:
        return outcome(
            False,
            Reason.TOO_SOON,
            f"the last rotation was at {iso(last)}, less than "
            f"{policy.min_days_between_rotations:g} days ago; the previous key may still sign "
            f"tokens in flight, so the next rotation waits until {iso(last + min_gap)}",
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
                f"maintenance window that opens at {iso(opening)}",
            )
        if now + check_period < cloudflare_rotates_at:
            return outcome(
                False,
                Reason.OUTSIDE_WINDOW,
                f"due, and no maintenance window opens before Cloudflare rotates on its own at "
                f"{iso(cloudflare_rotates_at)}: rotating at the last check before then",
            )
        return _dry_run_or(
            outcome,
            policy,
            Reason.WINDOW_DEADLINE,
            f"no maintenance window opens before Cloudflare rotates on its own at "
            f"{iso(cloudflare_rotates_at)}, and this is the last check before then: "
            "rotating now rather than letting Cloudflare pick the moment",
        )
    return _dry_run_or(
        outcome,
        policy,
        Reason.DUE,
        f"{days:g} days until Cloudflare rotates on its own, at or below the threshold of "
        f"{policy.threshold_days:g}",
    )


class Why(StrEnum):
    """Why an account is checked next when it is (``next_check``)."""

    THRESHOLD = "threshold"  # the days left reach the threshold
    GAP_ENDS = "gap_ends"  # the minimum gap since the last rotation ends
    WINDOW_OPENS = "window_opens"  # a maintenance window opens
    WINDOW_DEADLINE = "window_deadline"  # the last check before Cloudflare rotates on its own
    CLOUDFLARE_DEADLINE = "cloudflare_deadline"  # Cloudflare rotates on its own
    SETTLE = "settle"  # an unconfirmed rotation settles as not applied, unless a read shows it
    CHECK_INTERVAL = "check_interval"  # anything may change at any read: checked at the interval


@dataclass(frozen=True)
class NextCheck:
    """The earliest moment (Cloudflare's clock) a decision could change, and what changes then.

    ``regular``: the decision may change at any read (a rotation to confirm, an unknown or
    unsettled state), so the account is checked at ``check_interval`` too, whichever is sooner.
    ``at`` None: nothing known, only ``regular`` applies.
    """

    at: datetime | None
    why: Why
    regular: bool = False


def next_check(
    decision: Decision,
    key: KeyConfig,
    policy: PolicySettings,
    *,
    now: datetime,
    record: AccountRecord = NOTHING_RECORDED,
    check_period: timedelta = timedelta(0),
    settle_time: timedelta = timedelta(hours=1),
) -> NextCheck:
    """When ``decide``'s answer for this account could next be different, from the same rules.

    ``decision`` is what ``decide`` said at ``now`` from ``key``, ``record`` and ``check_period``.
    Each reason that holds a rotation back ends at a moment ``decide`` itself names: the
    threshold crossing (not due), the gap's end (too soon), a window's opening or the last check
    before Cloudflare's deadline (outside a window), Cloudflare's own rotation (dry run). Nothing
    is later than Cloudflare's deadline, after which its answer changes on its own. Pure: the
    caller bounds the answer by ``schedule.max_check_interval``, adds jitter and maps it onto
    the local clock (rotator.core.schedule).
    """
    days = decision.days_until_next_rotation
    deadline = now + days * DAY if days is not None else None

    def at(moment: datetime | None, why: Why) -> NextCheck:
        if deadline is not None and (moment is None or deadline < moment):
            return NextCheck(deadline, Why.CLOUDFLARE_DEADLINE)
        return NextCheck(moment, why, regular=moment is None)

    reason = decision.reason
    if decision.rotate or reason in (Reason.UNKNOWN, Reason.FORCED, Reason.REQUESTED):
        return NextCheck(None, Why.CHECK_INTERVAL, regular=True)  # a read confirms, or tells
    if reason is Reason.UNSETTLED:
        open_rotation = record.open
        since = open_rotation.unknown_since if open_rotation is not None else None
        settles = since + settle_time if since is not None else None
        return NextCheck(settles, Why.SETTLE if settles else Why.CHECK_INTERVAL, regular=True)
    assert days is not None  # only UNKNOWN (and requests) lack them
    assert deadline is not None
    if reason is Reason.NOT_DUE:
        return at(deadline - policy.threshold_days * DAY, Why.THRESHOLD)
    if reason is Reason.TOO_SOON:
        seen = key.as_of(record.anchor)
        last = latest(seen.last_key_rotation_at, record.anchor)
        assert last is not None  # TOO_SOON names it
        return at(last + policy.min_days_between_rotations * DAY, Why.GAP_ENDS)
    if reason is Reason.OUTSIDE_WINDOW:
        window = decision.window
        opening = window.next_opening if window is not None else None
        if opening is not None and opening + check_period < deadline:
            return at(opening, Why.WINDOW_OPENS)
        return at(deadline - check_period, Why.WINDOW_DEADLINE)
    # DRY_RUN: a dry run would rotate at every check until Cloudflare does.
    return at(deadline, Why.CLOUDFLARE_DEADLINE)


def _dry_run_or(
    outcome: Callable[[bool, Reason, str], Decision],
    policy: PolicySettings,
    reason: Reason,
    message: str,
) -> Decision:
    if policy.dry_run:
        return outcome(False, Reason.DRY_RUN, f"dry run: would rotate ({message})")
    return outcome(True, reason, message)


def _interval_to_enforce(key: KeyConfig, policy: PolicySettings) -> int | None:
    wanted = policy.key_rotation_interval_days
    if wanted is None or policy.dry_run or key.key_rotation_interval_days == wanted:
        return None
    return wanted
