"""Maintenance windows: when a due rotation may happen. Pure: every answer is for a given ``now``.

Cron parsing is APScheduler's (already the scheduler), so a window's cron means exactly what it
means to the scheduler: five fields, names for days and months, evaluated in the window's timezone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger


@dataclass(frozen=True)
class Window:
    """Opens at every time ``cron`` matches (in ``timezone``) and stays open for ``duration``."""

    cron: str
    duration: timedelta
    timezone: str = "UTC"

    def trigger(self) -> CronTrigger:
        """Raise ValueError (bad cron) or ZoneInfoNotFoundError (unknown timezone)."""
        return CronTrigger.from_crontab(_crontab_weekdays(self.cron), timezone=ZoneInfo(self.timezone))


@dataclass(frozen=True)
class WindowState:
    open_until: datetime | None  # set when a window is open at ``now``
    next_opening: datetime | None  # the next time a window opens after ``now`` (None: never)


class Windows:
    def __init__(self, windows: Sequence[Window]) -> None:
        self._windows = [(w, w.trigger()) for w in windows]

    def __bool__(self) -> bool:
        return bool(self._windows)

    def state(self, now: datetime) -> WindowState:
        open_until: datetime | None = None
        next_opening: datetime | None = None
        for window, trigger in self._windows:
            # The first opening at or after now - duration is the only one that can cover now.
            opening = _next_fire(trigger, now - window.duration)
            if opening is not None and opening <= now:
                end = opening + window.duration
                if now < end:
                    open_until = end if open_until is None else max(open_until, end)
                opening = _next_fire(trigger, now + timedelta(microseconds=1))
            if opening is not None and (next_opening is None or opening < next_opening):
                next_opening = opening
        return WindowState(open_until, next_opening)


# crontab numbers weekdays from Sunday (0 or 7); APScheduler from Monday (0). Users write crontab.
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_weekdays(cron: str) -> str:
    """Spell the weekday field's numbers as names, so they mean what crontab(5) says."""
    fields = cron.split()
    if len(fields) != 5:
        return cron  # APScheduler names the problem
    parts = []
    for part in fields[4].split(","):
        days, slash, step = part.partition("/")  # a step (*/2) is a count, not a day
        days = re.sub(r"\d+", lambda m: _WEEKDAY_NAMES[int(m[0])] if int(m[0]) <= 7 else m[0], days)
        parts.append(days + slash + step)
    return " ".join([*fields[:4], ",".join(parts)])


def never_opens(window: Window, now: datetime) -> bool:
    return _next_fire(window.trigger(), now) is None


def _next_fire(trigger: CronTrigger, after: datetime) -> datetime | None:
    fire: datetime | None = trigger.get_next_fire_time(None, after)
    return None if fire is None else fire.astimezone(UTC)
