"""What this process remembers: the rotations it made, or may have made, per account.

Cloudflare's ``last_key_rotation_at`` is the record of rotations; this memory exists for when that
record lags (stale reads) or could not be read after a rotate POST whose answer was lost. It keeps
the minimum gap between two rotations of one account. With ``state_file`` it survives restarts;
without it, a restart forgets, and Cloudflare's record is all there is.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

import structlog


class RotationMemory:
    def __init__(self, state_file: Path | None = None) -> None:
        self._state_file = state_file
        self._last: dict[str, datetime] = {}
        if state_file is not None:
            self._last = _load(state_file)

    def last_rotation(self, account_id: str) -> datetime | None:
        return self._last.get(account_id)

    def remember(self, account_id: str, at: datetime) -> None:
        previous = self._last.get(account_id)
        if previous is None or at > previous:
            self._last[account_id] = at
            self._save()

    def _save(self) -> None:
        if self._state_file is None:
            return
        data = {"last_rotation": {k: v.isoformat() for k, v in sorted(self._last.items())}}
        directory = self._state_file.parent
        try:
            # Write-then-rename: a crash mid-write never leaves a torn state file.
            with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(f.name, self._state_file)
        except OSError as exc:
            structlog.get_logger("rotator").error(
                "state_save_failed", state_file=str(self._state_file), error=str(exc)
            )


def _load(path: Path) -> dict[str, datetime]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: datetime.fromisoformat(v) for k, v in data["last_rotation"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # An unreadable state file must not stop rotations forever; Cloudflare's record remains.
        structlog.get_logger("rotator").warning("state_load_failed", state_file=str(path), error=str(exc))
        return {}
