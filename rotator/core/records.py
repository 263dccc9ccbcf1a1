"""The ledger's records, pure: what rotator knows of each account's rotations, how a read of
Cloudflare's configuration settles them (``settle``), how two copies merge (``merge``), and their
JSON form. No I/O: rotator.ledger.ledger keeps them in memory or in a state file, rotator.ha.configmap
in ConfigMaps, and the policy (rotator.core.policy) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rotator.core.keys import STALE_SLACK, KeyConfig


class State(StrEnum):
    INTENT = "intent"  # recorded; the POST may leave at any moment
    SENT = "sent"  # the POST is on the wire
    DONE = "done"  # applied: a 200, or a read showing it
    UNCONFIRMED = "unconfirmed"  # may have been applied; the outcome is unknown
    NOT_APPLIED = "not_applied"  # refused, never sent, or settled by evidence

    @property
    def open(self) -> bool:
        return self in (State.INTENT, State.SENT, State.UNCONFIRMED)


# Later states win when two copies of one rotation are merged (two processes, one file).
_PROGRESS = {State.INTENT: 0, State.SENT: 1, State.UNCONFIRMED: 2, State.DONE: 3, State.NOT_APPLIED: 3}


@dataclass(frozen=True)
class Rotation:
    """One rotation attempt of one account, as the ledger knows it."""

    id: str
    state: State
    intended_at: datetime  # when the intent was recorded (Cloudflare's clock, as last seen)
    rotates_from: datetime | None  # the last_key_rotation_at it rotates away from
    owner: str  # host:pid of the process that began it
    unknown_since: datetime | None = None  # UNCONFIRMED: the first read after the outcome was lost
    settled_at: datetime | None = None  # DONE: when applied; NOT_APPLIED: when that was known
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "intended_at": iso(self.intended_at),
            "rotates_from": iso(self.rotates_from),
            "owner": self.owner,
            "unknown_since": iso(self.unknown_since),
            "settled_at": iso(self.settled_at),
            "why": self.why,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rotation:
        return cls(
            id=str(data["id"]),
            state=State(data["state"]),
            intended_at=parse_time(data["intended_at"]),
            rotates_from=_maybe_time(data.get("rotates_from")),
            owner=str(data.get("owner", "")),
            unknown_since=_maybe_time(data.get("unknown_since")),
            settled_at=_maybe_time(data.get("settled_at")),
            why=str(data.get("why", "")),
        )


@dataclass(frozen=True)
class PlannedCheck:
    """When the daemon checks an account next, and why (rotator.core.policy.next_check), by
    Cloudflare's clock: a restart or a new leader resumes the schedule from it."""

    at: datetime
    why: str
    planned_at: datetime  # the check that planned it: the later plan wins a merge

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "why": self.why, "planned_at": iso(self.planned_at)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedCheck:
        return cls(parse_time(data["at"]), str(data.get("why", "")), parse_time(data["planned_at"]))


