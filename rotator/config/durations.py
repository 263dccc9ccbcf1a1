"""Durations as users write them in YAML: ``90s``, ``15m``, ``1h``, ``2d``, ``250ms`` or seconds.

A duration rotator cannot read is refused with the value quoted (a duration is never a secret) and
what to write instead: ``5 min`` is ``5m``, ``18hours`` is ``18h``, and ``1w`` is ``7d`` (there is
no week unit, nor any longer one).
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
# A number and a word: the word as a unit rotator knows, or the days it stands for.
_WORDY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\.?\s*$")
_WORDS = {
    "ms": ("msec", "msecs", "millisecond", "milliseconds"),
    "s": ("sec", "secs", "second", "seconds"),
    "m": ("min", "mins", "minute", "minutes"),
    "h": ("hr", "hrs", "hour", "hours"),
    "d": ("day", "days"),
}
_UNIT_OF = {word: unit for unit, words in _WORDS.items() for word in (unit, unit.upper(), *words)}
_LONGER = {  # units rotator does not have, in days
    "w": ("week", 7),
    "wk": ("week", 7),
    "wks": ("week", 7),
    "week": ("week", 7),
    "weeks": ("week", 7),
}
_SHOWN = 40  # characters of a value quoted back


def parse_duration(value: object) -> float:
    """Return the duration in seconds, or raise ValueError saying what is accepted."""
    if isinstance(value, bool):  # YAML's yes/no would otherwise pass as 1/0 seconds
        raise ValueError(f"{_EXPECTED}, got {str(value).lower()} (YAML reads yes/no/on/off as true/false)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    elif isinstance(value, str):
        raise ValueError(f"{_EXPECTED}, got {_quoted(value)}{_hint(value)}")
    else:
        raise ValueError(_EXPECTED)
    if seconds < 0:
        raise ValueError(f"{_EXPECTED}, got {value!r}: a duration cannot be negative")
    return seconds


def _hint(value: str) -> str:
    """What to write instead, when it can be told."""
    stripped = value.strip()
    if stripped.startswith("-"):
        return ": a duration cannot be negative"
    match = _WORDY.match(stripped)
    if match is None:
        if re.match(r"^\d+(\.\d+)?[a-zA-Z]+\d", stripped):
            return ": one number and one unit only (write 1h30m as 90m)"
        return ""
    number, word = match[1], match[2]
    unit = _UNIT_OF.get(word) or _UNIT_OF.get(word.lower())
    if unit is not None:
        return f": write {number}{unit} (the units are ms, s, m, h and d)"
    longer = _LONGER.get(word.lower())
    if longer is not None:
        name, days = longer
        total = float(number) * days
        return f": there is no {name} unit: write {total:g}d"
    return f": '{word}' is not a unit (the units are ms, s, m, h and d, and there is none longer than d)"


def _quoted(value: str) -> str:
    shown = value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "..."
    return f"'{shown}'"


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` that parse_duration reads back."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_EXPECTED = "expected a duration such as 90s, 15m, 1h, 2d or a number of seconds"
