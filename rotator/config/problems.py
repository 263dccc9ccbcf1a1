"""Saying many problems without repeating one: identical problems are grouped, with a count.

A config with 300,000 accounts and no token set is one problem, not 300,000 lines; a mistake in the
``rotation:`` defaults is one mistake, however many accounts inherit it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

SHOWN = 3  # places named before "and N more"


def grouped(problems: Iterable[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """``(where, what)`` pairs as ``(wheres, what)``, one per distinct ``what``, in the order each was
    first found; the ``wheres`` of one ``what`` are distinct and in order."""
    found: dict[str, dict[str, None]] = {}
    for where, what in problems:
        found.setdefault(what, {})[where] = None
    return [(list(wheres), what) for what, wheres in found.items()]


def several(items: Sequence[str]) -> str:
    """``a, b, c and 297 more (300 in all)``; all of them when there are few."""
    if len(items) <= SHOWN + 1:
        return ", ".join(items)
    return f"{', '.join(items[:SHOWN])} and {len(items) - SHOWN:,} more ({len(items):,} in all)"


def lines(problems: Iterable[tuple[str, str]]) -> list[str]:
    """``where: what`` lines, the places of a problem found in several named together. An empty
    ``where`` is a problem of the whole file."""
    return [f"{several(wheres)}: {what}" if any(wheres) else what for wheres, what in grouped(problems)]
