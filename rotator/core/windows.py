"""Maintenance windows: when a due rotation may happen. Pure: every answer is for a given ``now``.

A window's ``cron`` is a crontab(5) schedule, read as Debian's cron reads it. cronsim evaluates it
(it follows Debian's cron, quirks included); this module only refuses what crontab(5) does not have
and says every refusal in rotator's words. What that means for a user:

- five fields, ``minute hour day-of-month month day-of-week``; ``*``, numbers, ranges (``1-5``), lists
  (``1,3``) and steps (``*/2``, ``1-5/2``) in any field; month and weekday names (``jan``, ``sun``,
  any case), in ranges too (``sun-wed``); ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``,
  ``@daily``, ``@midnight`` and ``@hourly``;
- weekdays count from Sunday: 0 and 7 are both Sunday, so ``*/2`` is Sunday, Tuesday, Thursday and
  Saturday;
- when both day fields are restricted (neither starts with ``*``), a day matches if *either* does:
  ``0 2 1 * mon`` is the 1st of the month and every Monday;
- times are read in the window's timezone. A time skipped when clocks go forward opens right after
  the change; a time repeated when they go back opens once. A ``*`` in the minute or hour field
  follows the wall clock instead: every real hour, the repeated one included.

cronsim's own extensions (``L``, ``W``, ``#``, a sixth field for seconds) are refused, so a window
means the same to rotator as the line would to cron.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

# crontab(5): "Instead of the first five fields, one of eight special strings may appear".
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or sun-sat"),
)
# One list item: *, a number or a three-letter name, or a range of them, with an optional step.
_ITEM = r"(?:\*|[0-9]+|[a-z]{3})(?:-(?:[0-9]+|[a-z]{3}))?(?:/[0-9]+)?"
_FIELD = re.compile(rf"{_ITEM}(?:,{_ITEM})*", re.IGNORECASE)
# cronsim names the field it refuses in these words.
_CRONSIM_FIELD = {"minute": 0, "hour": 1, "day-of-month": 2, "month": 3, "day-of-week": 4}
# Any start will do to check that cronsim can read an expression.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """Opens at every time ``cron`` matches (in ``timezone``) and stays open for ``duration``."""

    cron: str
    duration: timedelta
    timezone: str = "UTC"

    def expression(self) -> str:
        """The cron as five fields; ValueError, in the user's terms, when it is not crontab(5)."""
        return crontab(self.cron)


def crontab(cron: str) -> str:
    """``cron`` as the five fields cronsim reads; ValueError saying what is wrong with it."""
    text = _MACROS.get(cron.strip().lower(), cron)
    if text.strip().startswith("@"):
        raise ValueError(
            f"'{cron.strip()}' is not a schedule a window can have: expected five fields or one of "
            f"{', '.join(_MACROS)}"
        )
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"{len(fields)} field{'s' if len(fields) != 1 else ''}: expected five fields "
            "(minute hour day month weekday), such as '0 2 * * tue,wed'"
        )
    for index, value in enumerate(fields):
        if not _FIELD.fullmatch(value):
            raise ValueError(_bad_field(index, value))
    expression = " ".join(fields)
    try:
        CronSim(expression, _EPOCH)
    except CronSimError as exc:
        bad = next((i for name, i in _CRONSIM_FIELD.items() if str(exc).endswith(name)), None)
        if bad == 2 and _valid_in_some_month(fields):
            return expression  # a real day, in months that never have it: never_opens says so
        if bad is None:
            raise ValueError("expected five fields (minute hour day month weekday)") from None
        raise ValueError(_bad_field(bad, fields[bad])) from None
    return expression


def _bad_field(index: int, value: str) -> str:
    name, allowed = _FIELDS[index]
    return (
        f"the {name} field '{value}' is not valid: expected {allowed}, with '*', ranges from low "
        "to high (1-5), lists (1,3) and steps (*/2)"
    )


def _valid_in_some_month(fields: list[str]) -> bool:
    try:
        CronSim(" ".join([*fields[:3], "*", fields[4]]), _EPOCH)
    except CronSimError:
        return False
    return True


@dataclass(frozen=True)
class WindowState:
    open_until: datetime | None  # set when a window is open at ``now``
    next_opening: datetime | None  # the next time a window opens after ``now`` (None: never)


class Windows:
    def __init__(self, windows: Sequence[Window]) -> None:
        self._windows = [(w, w.expression(), ZoneInfo(w.timezone)) for w in windows]

    def __bool__(self) -> bool:
        return bool(self._windows)

    def state(self, now: datetime) -> WindowState:
        open_until: datetime | None = None
        next_opening: datetime | None = None
        for window, expression, zone in self._windows:
            # The first opening at or after now - duration is the only one that can cover now.
            opening = _next_fire(expression, zone, now - window.duration - _TICK)
            if opening is not None and opening <= now:
                end = opening + window.duration
                if now < end:
                    open_until = end if open_until is None else max(open_until, end)
                opening = _next_fire(expression, zone, now)
            if opening is not None and (next_opening is None or opening < next_opening):
                next_opening = opening
        return WindowState(open_until, next_opening)

    def openings(self, start: datetime, end: datetime, limit: int = 200) -> list[tuple[datetime, datetime]]:
        """Every window open at some time in [start, end), as (opens, closes), in order of opening;
        at most ``limit`` of them (a window every minute would otherwise be thousands)."""
        found: list[tuple[datetime, datetime]] = []
        for window, expression, zone in self._windows:
            after = start - window.duration - _TICK
            while len(found) < limit * len(self._windows):
                opening = _next_fire(expression, zone, after)
                if opening is None or opening >= end:
                    break
                if opening + window.duration > start:
                    found.append((opening, opening + window.duration))
                after = opening
        return sorted(found)[:limit]


# cron matches whole seconds: "after t - 1 µs" is "at or after t".
_TICK = timedelta(microseconds=1)


def never_opens(window: Window, now: datetime) -> bool:
    """True when the cron matches no date at all (such as 31 February); ValueError when invalid."""
    return _next_fire(window.expression(), ZoneInfo(window.timezone), now) is None


def _next_fire(expression: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first time strictly after ``after`` that ``expression`` matches in ``zone``, in UTC."""
    try:
        fire = next(CronSim(expression, after.astimezone(zone)))
    except (CronSimError, StopIteration):  # a day no month has, or no match within 50 years
        return None
    return fire.astimezone(UTC)
