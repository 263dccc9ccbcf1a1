"""Durations as users write them in YAML: ``90s``, ``15m``, ``1h``, ``2d``, ``250ms`` or seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Return the duration in seconds, or raise ValueError saying what is accepted."""
    if isinstance(value, bool):  # YAML's yes/no would otherwise pass as 1/0 seconds
        raise ValueError(_EXPECTED)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    else:
        raise ValueError(_EXPECTED)
    if seconds < 0:
        raise ValueError(_EXPECTED)
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` that parse_duration reads back."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_EXPECTED = "expected a duration such as 90s, 15m, 1h, 2d or a number of seconds"
