"""The policy as a table: what was observed, the settings, and the decision a user would see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.core.keys import KeyConfig
from rotator.core.policy import Decision, NextCheck, PolicySettings, Reason, Why, decide, next_check
from rotator.core.records import AccountRecord, Rotation, State
from rotator.core.windows import Window, Windows

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


# Each case: what was observed, the settings, the ledger's rotation (days ago), the decision, and
# when that decision could next change (next_check: why, and in how many days; None: at the next
# check_interval, a read may change it). One table for both: they follow the same rules.
SCHEDULED = [
    pytest.param(key(10), policy(), None, False, Reason.NOT_DUE, Why.THRESHOLD, 7, id="far from due"),
    pytest.param(
        key(3.001), policy(), None, False, Reason.NOT_DUE, Why.THRESHOLD, 0.001, id="just above threshold"
    ),
    pytest.param(key(3), policy(), None, True, Reason.DUE, Why.CHECK_INTERVAL, None, id="at threshold"),
    pytest.param(key(0), policy(), None, True, Reason.DUE, Why.CHECK_INTERVAL, None, id="overdue"),
    pytest.param(
        key(5),
        policy(threshold_days=5),
        None,
        True,
        Reason.DUE,
        Why.CHECK_INTERVAL,
        None,
        id="threshold override",
    ),
    pytest.param(
        key(2, last_days_ago=6),
        policy(),
        None,
        False,
        Reason.TOO_SOON,
        Why.GAP_ENDS,
        1,
        id="cloudflare rotated 6 days ago",
    ),
    pytest.param(
        key(2, last_days_ago=7),
        policy(),
        None,
        True,
        Reason.DUE,
        Why.CHECK_INTERVAL,
        None,
        id="exactly the minimum gap",
    ),
    pytest.param(
        key(2), policy(), 1, False, Reason.NOT_DUE, Why.THRESHOLD, 38, id="stale read after our own rotation"
    ),
    pytest.param(
        key(2), policy(), 8, False, Reason.NOT_DUE, Why.THRESHOLD, 31, id="stale read 8 days after ours"
    ),
    pytest.param(
        key(2, last_days_ago=8),
        policy(),
        8,
        True,
        Reason.DUE,
        Why.CHECK_INTERVAL,
        None,
        id="ours, and cloudflare agrees",
    ),
    pytest.param(
        key(2, last_days_ago=3),
        policy(min_days_between_rotations=2),
        None,
        True,
        Reason.DUE,
        Why.CHECK_INTERVAL,
        None,
        id="shorter gap configured",
    ),
    pytest.param(
        key(2), policy(dry_run=True), None, False, Reason.DRY_RUN, Why.CLOUDFLARE_DEADLINE, 2, id="dry run"
    ),
    pytest.param(
        key(10), policy(dry_run=True), None, False, Reason.NOT_DUE, Why.THRESHOLD, 7, id="dry run not due"
    ),
    pytest.param(
        key(2, last_days_ago=1),
        policy(dry_run=True),
        None,
        False,
        Reason.TOO_SOON,
        Why.CLOUDFLARE_DEADLINE,
        2,
        id="dry run too soon",
    ),
    pytest.param(
        key(2, last_days_ago=1),
        policy(),
        None,
        False,
        Reason.TOO_SOON,
        Why.CLOUDFLARE_DEADLINE,
        2,
        id="cloudflare rotates before the gap ends",
    ),
    pytest.param(
        key(None),
        policy(),
        None,
        False,
        Reason.NOT_DUE,
        Why.THRESHOLD,
        9,
        id="days derived from last and interval",
    ),
    pytest.param(
        key(None, last_days_ago=40),
        policy(),
        None,
        True,
        Reason.DUE,
        Why.CHECK_INTERVAL,
        None,
        id="derived days due",
    ),
    pytest.param(
        key(None, last_days_ago=None),
        policy(),
        None,
        False,
        Reason.UNKNOWN,
        Why.CHECK_INTERVAL,
        None,
        id="nothing to judge by",
    ),
    pytest.param(
        key(2, last_days_ago=None),
        policy(),
        None,
        True,
        Reason.DUE,
        Why.CHECK_INTERVAL,
        None,
        id="no last rotation known",
    ),
]
_COLUMNS = ("observed", "settings", "remembered_days_ago", "rotate", "reason", "why", "next_in_days")


@pytest.mark.parametrize(_COLUMNS, SCHEDULED)
def test_scheduled_decision(
    observed: KeyConfig,
    settings: PolicySettings,
    remembered_days_ago: float | None,
    rotate: bool,
    reason: Reason,
    why: Why,
    next_in_days: float | None,
) -> None:
    record = AccountRecord() if remembered_days_ago is None else done(remembered_days_ago)
    decision = decide(observed, settings, now=NOW, record=record)
    assert (decision.rotate, decision.reason) == (rotate, reason)
    assert decision.message


@pytest.mark.parametrize(
    ("observed", "settings", "remembered_days_ago", "rotate", "reason"),
    [
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
def test_a_sparse_answer_is_judged_by_the_fields_present(
    observed: KeyConfig,
    settings: PolicySettings,
    remembered_days_ago: float | None,
    rotate: bool,
    reason: Reason,
) -> None:
    record = AccountRecord() if remembered_days_ago is None else done(remembered_days_ago)
    decision = decide(observed, settings, now=NOW, record=record)
    assert (decision.rotate, decision.reason) == (rotate, reason)


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


@pytest.mark.parametrize(_COLUMNS, SCHEDULED)
def test_next_check_is_the_moment_the_decision_changes(
    observed: KeyConfig,
    settings: PolicySettings,
    remembered_days_ago: float | None,
    rotate: bool,
    reason: Reason,
    why: Why,
    next_in_days: float | None,
) -> None:
    record = AccountRecord() if remembered_days_ago is None else done(remembered_days_ago)
    decision = decide(observed, settings, now=NOW, record=record)
    plan = next_check(decision, observed, settings, now=NOW, record=record)
    expected_at = None if next_in_days is None else NOW + timedelta(days=next_in_days)
    assert (plan.why, plan.at, plan.regular) == (why, expected_at, next_in_days is None)
    _changes_there(plan, observed, settings, record, decision)


def _changes_there(
    plan: NextCheck,
    observed: KeyConfig,
    settings: PolicySettings,
    record: AccountRecord,
    decision: Decision,
    windows: Windows | None = None,
    check_period: timedelta = timedelta(0),
) -> None:
    """A check just before the planned moment (the same answer from Cloudflare) decides the same;
    one just after decides differently, unless what changes then is Cloudflare's own rotation."""
    if plan.at is None:
        return

    def at(moment: datetime) -> Reason:
        later = decide(
            observed, settings, now=moment, record=record, windows=windows, check_period=check_period
        )
        return later.reason

    assert at(plan.at - timedelta(minutes=1)) is decision.reason
    if plan.why is not Why.CLOUDFLARE_DEADLINE:
        assert at(plan.at + timedelta(minutes=1)) is not decision.reason


