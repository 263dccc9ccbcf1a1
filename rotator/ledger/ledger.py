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

Nothing of this blocks the event loop: within a running loop, a change is made in memory and
``commit()`` writes it in a thread of its own (the rotation protocol awaits it before the POST, as
with the ConfigMap, and ``deciding`` before it lets the account go: so a rotation is two writes,
its intent and its outcome; a change outside ``deciding`` is committed in the background at once),
and every lock is taken without blocking, polled, for at most ``lock_wait`` seconds: a lock another
process holds longer is an error that sends nothing and says so. A write that fails, at any step (after the
rename too), leaves this process's memory as the truth: the next commit writes it whole, and a read
of the file merges it under what memory knows, so an intent whose POST was never sent is recorded
not applied and never mistaken for another process's orphan. Without a running loop (tests,
scripts) each change is written before it returns.

With leader election the same records are kept in a ConfigMap instead (a ``Store`` of
rotator.ha.configmap): updates are held until ``commit()`` writes them, which the rotation
protocol awaits before each POST; the Lease, not a lock, keeps two processes off one account.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import queue
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from rotator.core.keys import KeyConfig
from rotator.core.records import (
    AccountRecord,
    PlannedCheck,
    Rotation,
    State,
    iso,
    latest,
    merge,
    parse_time,
    settle,
    settled,
)
from rotator.errors import StateFileError
from rotator.files import MAX_STATE_BYTES, FileProblem, read_regular_file
from rotator.redaction import REDACTOR

