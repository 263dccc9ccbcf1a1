"""Maintenance windows: when a due rotation may happen, and the deadline that overrides them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from rotator.config.model import RotationSettings
from rotator.core.keys import KeyConfig
from rotator.core.policy import Reason, decide
from rotator.core.windows import Window, Windows

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


def openings(cron: str, after: datetime, count: int, timezone: str = "UTC") -> list[str]:
    """The next ``count`` openings after ``after``, in UTC, as 'Sat 2026-11-28 02:00'."""
    windows, found, now = Windows([Window(cron, timedelta(minutes=1), timezone)]), [], after
    for _ in range(count):
        opening = windows.state(now).next_opening
        assert opening is not None
        found.append(opening.strftime("%a %Y-%m-%d %H:%M"))
        now = opening
    return found


# Each row worked out by hand from crontab(5) (and cron(8) for clock changes), starting from
# Friday 2026-11-27 12:00 UTC unless the row says otherwise.
CRONTAB = [
    pytest.param("0 2 * * 0-6", ["Sat 2026-11-28 02:00", "Sun 2026-11-29 02:00"], id="range 0-6: every day"),
    pytest.param(
        "0 2 * * 0-3",
        [
            "Sun 2026-11-29 02:00",
            "Mon 2026-11-30 02:00",
            "Tue 2026-12-01 02:00",
            "Wed 2026-12-02 02:00",
            "Sun 2026-12-06 02:00",
        ],
        id="range 0-3: Sunday to Wednesday",
    ),
    pytest.param(
        "0 2 * * sun-wed",
        [
            "Sun 2026-11-29 02:00",
            "Mon 2026-11-30 02:00",
            "Tue 2026-12-01 02:00",
            "Wed 2026-12-02 02:00",
            "Sun 2026-12-06 02:00",
        ],
        id="a range of names",
    ),
    pytest.param(
        "0 2 * * */2",
        ["Sat 2026-11-28 02:00", "Sun 2026-11-29 02:00", "Tue 2026-12-01 02:00", "Thu 2026-12-03 02:00"],
        id="a weekday step: Sun, Tue, Thu, Sat",
    ),
    pytest.param(
        "0 2 * * 1-5/2",
        ["Mon 2026-11-30 02:00", "Wed 2026-12-02 02:00", "Fri 2026-12-04 02:00"],
        id="a step over a range",
    ),
    pytest.param("0 2 * * 7", ["Sun 2026-11-29 02:00", "Sun 2026-12-06 02:00"], id="7 is Sunday"),
    pytest.param("0 2 * * 0", ["Sun 2026-11-29 02:00"], id="0 is Sunday"),
    pytest.param(
        "0 2 * * 5-7",
        ["Sat 2026-11-28 02:00", "Sun 2026-11-29 02:00", "Fri 2026-12-04 02:00"],
        id="a range ending at 7",
    ),
    pytest.param(
        "0 2 * * mon,WED,Fri",
        ["Mon 2026-11-30 02:00", "Wed 2026-12-02 02:00", "Fri 2026-12-04 02:00"],
        id="a list of names, any case",
    ),
    pytest.param(
        "0 2 1 * mon",
        ["Mon 2026-11-30 02:00", "Tue 2026-12-01 02:00", "Mon 2026-12-07 02:00"],
        id="both day fields restricted: the 1st OR a Monday",
    ),
    pytest.param(
        "0 2 */2 * mon",
        ["Mon 2026-12-07 02:00", "Mon 2026-12-21 02:00"],
        id="a day field starting with *: odd days AND Mondays",
    ),
    pytest.param("0 2 1 * *", ["Tue 2026-12-01 02:00", "Fri 2027-01-01 02:00"], id="day of month"),
    pytest.param(
        "30 4 1 jan,jul *", ["Fri 2027-01-01 04:30", "Thu 2027-07-01 04:30"], id="month names in a list"
    ),
    pytest.param(
        "0 0 1 */4 *",
        ["Fri 2027-01-01 00:00", "Sat 2027-05-01 00:00", "Wed 2027-09-01 00:00"],
        id="a month step: January, May, September",
    ),
    pytest.param("0 0 29 2 *", ["Tue 2028-02-29 00:00", "Sun 2032-02-29 00:00"], id="29 February"),
    pytest.param(
        "*/20 12-13 * * *",
        [
            "Fri 2026-11-27 12:20",
            "Fri 2026-11-27 12:40",
            "Fri 2026-11-27 13:00",
            "Fri 2026-11-27 13:20",
            "Fri 2026-11-27 13:40",
            "Sat 2026-11-28 12:00",
        ],
        id="minute step within an hour range",
    ),
    pytest.param("@weekly", ["Sun 2026-11-29 00:00", "Sun 2026-12-06 00:00"], id="@weekly"),
    pytest.param("@daily", ["Sat 2026-11-28 00:00"], id="@daily"),
    pytest.param("@monthly", ["Tue 2026-12-01 00:00"], id="@monthly"),
]


@pytest.mark.parametrize(("cron", "expected"), CRONTAB)
def test_cron_means_what_crontab_5_says(cron: str, expected: list[str]) -> None:
    assert openings(cron, FRIDAY_NOON, len(expected)) == expected


# Berlin: clocks go forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST, and back on
# 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET. cron(8): a job at a fixed time that the
# change skips runs right after it; one in the repeated hour runs once; a job with '*' in the
# minute or hour field runs by the wall clock, every real hour.
DST = [
    pytest.param(
        "30 2 * * *",
        datetime(2026, 3, 28, 12, 0, tzinfo=UTC),
        ["Sun 2026-03-29 01:00", "Mon 2026-03-30 00:30"],
        id="02:30 does not exist on 29 March: 03:00 CEST, then 02:30 CEST",
    ),
    pytest.param(
        "30 2 * * *",
        datetime(2026, 10, 24, 12, 0, tzinfo=UTC),
        ["Sun 2026-10-25 00:30", "Mon 2026-10-26 01:30"],
        id="02:30 happens twice on 25 October: once, at the first (CEST)",
    ),
    pytest.param(
        "0 * * * *",
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        ["Sun 2026-10-25 01:00", "Sun 2026-10-25 02:00"],
        id="hourly through the fold: 02:00 CET (the repeated hour), then 03:00 CET",
    ),
    pytest.param(
        "0 * * * *",
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        ["Sun 2026-03-29 01:00", "Sun 2026-03-29 02:00"],
        id="hourly through the gap: 03:00 CEST, then 04:00 CEST",
    ),
    pytest.param(
        "0 2 * * sun",
        datetime(2026, 3, 28, 12, 0, tzinfo=UTC),
        ["Sun 2026-03-29 01:00", "Sun 2026-04-05 00:00"],
        id="a Sunday window in the gap, then in summer time",
    ),
]


@pytest.mark.parametrize(("cron", "after", "expected"), DST)
def test_clock_changes_in_the_windows_timezone(cron: str, after: datetime, expected: list[str]) -> None:
    assert openings(cron, after, len(expected), "Europe/Berlin") == expected


def test_the_weekday_is_the_one_in_the_windows_timezone() -> None:
    # Monday 01:00 in Tokyo (UTC+9) is Sunday 16:00 UTC.
    assert openings("0 1 * * mon", FRIDAY_NOON, 1, "Asia/Tokyo") == ["Sun 2026-11-29 16:00"]


@pytest.mark.parametrize(
    ("cron", "field"),
    [
        ("0 2 * *", "expected five fields"),
        ("0 0 2 * * *", "expected five fields"),  # cronsim's seconds field is not crontab
        ("60 2 * * *", "the minute field '60' is not valid: expected 0-59"),
        ("0 24 * * *", "the hour field '24' is not valid: expected 0-23"),
        ("0 2 0 * *", "the day-of-month field '0' is not valid: expected 1-31"),
        ("0 2 * 13 *", "the month field '13' is not valid: expected 1-12 or jan-dec"),
        ("0 2 * * 8", "the day-of-week field '8' is not valid: expected 0-7 (0 and 7 are Sunday)"),
        ("0 2 * * sat-sun", "the day-of-week field 'sat-sun' is not valid"),  # ranges go up
        ("0 2 * * mon#1", "the day-of-week field 'mon#1' is not valid"),  # not crontab(5)
        ("0 2 L * *", "the day-of-month field 'L' is not valid"),  # not crontab(5)
        ("0 2 * jan-mon *", "the month field 'jan-mon' is not valid"),
        ("@reboot", "not a schedule a window can have"),
    ],
)
def test_what_crontab_5_does_not_have_is_refused_in_rotators_words(cron: str, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        Windows([Window(cron, HOUR)])


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
