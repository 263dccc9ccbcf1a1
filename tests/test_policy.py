"""The policy as a table: what was observed, the settings, and the decision a user would see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.cloudflare import KeyConfig
from rotator.config import RotationSettings
from rotator.policy import Reason, decide

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def key(days: float | None, last_days_ago: float | None = 30, interval: float | None = 42) -> KeyConfig:
    last = None if last_days_ago is None else NOW - timedelta(days=last_days_ago)
    return KeyConfig(days, interval, last, observed_at=NOW)


def policy(**changes: object) -> RotationSettings:
    return RotationSettings().model_copy(update=changes)


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
    ],
)
def test_scheduled_decision(
    observed: KeyConfig,
    settings: RotationSettings,
    remembered_days_ago: float | None,
    rotate: bool,
    reason: Reason,
) -> None:
    remembered = None if remembered_days_ago is None else NOW - timedelta(days=remembered_days_ago)
    decision = decide(observed, settings, now=NOW, confirmed_rotation=remembered)
    assert (decision.rotate, decision.reason) == (rotate, reason)
    assert decision.message


def test_too_soon_says_when_the_next_rotation_is_allowed() -> None:
    decision = decide(key(1, last_days_ago=2), policy(), now=NOW)
    allowed = (NOW + timedelta(days=5)).isoformat()
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
    observed: KeyConfig, settings: RotationSettings, force: bool, rotate: bool, reason: Reason
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
    cloudflare_interval: float, settings: RotationSettings, expected: int | None
) -> None:
    decision = decide(key(10, interval=cloudflare_interval), settings, now=NOW)
    assert decision.set_interval == expected


def test_a_stale_answer_is_judged_from_the_rotation_rotator_made() -> None:
    # Cloudflare still reports the key rotated 40 days ago and due; rotator rotated it 13 days ago.
    stale = key(2, last_days_ago=40, interval=30)
    ours = NOW - timedelta(days=13)
    decision = decide(stale, policy(), now=NOW, confirmed_rotation=ours)
    assert (decision.rotate, decision.reason) == (False, Reason.NOT_DUE)
    assert decision.days_until_next_rotation == 17
    assert "predates the rotation rotator made" in decision.message


def test_a_possible_rotation_holds_the_gap_until_a_later_read_settles_it() -> None:
    # A rotate POST whose answer was lost, and whose re-read failed, 5 minutes ago: it may have
    # happened, and a read this soon may lag, so the gap holds.
    answer = key(2, last_days_ago=40, interval=30)
    soon = decide(answer, policy(), now=NOW, possible_rotation=NOW - timedelta(minutes=5))
    assert (soon.rotate, soon.reason) == (False, Reason.TOO_SOON)
    # An hour later Cloudflare still shows the old key: the POST never happened. Rotate.
    later = decide(answer, policy(), now=NOW, possible_rotation=NOW - timedelta(hours=1))
    assert (later.rotate, later.reason) == (True, Reason.DUE)


def test_a_possible_rotation_is_not_settled_by_an_answer_without_a_last_rotation() -> None:
    answer = key(2, last_days_ago=None, interval=30)
    decision = decide(answer, policy(), now=NOW, possible_rotation=NOW - timedelta(hours=1))
    assert decision.reason is Reason.TOO_SOON