FORMAT_VERSION = 2
# How often a process polls for an account's lock held by another process.
LOCK_POLL_SECONDS = 0.05
# The longest a lock of the state file is waited for, by default (the daemon derives its own from
# cloudflare.timeout): byte 0 is held for one write, an account's byte for one rotation.
LOCK_WAIT_SECONDS = 30.0
# Reads that only moved `observed` forward are written at most this often (they are not
# write-ahead: Cloudflare's record says the same, and losing one costs nothing but a stale read).
OBSERVED_FLUSH_SECONDS = 5.0
_log = structlog.get_logger("rotator")


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
        lock_wait: float = LOCK_WAIT_SECONDS,
    ) -> None:
        """``read_only``: settle what reads show in memory, never write (``rotator check``);
        ``on_save_failed``: called at each ``state_save_failed`` (the daemon counts them);
        ``store``: where the ledger is kept instead of ``state_file`` (the leader's ConfigMap,
        rotator.ha.configmap); ``lock_wait``: the longest a lock of the state file is waited for."""
        self.settle_time = settle_time
        self._on_save_failed = on_save_failed
        self._lock_wait = lock_wait
        self._state_file = StateFile(state_file, lock_wait=lock_wait) if state_file is not None else None
        self._store: Store | None = store if store is not None else self._state_file
        self._committing: asyncio.Task[None] | None = None
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
            self._commit_soon()
        self._dirty = False
        self._flushed_at = self._monotonic()

    async def close(self, within: float | None = None) -> None:
        """At the end of a process: ``flush``, then ``commit``, waiting at most ``within`` seconds
        (default ``lock_wait``); what is not written by then is logged (``state_save_failed``)."""
        self.flush()
        try:
            await asyncio.wait_for(self.commit(), self._lock_wait if within is None else within)
        except StateFileError:
            pass  # logged and counted by commit
        except TimeoutError:
            self._save_failed(StateFileError("the last write of the ledger did not finish in time"))

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
            # POSIX record locks cannot be awaited: poll, for at most lock_wait (the holder's
            # hold is bounded by its request deadline), and a shutdown cancels this wait.
            deadline = self._monotonic() + self._lock_wait
            while not self._store.try_lock_account(account_id):
                if self._monotonic() >= deadline:
                    raise StateFileError(
                        f"{self._store.where}: another process has held this account's lock for "
                        f"{self._lock_wait:g}s (a rotation in progress there, or a process stopped "
                        "while holding it): nothing was sent; the next check tries again"
                    )
                await asyncio.sleep(LOCK_POLL_SECONDS)
            try:
                record = self.record(account_id)
                if record.rotation is not None and record.rotation.state in (State.INTENT, State.SENT):
                    record = self._orphaned(account_id, record)
                yield record
            finally:
                if self._state_file is not None:
                    # On disk before another process may take the account and read it.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.commit_quietly(), self._lock_wait)
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
        return self._move(account_id, rotation, settled(rotation, State.DONE, at, why), last_done=at)

    def not_applied(self, account_id: str, rotation: Rotation, *, at: datetime, why: str) -> Rotation:
        return self._move(account_id, rotation, settled(rotation, State.NOT_APPLIED, at, why))

    def unconfirmed(self, account_id: str, rotation: Rotation, *, why: str) -> Rotation:
        return self._move(account_id, rotation, replace(rotation, state=State.UNCONFIRMED, why=why))

    # ----------------------------------------------------------------------- internals

    def _move(
        self, account_id: str, before: Rotation, after: Rotation, *, last_done: datetime | None = None
    ) -> Rotation:
        def update(record: AccountRecord) -> AccountRecord:
            if record.rotation is not None and record.rotation.id != before.id:
                return record  # settled and replaced meanwhile (by a read, or another process)
            return replace(record, rotation=after, last_done=latest(record.last_done, last_done))

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
        lock = self._locks.get(account_id)
        if lock is None or not lock.locked():
            # Held (``deciding``): the protocol commits the intent before its POST, and
            # ``deciding`` the rest before it lets the account go.
            self._commit_soon()

    def _commit_soon(self) -> None:
        """The state file's changes made in memory (within a running loop) are written in the
        background at once; the ConfigMap's are committed by the protocol and the election."""
        if self._state_file is None or self._store is not self._state_file or self._read_only:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: written already (StateFile.update)
        if self._committing is None or self._committing.done():
            self._committing = loop.create_task(self.commit_quietly())

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

    @property
    def where(self) -> str: ...

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
    """The state file: atomic, fsynced writes under a lock; reads only when it changed.

    Within a running event loop, ``update`` changes memory and ``commit`` writes in a thread;
    without one, ``update`` writes before it returns."""

    def __init__(self, path: Path, *, lock_wait: float = LOCK_WAIT_SECONDS) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_fd: int | None = None
        self._lock_wait = lock_wait
        self._seen: tuple[int, int, int] | None = None
        self._records: dict[str, AccountRecord] = {}  # memory's latest, not all of it written yet
        self._fresh: dict[str, AccountRecord] | None = None  # what a commit merged, for the ledger
        self._updates = 0
        self._committed = 0
        self._committing = asyncio.Lock()
        # One write at a time in this process: POSIX locks do not keep two threads of one process apart.
        self._writing = threading.Lock()

    @property
    def where(self) -> str:
        return str(self.path)

    def read(self) -> dict[str, AccountRecord]:
        # No lock: the file is only ever replaced whole (rename), so a read sees one version.
        return self._read()

    def read_if_changed(self) -> dict[str, AccountRecord] | None:
        fresh, self._fresh = self._fresh, None
        if self._stat() == self._seen:
            return fresh
        found = self.read()
        return found if fresh is None else merge(found, fresh)

    def update(
        self,
        mine: dict[str, AccountRecord],
        change: Callable[[dict[str, AccountRecord]], dict[str, AccountRecord]],
    ) -> dict[str, AccountRecord]:
        """Apply ``change`` to ``mine`` (with what a commit merged since): in memory within a running
        loop (``commit`` writes it), else merged with the file and written before returning."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._merge_and_write(lambda theirs: change(merge(mine, theirs)))
        self._records = change(merge(mine, self._records))
        self._updates += 1
        return self._records

    async def commit(self) -> None:
        """Write every update so far, in a thread: the loop goes on while the lock is waited for
        and the file and directory are fsynced. StateFileError when it cannot be written."""
        async with self._committing:
            target = self._updates
            if self._committed >= target:
                return
            records = self._records
            written = await _WRITER.run(lambda: self._merge_and_write(lambda theirs: merge(records, theirs)))
            self._records = merge(self._records, written)
            self._fresh = written if self._fresh is None else merge(self._fresh, written)
            self._committed = max(self._committed, target)

    def _merge_and_write(
        self, merged: Callable[[dict[str, AccountRecord]], dict[str, AccountRecord]]
    ) -> dict[str, AccountRecord]:
        """Under the file's lock: ``merged`` of what the file holds, written; returned."""
        with self._writing, self._file_lock():
            # Unchanged since this process last read or wrote it: memory holds all it says.
            theirs = self._read() if self._stat() != self._seen else {}
            records = merged(theirs)
            self._write(records)
            return records

    def try_lock_account(self, account_id: str) -> bool:
        return self._try_lock(_offset(account_id))

    def _try_lock(self, offset: int) -> bool:
        try:
            fcntl.lockf(self._fd(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
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
        # Polled (in the committing thread), for at most lock_wait.
        deadline = time.monotonic() + self._lock_wait
        while not self._try_lock(0):
            if time.monotonic() >= deadline:
                raise StateFileError(
                    f"{self._lock_path}: another process has held the lock for {self._lock_wait:g}s "
                    "(its write stuck, or a process holding it without writing)"
                )
            time.sleep(LOCK_POLL_SECONDS)
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
            text = read_regular_file(self.path, MAX_STATE_BYTES, "a rotator state file").decode("utf-8")
        except FileNotFoundError:
            self._seen = None
            return {}
        except FileProblem as exc:
            raise StateFileError(f"{self.path}: {exc.what}") from None
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
    """The ledger as its state file (and ConfigMap) holds it: compact JSON, accounts sorted, and
    redacted (rotator.redaction): a rotation's ``why`` may quote Cloudflare's answer, and an answer
    may echo the token."""
    data = {"version": FORMAT_VERSION, "accounts": {k: v.to_json() for k, v in sorted(records.items())}}
    return REDACTOR.text(json.dumps(data, separators=(",", ":")))


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
        records[account_id] = AccountRecord(last_done=parse_time(at))
    for account_id, at in data.get("possible", {}).items():
        possible = Rotation(
            id=uuid.uuid4().hex[:12],
            state=State.UNCONFIRMED,
            intended_at=parse_time(at),
            rotates_from=None,
            owner="rotator 0.x",
            why="a possible rotation recorded by an earlier version",
        )
        records[account_id] = replace(records.get(account_id, _EMPTY), rotation=possible)
    return records


def _log_transition(before: Rotation | None, after: Rotation | None) -> None:
    if after is None or (before is not None and before.state is after.state):
        return
    fields = {
        "rotation_id": after.id,
        "previous_state": before.state.value if before else None,
        "intended_at": iso(after.intended_at),
        "rotates_from": iso(after.rotates_from),
        "unknown_since": iso(after.unknown_since),
        "settled_at": iso(after.settled_at),
        "why": after.why or None,
    }
    # Each name written out (rotator/events_catalog.py lists them); routine steps are info, a
    # rotation that may have happened unseen, or did not happen, warns.
    match after.state:
        case State.INTENT:
            _log.info("rotation_intent", **fields)
        case State.SENT:
            _log.info("rotation_sent", **fields)
        case State.DONE:
            _log.info("rotation_done", **fields)
        case State.UNCONFIRMED:
            _log.warning("rotation_unconfirmed", **fields)
        case State.NOT_APPLIED:
            _log.warning("rotation_not_applied", **fields)


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


_T = TypeVar("_T")


class _Writer:
    """One thread that does the state file's blocking work (locks polled, fsyncs) in order, so the
    event loop is free meanwhile. A daemon thread: a process that exits (SIGTERM) does not wait for
    a stuck fsync (the file is replaced whole: it is the old version or the new one). Not
    asyncio.to_thread: its pool's threads are joined at exit, and a new one may take each call."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any, BaseException | None], None]]]
        self._work = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def run(self, work: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def hand_over(result: Any, error: BaseException | None) -> None:
            if future.done():
                return  # its awaiting coroutine was cancelled
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def done(result: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(hand_over, result, error)

        with self._starting:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="rotator-state-file", daemon=True)
                self._thread.start()
        self._work.put((work, done))
        return await future

    def _serve(self) -> None:
        while True:
            work, done = self._work.get()
            try:
                result = work()
            except BaseException as exc:  # handed to the awaiting coroutine
                done(None, exc)
            else:
                done(result, None)


_WRITER = _Writer()


_EMPTY = AccountRecord()
