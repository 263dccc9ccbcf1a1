"""The rotation ledger: the one record of the rotations rotator began, sent and saw settled.

A rotate POST is not idempotent, and Cloudflare's answers can lag (a replica's read, a rotate
answer echoing the old configuration). So rotator anchors the minimum gap on its own record, written
*before* the POST leaves, never on the server's echo. Every rotation (the daemon's, ``rotator
rotate``'s, ``--force``'s) goes through one state machine:

           begin()          sent()       a 200 answer, whatever its body says
    ───────> INTENT ───────> SENT ─────────────────────────────────────────────> DONE
               │               │  refused (4xx, 429, success: false), or never sent
               │               ├────────────────────────────────────────────────> NOT_APPLIED
               │               │  answer lost (timeout, 5xx, dropped, unreadable)
               │               └───────> UNCONFIRMED ──a read shows it──────────> DONE
               │ its writer died           │ ──a later rotation it cannot explain──> NOT_APPLIED
               └─(found, lock free)────────┘ ──reads unchanged for settle_time─────> NOT_APPLIED

INTENT, SENT and UNCONFIRMED are *open*: an open rotation may have happened, and holds the gap until
it is settled. UNCONFIRMED is settled only by evidence: a read whose ``last_key_rotation_at`` moved
forward (DONE), one showing a rotation later than anything this attempt can explain (NOT_APPLIED:
someone else rotated, and Cloudflare's own record then holds the gap), or reads still unchanged
``settle_time`` after the outcome became unknown. That moment is the first read taken after the
answer was lost (or after the writer died), never the read before the POST, so it errs late.

Beside the latest rotation, each account keeps ``last_done`` (when the latest rotation known to be
applied happened, by Cloudflare's clock) and ``observed`` (the latest ``last_key_rotation_at`` ever
read). Both only move forward: a read that goes backwards never moves the record back, and a read
older than them is stale (``KeyConfig.as_of``).

With ``state_file`` the ledger is durable and shared: every transition is written atomically
(a temporary file, fsynced, renamed over the old one, and the directory fsynced) under an
exclusive lock of ``<state_file>.lock``, merged with what other processes wrote; and while a
rotation is decided and sent, the account's own byte of that lock file is held, so two processes
sharing the file (the daemon and ``rotator rotate`` beside it) never both rotate. Each decision
reads the file again when it changed. POSIX record locks die with their process, so a crash never
leaves a lock held. Without ``state_file`` the ledger lives in memory, and a restart forgets it.

With leader election the same records are kept in a ConfigMap instead (a ``Store`` of
rotator.ledger.configmap): updates are held until ``commit()`` writes them, which the rotation
protocol awaits before each POST; the Lease, not a lock, keeps two processes off one account.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from rotator.core.keys import STALE_SLACK, KeyConfig
from rotator.errors import StateFileError

FORMAT_VERSION = 2
# How often a process polls for an account's lock held by another process.
LOCK_POLL_SECONDS = 0.05
# Reads that only moved `observed` forward are written at most this often (they are not
# write-ahead: Cloudflare's record says the same, and losing one costs nothing but a stale read).
OBSERVED_FLUSH_SECONDS = 5.0
_log = structlog.get_logger("rotator")


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
            intended_at=_time(data["intended_at"]),
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
        return cls(_time(data["at"]), str(data.get("why", "")), _time(data["planned_at"]))


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
        return _latest(self.last_done, self.observed)

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
            last_done=_latest(self.last_done, other.last_done),
            observed=_latest(self.observed, other.observed),
            rotation=_later(self.rotation, other.rotation),
            next_check=_later_plan(self.next_check, other.next_check),
        )


def settle(record: AccountRecord, key: KeyConfig, settle_time: timedelta) -> AccountRecord:
    """What a read of Cloudflare's configuration tells about the record (pure).

    ``observed`` moves forward only; an UNCONFIRMED rotation is settled by the evidence the read
    carries, or waits (``unknown_since`` set by the first read after its outcome was lost).
    """
    last = key.last_key_rotation_at
    observed = _latest(record.observed, last)
    record = replace(record, observed=observed)
    rotation = record.rotation
    if rotation is None or rotation.state is not State.UNCONFIRMED:
        return record
    if rotation.unknown_since is None:
        rotation = replace(rotation, unknown_since=key.observed_at)
        record = replace(record, rotation=rotation)
    assert rotation.unknown_since is not None
    if last is None:
        return record  # every field is optional: a read without it proves nothing
    moved = rotation.rotates_from is None or last > rotation.rotates_from
    if moved and last > rotation.unknown_since + STALE_SLACK:
        # Later than the first read after the answer was lost (whose Date has whole seconds: hence
        # the slack): not this POST, which could only have been applied before that read.
        # Cloudflare's record of it now holds the gap.
        return replace(
            record,
            rotation=_settled(
                rotation,
                State.NOT_APPLIED,
                key.observed_at,
                f"a later rotation at {iso(last)} that this attempt cannot explain",
            ),
        )
    if moved:
        # Applied, no later than the intent (a rotation Cloudflare shows from before the intent
        # was recorded is still judged as if this POST had applied it: the later time, the
        # longer wait).
        at = max(last, rotation.intended_at)
        return replace(
            record,
            last_done=_latest(record.last_done, at),
            rotation=_settled(rotation, State.DONE, at, f"a read shows last_key_rotation_at {iso(last)}"),
        )
    # Not moved: the same rotation as before the POST, or one older still (a lagging replica).
    if key.observed_at - rotation.unknown_since >= settle_time:
        return replace(
            record,
            rotation=_settled(
                rotation,
                State.NOT_APPLIED,
                key.observed_at,
                f"last_key_rotation_at unchanged for {_duration(key.observed_at - rotation.unknown_since)} "
                "after the answer was lost",
            ),
        )
    return record  # unchanged for less than settle_time


class Ledger:
    """The record of every account's rotations; durable and shared when given a ``state_file``."""

    def __init__(
        self,
        state_file: Path | None = None,
        *,
        settle_time: timedelta = timedelta(hours=1),
        read_only: bool = False,
        owner: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_save_failed: Callable[[], None] | None = None,
        store: Store | None = None,
    ) -> None:
        """``read_only``: settle what reads show in memory, never write (``rotator check``);
        ``on_save_failed``: called at each ``state_save_failed`` (the daemon counts them);
        ``store``: where the ledger is kept instead of ``state_file`` (the leader's ConfigMap,
        rotator.ledger.configmap)."""
        self.settle_time = settle_time
        self._on_save_failed = on_save_failed
        self._store: Store | None = (
            store if store is not None else (StateFile(state_file) if state_file is not None else None)
        )
        self._read_only = read_only
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._monotonic = monotonic
        self._records: dict[str, AccountRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty = False
        self._flushed_at = monotonic()
        if self._store is not None:
            self._records = self._store.read()

    # ----------------------------------------------------------------------- reading

    def record(self, account_id: str) -> AccountRecord:
        """The account's record, read again from the state file if another process changed it."""
        self._refresh()
        return self._records.get(account_id, _EMPTY)

    def observe(self, account_id: str, key: KeyConfig) -> AccountRecord:
        """Take what a read of Cloudflare shows into the record; return the record after it."""
        self._refresh()
        before = self._records.get(account_id, _EMPTY)
        if before.rotation is not None and before.rotation.state in (State.INTENT, State.SENT):
            before = self._adopt_orphan(account_id, before)
        after = settle(before, key, self.settle_time)
        if after == before:
            return after
        if after.rotation != before.rotation:
            self._write(account_id, lambda _: after)
            _log_transition(before.rotation, after.rotation)
        else:  # only `observed` moved: not write-ahead, so written lazily
            self._records[account_id] = after
            self._dirty = True
            if self._monotonic() - self._flushed_at >= OBSERVED_FLUSH_SECONDS:
                self.flush()
        return after

    def plan(self, account_id: str, planned: PlannedCheck) -> None:
        """Record when the account is next checked: lazily, like ``observed`` (a plan lost in a
        crash costs one read at the next start, never a rotation)."""
        if self._read_only:
            return
        before = self._records.get(account_id, _EMPTY)
        self._records[account_id] = replace(before, next_check=planned)
        self._dirty = True
        if self._monotonic() - self._flushed_at >= OBSERVED_FLUSH_SECONDS:
            self.flush()

    def planned(self) -> dict[str, PlannedCheck]:
        """Every account's recorded next check (a restart or a new leader resumes from them)."""
        self._refresh()
        return {a: r.next_check for a, r in self._records.items() if r.next_check is not None}

    def flush(self) -> None:
        """Write what was only kept in memory (``observed`` times); at shutdown, and now and then."""
        if self._dirty and self._store is not None and not self._read_only:
            try:
                self._records = self._store.update(self._records, lambda records: records)
            except StateFileError as exc:
                self._save_failed(exc)
                return
        self._dirty = False
        self._flushed_at = self._monotonic()

    async def commit(self) -> None:
        """Make every change so far durable where writing it takes a network call (the ConfigMap);
        the state file is written at each change already. StateFileError when it cannot be."""
        if self._store is None or self._read_only:
            return
        try:
            await self._store.commit()
        except StateFileError as exc:
            self._save_failed(exc)
            raise

    async def commit_quietly(self) -> None:
        """``commit``, its failure logged and counted only: for steps after the write-ahead intent,
        which holds the gap whatever becomes of them."""
        with contextlib.suppress(StateFileError):
            await self.commit()

    # ----------------------------------------------------------------------- deciding and acting

    @contextlib.asynccontextmanager
    async def deciding(self, account_id: str) -> AsyncIterator[AccountRecord]:
        """Hold the account while a rotation is decided and sent; yield its record, read fresh.

        Within this process, one coroutine at a time; across processes sharing the state file,
        one process at a time. A rotation found open on entry whose writer is gone (its lock was
        free) is taken as UNCONFIRMED: it may have been sent just before that process died.
        """
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            if self._store is None:
                yield self.record(account_id)
                return
            # POSIX record locks cannot be awaited: poll. The holder's hold is bounded by its
            # request deadline, and a shutdown cancels this wait.
            while not self._store.try_lock_account(account_id):  # noqa: ASYNC110
                await asyncio.sleep(LOCK_POLL_SECONDS)
            try:
                record = self.record(account_id)
                if record.rotation is not None and record.rotation.state in (State.INTENT, State.SENT):
                    record = self._orphaned(account_id, record)
                yield record
            finally:
                self._store.unlock_account(account_id)

    def begin(self, account_id: str, *, at: datetime, rotates_from: datetime | None) -> Rotation:
        """Record the intent to rotate, durably, before the POST leaves (StateFileError if not)."""
        rotation = Rotation(
            id=uuid.uuid4().hex[:12],
            state=State.INTENT,
            intended_at=at,
            rotates_from=rotates_from,
            owner=self._owner,
        )
        try:
            self._write(account_id, lambda record: replace(record, rotation=rotation))
        except StateFileError as exc:
            self._save_failed(exc)  # and nothing is sent: the caller has no intent on record
            raise
        _log_transition(None, rotation)
        return rotation

    def sent(self, account_id: str, rotation: Rotation) -> Rotation:
        return self._move(account_id, rotation, replace(rotation, state=State.SENT))

    def done(self, account_id: str, rotation: Rotation, *, at: datetime, why: str) -> Rotation:
        return self._move(account_id, rotation, _settled(rotation, State.DONE, at, why), last_done=at)

    def not_applied(self, account_id: str, rotation: Rotation, *, at: datetime, why: str) -> Rotation:
        return self._move(account_id, rotation, _settled(rotation, State.NOT_APPLIED, at, why))

    def unconfirmed(self, account_id: str, rotation: Rotation, *, why: str) -> Rotation:
        return self._move(account_id, rotation, replace(rotation, state=State.UNCONFIRMED, why=why))

    # ----------------------------------------------------------------------- internals

    def _move(
        self, account_id: str, before: Rotation, after: Rotation, *, last_done: datetime | None = None
    ) -> Rotation:
        def update(record: AccountRecord) -> AccountRecord:
            if record.rotation is not None and record.rotation.id != before.id:
                return record  # settled and replaced meanwhile (by a read, or another process)
            return replace(record, rotation=after, last_done=_latest(record.last_done, last_done))

        try:
            self._write(account_id, update)
        except StateFileError as exc:
            # The intent is on disk already and holds the gap; this step is in memory and logged.
            self._save_failed(exc)
            self._records[account_id] = update(self._records.get(account_id, _EMPTY))
        _log_transition(before, after)
        return after

    def _save_failed(self, exc: StateFileError) -> None:
        _log.error("state_save_failed", error=str(exc))
        if self._on_save_failed is not None:
            self._on_save_failed()

    def _write(self, account_id: str, update: Callable[[AccountRecord], AccountRecord]) -> None:
        if self._store is None or self._read_only:
            self._records[account_id] = update(self._records.get(account_id, _EMPTY))
            return

        def apply(records: dict[str, AccountRecord]) -> dict[str, AccountRecord]:
            records[account_id] = update(records.get(account_id, _EMPTY))
            return records

        self._records = self._store.update(self._records, apply)
        self._dirty = False
        self._flushed_at = self._monotonic()

    def _refresh(self) -> None:
        if self._store is None:
            return
        try:
            fresh = self._store.read_if_changed()
        except StateFileError as exc:
            _log.error("state_load_failed", error=str(exc))
            raise
        if fresh is not None:
            self._records = merge(self._records, fresh)

    def _adopt_orphan(self, account_id: str, record: AccountRecord) -> AccountRecord:
        """An INTENT or SENT seen by a read: still in flight somewhere, or left by a dead process."""
        lock = self._locks.get(account_id)
        if self._store is None or self._read_only or (lock is not None and lock.locked()):
            return record  # in flight in this process (or nothing to find out)
        if not self._store.try_lock_account(account_id):
            return record  # another process is sending it now
        try:
            return self._orphaned(account_id, self.record(account_id))
        finally:
            self._store.unlock_account(account_id)

    def _orphaned(self, account_id: str, record: AccountRecord) -> AccountRecord:
        rotation = record.rotation
        if rotation is None or rotation.state not in (State.INTENT, State.SENT):
            return record
        why = f"found {rotation.state.value} with no process sending it (its writer {rotation.owner} stopped)"
        self._move(account_id, rotation, replace(rotation, state=State.UNCONFIRMED, why=why))
        return self._records.get(account_id, _EMPTY)


class Store(Protocol):
    """Where the ledger is kept: the state file (``StateFile``) or the leader's ConfigMap."""

    def read(self) -> dict[str, AccountRecord]: ...

    def read_if_changed(self) -> dict[str, AccountRecord] | None:
        """What another writer stored since this process last read or wrote; None if nothing."""

    def update(
        self,
        mine: dict[str, AccountRecord],
        change: Callable[[dict[str, AccountRecord]], dict[str, AccountRecord]],
    ) -> dict[str, AccountRecord]:
        """Merge what is stored with ``mine``, apply ``change``, store it; return the result."""

    async def commit(self) -> None:
        """Wait until every update so far is durable (StateFileError if it cannot be)."""

    def try_lock_account(self, account_id: str) -> bool:
        """Hold the account against every other process (False: another holds it now)."""

    def unlock_account(self, account_id: str) -> None: ...


class StateFile:
    """The state file: atomic, fsynced writes under a lock; reads only when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_fd: int | None = None
        self._seen: tuple[int, int, int] | None = None

    def read(self) -> dict[str, AccountRecord]:
        # No lock: the file is only ever replaced whole (rename), so a read sees one version.
        return self._read()

    def read_if_changed(self) -> dict[str, AccountRecord] | None:
        if self._stat() == self._seen:
            return None
        return self.read()

    def update(
        self,
        mine: dict[str, AccountRecord],
        change: Callable[[dict[str, AccountRecord]], dict[str, AccountRecord]],
    ) -> dict[str, AccountRecord]:
        """Merge the file with ``mine``, apply ``change``, write it; return what was written."""
        with self._file_lock():
            # Unchanged since this process last read or wrote it: ``mine`` holds all it says.
            theirs = self._read() if self._stat() != self._seen else None
            # A copy: a write that fails leaves this process's record as it was.
            records = change(dict(mine) if theirs is None else merge(mine, theirs))
            self._write(records)
            return records

    async def commit(self) -> None:
        pass  # every update was written, fsynced and renamed into place before it returned

    def try_lock_account(self, account_id: str) -> bool:
        try:
            fcntl.lockf(self._fd(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(account_id))
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise StateFileError(f"{self._lock_path}: cannot lock: {exc.strerror}") from exc
        return True

    def unlock_account(self, account_id: str) -> None:
        fcntl.lockf(self._fd(), fcntl.LOCK_UN, 1, _offset(account_id))

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Byte 0 serialises writers (read, merge, write: milliseconds), so none loses another's.
        fcntl.lockf(self._fd(), fcntl.LOCK_EX, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(self._fd(), fcntl.LOCK_UN, 1, 0)

    def _fd(self) -> int:
        # Opened once and never closed: closing any descriptor of a file drops every POSIX lock
        # this process holds on it.
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StateFileError(f"{self._lock_path}: cannot open the lock file: {exc.strerror}") from exc
        return self._lock_fd

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot read: {exc.strerror}") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> dict[str, AccountRecord]:
        seen = self._stat()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._seen = None
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise StateFileError(f"{self.path}: cannot read: {exc}") from exc
        records = decode(str(self.path), text)
        self._seen = seen
        return records

    def _write(self, records: dict[str, AccountRecord]) -> None:
        directory = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot write in {directory}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(encode(records))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(directory)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise StateFileError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._seen = self._stat()


def encode(records: dict[str, AccountRecord]) -> str:
    """The ledger as its state file (and ConfigMap) holds it: compact JSON, accounts sorted."""
    data = {"version": FORMAT_VERSION, "accounts": {k: v.to_json() for k, v in sorted(records.items())}}
    return json.dumps(data, separators=(",", ":"))


def decode(path: str, text: str) -> dict[str, AccountRecord]:
    """Read what ``encode`` wrote (or rotator 0.x's file); StateFileError naming ``path`` if not."""
    if not text.strip():
        # Written atomically and fsynced, the file is never empty on its own: something else
        # truncated it. Starting afresh would forget rotations that hold the gap.
        raise StateFileError(
            f"{path}: the state file is empty; rotator never leaves it so. Restore it from a backup, "
            "or move it aside to start without the record of past rotations"
        )
    try:
        return _records(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateFileError(
            f"{path}: not a rotator state file ({exc}). Restore it from a backup, or move it aside "
            "to start without the record of past rotations"
        ) from None


def _records(data: Any) -> dict[str, AccountRecord]:
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    if "accounts" not in data and ("confirmed" in data or "possible" in data):
        return _from_version_1(data)
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown version {data.get('version')!r}")
    return {str(k): AccountRecord.from_json(v) for k, v in data["accounts"].items()}


def _from_version_1(data: dict[str, Any]) -> dict[str, AccountRecord]:
    """rotator 0.x's file: confirmed and possible rotation times per account."""
    records: dict[str, AccountRecord] = {}
    for account_id, at in data.get("confirmed", {}).items():
        records[account_id] = AccountRecord(last_done=_time(at))
    for account_id, at in data.get("possible", {}).items():
        possible = Rotation(
            id=uuid.uuid4().hex[:12],
            state=State.UNCONFIRMED,
            intended_at=_time(at),
            rotates_from=None,
            owner="rotator 0.x",
            why="a possible rotation recorded by an earlier version",
        )
        records[account_id] = replace(records.get(account_id, _EMPTY), rotation=possible)
    return records


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


def _settled(rotation: Rotation, state: State, at: datetime, why: str) -> Rotation:
    return replace(rotation, state=state, settled_at=at, why=why)


def _log_transition(before: Rotation | None, after: Rotation | None) -> None:
    if after is None or (before is not None and before.state is after.state):
        return
    # Routine steps are info; a rotation that may have happened unseen, or did not happen, warns.
    level = _log.warning if after.state in (State.UNCONFIRMED, State.NOT_APPLIED) else _log.info
    level(
        f"rotation_{after.state.value}",
        rotation_id=after.id,
        previous_state=before.state.value if before else None,
        intended_at=iso(after.intended_at),
        rotates_from=iso(after.rotates_from),
        unknown_since=iso(after.unknown_since),
        settled_at=iso(after.settled_at),
        why=after.why or None,
    )


def _offset(account_id: str) -> int:
    # One byte per account (byte 0 guards the file). Two accounts sharing a byte only wait for
    # each other; they can never both hold one account.
    try:
        return 1 + int(account_id, 16) % (2**31 - 2)
    except ValueError:
        return 1 + sum(account_id.encode()) % (2**31 - 2)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"time without a timezone: {value!r}")
    return parsed


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


_EMPTY = AccountRecord()
