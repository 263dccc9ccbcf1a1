"""rotator: keeps Cloudflare Zero Trust Access signing keys rotated on a policy."""

import signal as _signal
import threading as _threading

__version__ = "0.1.0"

# SIGHUP's default action ends the process. An operator (or a ConfigMap update hook) may send it
# while rotator is still starting, before the daemon's event loop takes over the signal: note it
# here, as early as the process can, and the daemon reloads once it runs.
_sighups: list[int] = []


def _note_sighup(signum: int, frame: object) -> None:
    _sighups.append(signum)


def early_sighups() -> bool:
    """Whether a SIGHUP arrived before the daemon took over the signal (and forget it)."""
    arrived = bool(_sighups)
    _sighups.clear()
    return arrived


if _threading.current_thread() is _threading.main_thread():
    _signal.signal(_signal.SIGHUP, _note_sighup)
