"""An account's signing-key configuration as Cloudflare reports it, and what it implies.

Domain types only: the HTTP client builds a ``KeyConfig`` from an answer, the policy, the ledger and
the metrics read it. When Cloudflare rotates next is computed here and nowhere else, so the policy
and the ``rotator_key_next_rotation_timestamp_seconds`` gauge can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True)
class KeyConfig:
    """An account's key configuration as Cloudflare reported it, and when (by its clock)."""

    days_until_next_rotation: float | None
    key_rotation_interval_days: float | None
    last_key_rotation_at: datetime | None
    observed_at: datetime

    @property
    def is_empty(self) -> bool:
        return (
            self.days_until_next_rotation is None
            and self.key_rotation_interval_days is None
            and self.last_key_rotation_at is None
        )

    def predates(self, moment: datetime | None) -> bool:
        """Whether this answer is older than a rotation known to have happened at ``moment``
        (a lagging replica's read, or a rotate answer's echo of the old configuration).

        The known moment comes from a rotate answer's ``Date`` header, whole seconds, while
        ``last_key_rotation_at`` is the instant of the rotation: a read within ``STALE_SLACK``
        of it shows that rotation. Two rotations are days apart, so the slack hides nothing.
        """
        if moment is None:
            return False
        if self.last_key_rotation_at is None:
            # Every field is optional. Without the last rotation, the read is judged from the
            # known one when the interval lets that stand in for it (``as_of``); with only
            # ``days_until_next_rotation``, that figure is all there is, and it is used as given
            # (the gap still holds from the known rotation: rotator.core.policy).
            return self.key_rotation_interval_days is not None or self.days_until_next_rotation is None
        return self.last_key_rotation_at < moment - STALE_SLACK

    def as_of(self, rotated_at: datetime | None) -> KeyConfig:
        """This configuration corrected by a rotation known to have happened at ``rotated_at``.

        A stale answer's ``days_until_next_rotation`` counts from the rotation before: it is
        dropped, and the last rotation becomes the known one, so the days left are judged from it.
        """
        if rotated_at is None or not self.predates(rotated_at):
            return self
        return replace(self, days_until_next_rotation=None, last_key_rotation_at=rotated_at)


STALE_SLACK = timedelta(minutes=5)


def cloudflare_rotates_at(key: KeyConfig) -> datetime | None:
    """When Cloudflare would rotate the key on its own: its own figure when it gave one, else
    what its last rotation and interval imply; None when it said too little to tell."""
    if key.days_until_next_rotation is not None:
        return key.observed_at + key.days_until_next_rotation * DAY
    if key.last_key_rotation_at is not None and key.key_rotation_interval_days is not None:
        return key.last_key_rotation_at + key.key_rotation_interval_days * DAY
    return None


def days_until_rotation(key: KeyConfig, now: datetime) -> float | None:
    """Days from ``now`` until Cloudflare rotates on its own (never negative), or None."""
    if key.days_until_next_rotation is not None and now == key.observed_at:
        return key.days_until_next_rotation  # Cloudflare's own figure, exactly as it said it
    rotates_at = cloudflare_rotates_at(key)
    if rotates_at is None:
        return None
    return max(0.0, round((rotates_at - now) / DAY, 3))
