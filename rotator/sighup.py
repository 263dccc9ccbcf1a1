"""SIGHUP before the daemon's event loop takes the signal over.

SIGHUP's default action ends the process. An operator (or a ConfigMap update hook) may send it while
rotator is still starting: the command line notes it from its first line (``catch_early``), and the
daemon reloads once it runs (``arrived_early``). Importing rotator installs nothing.
"""

from __future__ import annotations

import signal
import threading

_sighups: list[int] = []


def _note(signum: int, frame: object) -> None:
    _sighups.append(signum)


def catch_early() -> None:
    """Note a SIGHUP from now on instead of dying of it (the main thread only, as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, _note)


def arrived_early() -> bool:
    """Whether a SIGHUP arrived before the daemon took over the signal (and forget it)."""
    arrived = bool(_sighups)
    _sighups.clear()
    return arrived
