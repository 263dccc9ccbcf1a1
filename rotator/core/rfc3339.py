"""RFC 3339 timestamps, the whole of section 5.6 and nothing else (pure).

``datetime.fromisoformat`` reads ISO 8601, which is both more (a date alone, week dates, no offset,
basic format without separators) and less (no leap second) than RFC 3339. Cloudflare's times
follow RFC 3339, so this reads exactly its grammar: ``T`` or ``t`` between date and time, any
number of fraction digits (kept to the microsecond), ``Z``, ``z`` or any ``+hh:mm``/``-hh:mm``
offset (``-00:00``, "offset unknown", is read as UTC), and a leap second (``:60``), taken as the
first instant of the next minute, the moment it ends: times then still only move forward.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

EXPECTED = "an RFC 3339 time such as 2026-12-08T09:30:00Z or 2026-12-08T10:30:00.5+01:00"
_GRAMMAR = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse(text: str) -> datetime:
    """The moment ``text`` names, in UTC; ValueError saying what was expected if it is not RFC 3339."""
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        raise ValueError(f"expected {EXPECTED}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    if not (0 <= int(offset_hours or 0) <= 23 and 0 <= int(offset_minutes or 0) <= 59):
        raise ValueError(f"the offset is out of range: expected {EXPECTED}")
    offset = timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
    zone = UTC if zulu else timezone(-offset if sign == "-" else offset)
    leap = second == 60
    try:
        moment = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=zone)
    except ValueError as exc:  # a month 13, a February 30, an hour 24
        raise ValueError(f"{exc}: expected {EXPECTED}") from None
    if fraction:
        moment += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    if leap:
        moment += timedelta(seconds=1)
    return moment.astimezone(UTC)
