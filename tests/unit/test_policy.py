"""The policy as a table: what was observed, the settings, and the decision a user would see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.core.keys import KeyConfig
from rotator.core.policy import PolicySettings, Reason, decide
from rotator.ledger.ledger import AccountRecord, Rotation, State

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def key(days: float | None, last_days_ago: float | None = 30, interval: float | None = 42) -> KeyConfig:
    last = None if last_days_ago is None else NOW - timedelta(days=last_days_ago)
    return KeyConfig(days, interval, last, observed_at=NOW)


def policy(**changes: object) -> PolicySettings:
    return PolicySettings(**changes)  # type: ignore[arg-type]


def done(days_ago: float) -> AccountRecord:
    """The ledger's record of a rotation rotator saw applied ``days_ago``."""
    return AccountRecord(last_done=NOW - timedelta(days=days_ago))


def open_rotation(state: State, minutes_ago: float = 5) -> AccountRecord:
    at = NOW - timedelta(minutes=minutes_ago)
    rotation = Rotation("r1", state, at, NOW - timedelta(days=40), owner="host:1")
    return AccountRecord(rotation=rotation)


@pytest.mark.parametrize(
    ("observed", "settings", "remembered_days_ago", "rotate", "reason"),
    [
        pytest.param(key(10), policy(), None, False, Reason.NOT_DUE, id="far from due"),
        pytest.param(key(3.001), policy(), None, False, Reason.NOT_DUE, id="just above threshold"),
        pytest.param(key(3), policy(), None, True, Reason.DUE, id="at threshold"),
        pytest.param(key(0), policy(), None, True, Reason.DUE, id="overdue"),
        pytest.param(key(5), policy(threshold_days=5), None, True, Reason.DUE, id="threshold override"),
        pytest.param(
            key(2, last_days_ago=6),
            policy(),
            None,
            False,
            Reason.TOO_SOON,
            id="cloudflare rotated 6 days ago",
        ),
        pytest.param(key(2, last_days_ago=7), policy(), None, True, Reason.DUE, id="exactly the minimum gap"),
        pytest.param(key(2), policy(), 1, False, Reason.NOT_DUE, id="stale read after our own rotation"),
        pytest.param(key(2), policy(), 8, False, Reason.NOT_DUE, id="stale read 8 days after ours"),
        pytest.param(
            key(2, last_days_ago=8), policy(), 8, True, Reason.DUE, id="ours, and cloudflare agrees"
        ),
        pytest.param(
            key(2, last_days_ago=3),
            policy(min_days_between_rotations=2),
            None,
            True,
            Reason.DUE,
            id="shorter gap configured",
        ),
        pytest.param(key(2), policy(dry_run=True), None, False, Reason.DRY_RUN, id="dry run"),
        pytest.param(key(10), policy(dry_run=True), None, False, Reason.NOT_DUE, id="dry run not due"),
        pytest.param(
            key(2, last_days_ago=1), policy(dry_run=True), None, False, Reason.TOO_SOON, id="dry run too soon"
        ),
        pytest.param(
            key(None), policy(), None, False, Reason.NOT_DUE, id="days derived from last and interval"
        ),
        pytest.param(key(None, last_days_ago=40), policy(), None, True, Reason.DUE, id="derived days due"),
        pytest.param(
            key(None, last_days_ago=None), policy(), None, False, Reason.UNKNOWN, id="nothing to judge by"
        ),
        pytest.param(
            key(2, last_days_ago=None), policy(), None, True, Reason.DUE, id="no last rotation known"
        ),
        # Sparse answers (every field is optional), beside a rotation the ledger knows: the fields
        # present are used; the gap holds from the known rotation whatever the read says.
        pytest.param(
            key(2, last_days_ago=None, interval=None), policy(), 40, True, Reason.DUE, id="days only, due"
        ),
        pytest.param(
            key(39, last_days_ago=None, interval=None), policy(), 3, False, Reason.NOT_DUE, id="days only"
        ),
        pytest.param(
            key(2, last_days_ago=None, interval=None),
            policy(),
            3,
            False,
            Reason.TOO_SOON,
            id="days only, stale, within the gap",
        ),
        pytest.param(
            key(None, last_days_ago=None), policy(), 40, True, Reason.DUE, id="interval only: from ours, due"
        ),
        pytest.param(
            key(None, last_days_ago=None), policy(), 3, False, Reason.NOT_DUE, id="interval only: from ours"
        ),
        pytest.param(
            key(2, last_days_ago=None), policy(), 1, False, Reason.NOT_DUE, id="no last, stale: from ours"
        ),
    ],
)
def test_scheduled_decision(
    observed: KeyConfig,
    settings: PolicySettings,
    remembered_days_ago: float | None,
    rotate: bool,
    reason: Reason,
) -> None:
    record = AccountRecord() if remembered_days_ago is None else done(remembered_days_ago)
    decision = decide(observed, settings, now=NOW, record=record)
    assert (decision.rotate, decision.reason) == (rotate, reason)
    assert decision.message


