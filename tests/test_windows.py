"""Maintenance windows: when a due rotation may happen, and the deadline that overrides them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.config import RotationSettings
from rotator.keys import KeyConfig
from rotator.policy import Reason, decide
from rotator.windows import Window, Windows

# Tuesday 2026-12-01 02:00 Europe/Berlin is 01:00 UTC.
BERLIN_TUE_WED_2AM = Window("0 2 * * tue,wed", timedelta(hours=2), "Europe/Berlin")
FRIDAY_NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_window_opens_on_its_cron_in_its_timezone() -> None:
    state = Windows([BERLIN_TUE_WED_2AM]).state(FRIDAY_NOON)
    assert state.open_until is None
    assert state.next_opening == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "open_until"),
    [
        (datetime(2026, 12, 1, 1, 0, tzinfo=UTC), datetime(2026, 12, 1, 3, 0, tzinfo=UTC)),
        (datetime(2026, 12, 1, 2, 59, tzinfo=UTC), datetime(2026, 12, 1, 3, 0, tzinfo=UTC)),
        (datetime(2026, 12, 1, 3, 0, tzinfo=UTC), None),
        (datetime(2026, 12, 1, 0, 59, tzinfo=UTC), None),
    ],
)
def test_window_is_open_for_its_duration(now: datetime, open_until: datetime | None) -> None:
    assert Windows([BERLIN_TUE_WED_2AM]).state(now).open_until == open_until


def test_while_open_the_next_opening_is_the_one_after() -> None:
    state = Windows([BERLIN_TUE_WED_2AM]).state(datetime(2026, 12, 1, 1, 30, tzinfo=UTC))
    assert state.next_opening == datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def due(days: float, now: datetime) -> KeyConfig:
    return KeyConfig(days, 42, now - timedelta(days=40), observed_at=now)


WINDOWS = Windows([BERLIN_TUE_WED_2AM])
POLICY = RotationSettings()


@pytest.mark.parametrize(
    ("now", "days", "rotate", "reason"),
    [
        pytest.param(FRIDAY_NOON, 10, False, Reason.NOT_DUE, id="not due: windows do not matter"),
        pytest.param(FRIDAY_NOON, 3, False, Reason.OUTSIDE_WINDOW, id="due, a window opens in time"),
        pytest.param(datetime(2026, 12, 1, 1, 30, tzinfo=UTC), 3, True, Reason.DUE, id="due inside a window"),
        pytest.param(
            FRIDAY_NOON, 1.5, False, Reason.OUTSIDE_WINDOW, id="no window in time, not the last check"
        ),
        pytest.param(FRIDAY_NOON, 0.5, True, Reason.WINDOW_DEADLINE, id="no window in time, last check"),
    ],
)
def test_due_rotation_waits_for_a_window_but_not_past_cloudflare(
    now: datetime, days: float, rotate: bool, reason: Reason
) -> None:
    decision = decide(due(days, now), POLICY, now=now, windows=WINDOWS, check_period=12 * HOUR)
    assert (decision.rotate, decision.reason) == (rotate, reason)


def test_the_deadline_message_says_why() -> None:
    decision = decide(due(0.5, FRIDAY_NOON), POLICY, now=FRIDAY_NOON, windows=WINDOWS, check_period=12 * HOUR)
    assert "no maintenance window opens before Cloudflare rotates on its own" in decision.message


def test_a_window_opening_too_close_to_cloudflares_rotation_does_not_count() -> None:
    # Opens Tuesday 01:00 UTC; Cloudflare rotates 30 minutes later; a check may come an hour late.
    now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    decision = decide(due(1 / 24, now), POLICY, now=now, windows=WINDOWS, check_period=HOUR)
    assert decision.reason is Reason.WINDOW_DEADLINE


def test_a_person_asking_is_not_held_by_windows() -> None:
    decision = decide(due(10, FRIDAY_NOON), POLICY, now=FRIDAY_NOON, windows=WINDOWS, requested=True)
    assert decision.rotate


def test_dry_run_at_the_deadline_changes_nothing() -> None:
    policy = RotationSettings(dry_run=True)
    decision = decide(due(0.5, FRIDAY_NOON), policy, now=FRIDAY_NOON, windows=WINDOWS, check_period=12 * HOUR)
    assert (decision.rotate, decision.reason) == (False, Reason.DRY_RUN)


@pytest.mark.parametrize(
    ("cron", "weekday"),
    [
        ("0 2 * * 0", "Sunday"),
        ("0 2 * * 7", "Sunday"),
        ("0 2 * * 2", "Tuesday"),
        ("0 2 * * sun", "Sunday"),
        ("0 2 * * 1-5", "Monday"),  # the first weekday after Friday noon
    ],
)
def test_weekday_numbers_mean_what_crontab_says(cron: str, weekday: str) -> None:
    opening = Windows([Window(cron, HOUR)]).state(FRIDAY_NOON).next_opening
    assert opening is not None
    assert opening.strftime("%A") == weekday