@dataclass(frozen=True)
class AccountRecord:
    """What the ledger knows of one account: what the policy decides with."""

    last_done: datetime | None = None  # the latest rotation known applied
    observed: datetime | None = None  # the latest last_key_rotation_at ever read
    rotation: Rotation | None = None  # the latest attempt, in any state
    next_check: PlannedCheck | None = None  # not write-ahead: kept lazily, like `observed`

    @property
    def open(self) -> Rotation | None:
        """The rotation that may have happened and is not settled yet, if any."""
        return self.rotation if self.rotation is not None and self.rotation.state.open else None

    @property
    def anchor(self) -> datetime | None:
        """The latest rotation known to have happened: reads older than this are stale."""
        return latest(self.last_done, self.observed)

    def to_json(self) -> dict[str, Any]:
        return {
            "last_done": iso(self.last_done),
            "observed": iso(self.observed),
            "rotation": self.rotation.to_json() if self.rotation else None,
            "next_check": self.next_check.to_json() if self.next_check else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountRecord:
        rotation = data.get("rotation")
        next_check = data.get("next_check")
        return cls(
            last_done=_maybe_time(data.get("last_done")),
            observed=_maybe_time(data.get("observed")),
            rotation=Rotation.from_json(rotation) if rotation else None,
            next_check=PlannedCheck.from_json(next_check) if next_check else None,
        )

    def merged(self, other: AccountRecord) -> AccountRecord:
        """Both copies' knowledge: times only move forward, the later (or further) attempt wins."""
        return AccountRecord(
            last_done=latest(self.last_done, other.last_done),
            observed=latest(self.observed, other.observed),
            rotation=_later(self.rotation, other.rotation),
            next_check=_later_plan(self.next_check, other.next_check),
        )


def settle(record: AccountRecord, key: KeyConfig, settle_time: timedelta) -> AccountRecord:
    """What a read of Cloudflare's configuration tells about the record (pure).

    ``observed`` moves forward only; an UNCONFIRMED rotation is settled by the evidence the read
    carries, or waits (``unknown_since`` set by the first read after its outcome was lost).
    """
    last = key.last_key_rotation_at
    observed = latest(record.observed, last)
    record = replace(record, observed=observed)
    rotation = record.rotation
    if rotation is None or rotation.state is not State.UNCONFIRMED:
        return record
    if rotation.unknown_since is None:
        rotation = replace(rotation, unknown_since=key.observed_at)
        record = replace(record, rotation=rotation)
    assert rotation.unknown_since is not None
    # Every field is optional: a read without last_key_rotation_at shows no rotation, so it is
    # judged as one that shows none (settle_time after the outcome became unknown, not applied:
    # the policy then judges by days_until_next_rotation, which an applied rotation resets).
    moved = last is not None and (rotation.rotates_from is None or last > rotation.rotates_from)
    if last is not None and moved and last > rotation.unknown_since + STALE_SLACK:
        # Later than the first read after the answer was lost (whose Date has whole seconds: hence
        # the slack): not this POST, which could only have been applied before that read.
        # Cloudflare's record of it now holds the gap.
        return replace(
            record,
            rotation=settled(
                rotation,
                State.NOT_APPLIED,
                key.observed_at,
                f"a later rotation at {iso(last)} that this attempt cannot explain",
            ),
        )
    if last is not None and moved:
        # Applied, no later than the intent (a rotation Cloudflare shows from before the intent
        # was recorded is still judged as if this POST had applied it: the later time, the
        # longer wait).
        at = max(last, rotation.intended_at)
        return replace(
            record,
            last_done=latest(record.last_done, at),
            rotation=settled(rotation, State.DONE, at, f"a read shows last_key_rotation_at {iso(last)}"),
        )
    # Not moved: the same rotation as before the POST, or one older still (a lagging replica), or
    # no last_key_rotation_at at all.
    if key.observed_at - rotation.unknown_since >= settle_time:
        shown = "unchanged" if last is not None else "not shown by any read"
        return replace(
            record,
            rotation=settled(
                rotation,
                State.NOT_APPLIED,
                key.observed_at,
                f"last_key_rotation_at {shown} for {_duration(key.observed_at - rotation.unknown_since)} "
                "after the answer was lost",
            ),
        )
    return record  # unchanged for less than settle_time


def merge(mine: dict[str, AccountRecord], theirs: dict[str, AccountRecord]) -> dict[str, AccountRecord]:
    """Two copies' knowledge of every account (``AccountRecord.merged``)."""
    merged = dict(theirs)
    for account_id, record in mine.items():
        other = merged.get(account_id)
        merged[account_id] = record if other is None or other == record else record.merged(other)
    return merged


def _later(a: Rotation | None, b: Rotation | None) -> Rotation | None:
    if a is None or b is None:
        return a or b
    if a.id == b.id:
        return a if _PROGRESS[a.state] >= _PROGRESS[b.state] else b
    return a if a.intended_at >= b.intended_at else b


def _later_plan(a: PlannedCheck | None, b: PlannedCheck | None) -> PlannedCheck | None:
    if a is None or b is None:
        return a or b
    return a if a.planned_at >= b.planned_at else b


def settled(rotation: Rotation, state: State, at: datetime, why: str) -> Rotation:
    return replace(rotation, state=state, settled_at=at, why=why)


def latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def parse_time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"time without a timezone: {value!r}")
    return parsed


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)
