"""What this process remembers: the rotations it made, or may have made, per account.

Cloudflare's ``last_key_rotation_at`` is the record of rotations; this memory exists for when that
record lags (stale reads) or could not be read after a rotate POST whose answer was lost. Two kinds
are kept: *confirmed* rotations (Cloudflare answered, or a re-read showed the change), which also
tell a stale answer from a true one, and *possible* ones (the answer was lost and could not be
confirmed), which hold the minimum gap until a later read settles them (rotator.policy). With
``state_file`` the memory survives restarts; without it, a restart forgets, and Cloudflare's record
is all there is.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

import structlog

_KINDS = ("confirmed", "possible")


class RotationMemory:
    def __init__(self, state_file: Path | None = None) -> None:
        self._state_file = state_file
        self._rotations: dict[str, dict[str, datetime]] = {kind: {} for kind in _KINDS}
        if state_file is not None:
            self._rotations.update(_load(state_file))

    def last_confirmed_rotation(self, account_id: str) -> datetime | None:
        return self._rotations["confirmed"].get(account_id)

    def last_possible_rotation(self, account_id: str) -> datetime | None:
        return self._rotations["possible"].get(account_id)

    def remember(self, account_id: str, at: datetime, *, confirmed: bool = True) -> None:
        kind = self._rotations["confirmed" if confirmed else "possible"]
        previous = kind.get(account_id)
        if previous is None or at > previous:
            kind[account_id] = at
            self._save()

    def _save(self) -> None:
        if self._state_file is None:
            return
        data = {
            kind: {k: v.isoformat() for k, v in sorted(rotations.items())}
            for kind, rotations in self._rotations.items()
        }
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


def _load(path: Path) -> dict[str, dict[str, datetime]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            kind: {k: datetime.fromisoformat(v) for k, v in data.get(kind, {}).items()} for kind in _KINDS
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        # An unreadable state file must not stop rotations forever; Cloudflare's record remains.
        structlog.get_logger("rotator").warning("state_load_failed", state_file=str(path), error=str(exc))
        return {}