DAILY_AT_2 = Windows([Window("0 2 * * *", timedelta(hours=2))])
MONDAYS_AT_2 = Windows([Window("0 2 * * mon", timedelta(hours=2))])  # NOW is a Friday
OPEN_NOW = Windows([Window("0 11 * * *", timedelta(hours=2))])


@pytest.mark.parametrize(
    ("observed", "windows", "reason", "why", "next_at"),
    [
        pytest.param(
            key(10), DAILY_AT_2, Reason.NOT_DUE, Why.THRESHOLD, NOW + timedelta(days=7), id="not due"
        ),
        pytest.param(
            key(2),
            DAILY_AT_2,
            Reason.OUTSIDE_WINDOW,
            Why.WINDOW_OPENS,
            NOW + timedelta(hours=14),
            id="due, a window opens tonight",
        ),
        pytest.param(
            key(2),
            MONDAYS_AT_2,
            Reason.OUTSIDE_WINDOW,
            Why.WINDOW_DEADLINE,
            NOW + timedelta(days=2, hours=-1),
            id="due, no window before cloudflare's deadline",
        ),
        pytest.param(key(2), OPEN_NOW, Reason.DUE, Why.CHECK_INTERVAL, None, id="due, window open"),
    ],
)
def test_next_check_with_windows(
    observed: KeyConfig, windows: Windows, reason: Reason, why: Why, next_at: datetime | None
) -> None:
    period = timedelta(hours=1)
    decision = decide(observed, policy(), now=NOW, windows=windows, check_period=period)
    plan = next_check(decision, observed, policy(), now=NOW, check_period=period)
    assert (decision.reason, plan.why, plan.at) == (reason, why, next_at)
    _changes_there(plan, observed, policy(), AccountRecord(), decision, windows, period)


def test_an_unconfirmed_rotation_is_checked_at_its_settle_deadline_or_sooner() -> None:
    since = NOW - timedelta(minutes=10)
    rotation = Rotation(
        "r1", State.UNCONFIRMED, since, NOW - timedelta(days=40), "host:1", unknown_since=since
    )
    record = AccountRecord(rotation=rotation)
    answer = key(2, last_days_ago=40, interval=30)
    decision = decide(answer, policy(), now=NOW, record=record)
    plan = next_check(decision, answer, policy(), now=NOW, record=record, settle_time=timedelta(hours=1))
    assert (plan.why, plan.at, plan.regular) == (Why.SETTLE, NOW + timedelta(minutes=50), True)
    unsent = open_rotation(State.INTENT)
    decision = decide(answer, policy(), now=NOW, record=unsent)
    plan = next_check(decision, answer, policy(), now=NOW, record=unsent)
    assert (plan.why, plan.at, plan.regular) == (Why.CHECK_INTERVAL, None, True)