def test_too_soon_says_when_the_next_rotation_is_allowed() -> None:
    decision = decide(key(1, last_days_ago=2), policy(), now=NOW)
    allowed = (NOW + timedelta(days=5)).isoformat().replace("+00:00", "Z")
    assert allowed in decision.message


@pytest.mark.parametrize(
    ("observed", "settings", "force", "rotate", "reason"),
    [
        pytest.param(key(30), policy(), False, True, Reason.REQUESTED, id="requested, not due"),
        pytest.param(
            key(30, last_days_ago=1), policy(), False, False, Reason.TOO_SOON, id="requested within gap"
        ),
        pytest.param(key(30, last_days_ago=1), policy(), True, True, Reason.FORCED, id="forced within gap"),
        pytest.param(key(30), policy(dry_run=True), True, False, Reason.DRY_RUN, id="forced in dry run"),
    ],
)
def test_requested_decision(
    observed: KeyConfig, settings: PolicySettings, force: bool, rotate: bool, reason: Reason
) -> None:
    decision = decide(observed, settings, now=NOW, requested=True, force=force)
    assert (decision.rotate, decision.reason) == (rotate, reason)


@pytest.mark.parametrize(
    ("cloudflare_interval", "settings", "expected"),
    [
        pytest.param(42, policy(), None, id="not enforced"),
        pytest.param(42, policy(key_rotation_interval_days=30), 30, id="differs"),
        pytest.param(30, policy(key_rotation_interval_days=30), None, id="already right"),
        pytest.param(42, policy(key_rotation_interval_days=30, dry_run=True), None, id="never in dry run"),
    ],
)
def test_interval_enforcement(
    cloudflare_interval: float, settings: PolicySettings, expected: int | None
) -> None:
    decision = decide(key(10, interval=cloudflare_interval), settings, now=NOW)
    assert decision.set_interval == expected


def test_a_stale_answer_is_judged_from_the_rotation_rotator_made() -> None:
    # Cloudflare still reports the key rotated 40 days ago and due; rotator rotated it 13 days ago.
    stale = key(2, last_days_ago=40, interval=30)
    decision = decide(stale, policy(), now=NOW, record=done(13))
    assert (decision.rotate, decision.reason) == (False, Reason.NOT_DUE)
    assert decision.days_until_next_rotation == 17
    assert "predates the rotation at" in decision.message


def test_a_read_that_went_backwards_is_judged_from_the_latest_one_seen() -> None:
    # A replica answers with a rotation from 40 days ago; Cloudflare had shown one 2 days ago.
    backwards = key(2, last_days_ago=40, interval=30)
    seen = AccountRecord(observed=NOW - timedelta(days=2))
    decision = decide(backwards, policy(), now=NOW, record=seen)
    assert (decision.rotate, decision.reason) == (False, Reason.NOT_DUE)
    assert decision.days_until_next_rotation == 28
    requested = decide(backwards, policy(), now=NOW, record=seen, requested=True)
    assert requested.reason is Reason.TOO_SOON


@pytest.mark.parametrize("state", [State.INTENT, State.SENT, State.UNCONFIRMED])
@pytest.mark.parametrize("minutes_ago", [5, 60 * 24 * 30])
def test_an_open_rotation_holds_the_gap_however_old(state: State, minutes_ago: float) -> None:
    # It may have happened; only a read settles it (rotator.ledger.ledger), never the passing of time here.
    answer = key(2, last_days_ago=40, interval=30)
    decision = decide(answer, policy(), now=NOW, record=open_rotation(state, minutes_ago))
    assert (decision.rotate, decision.reason) == (False, Reason.UNSETTLED)
    assert state.value in decision.message
    requested = decide(answer, policy(), now=NOW, record=open_rotation(state), requested=True)
    assert (requested.rotate, requested.reason) == (False, Reason.UNSETTLED)
    forced = decide(answer, policy(), now=NOW, record=open_rotation(state), requested=True, force=True)
    assert (forced.rotate, forced.reason) == (True, Reason.FORCED)


@pytest.mark.parametrize("state", [State.DONE, State.NOT_APPLIED])
def test_a_settled_rotation_holds_nothing_of_its_own(state: State) -> None:
    answer = key(2, last_days_ago=40, interval=30)
    settled = AccountRecord(rotation=Rotation("r1", state, NOW - timedelta(days=9), None, owner="host:1"))
    decision = decide(answer, policy(), now=NOW, record=settled)
    assert (decision.rotate, decision.reason) == (True, Reason.DUE)
