"""One rotation, at most one applied POST: the protocol every rotation goes through.

The daemon's rotations, ``rotator rotate`` and ``rotator rotate --force`` all come here. Reserve,
then decide, then send: every wait comes before the last decision, none after it.

1. Wait for all there is to wait for: the account held in the ledger (one process and one
   coroutine at a time), a reservation from the client (the credential's budget, any 429 pause,
   a connection slot: ``CloudflareClient.reserve``), the ledger's pending writes committed (the
   ConfigMap) and, with leader election, the Lease renewed if it would not outlast the POST.
2. Decide again, at once, with the config in force *now* (a reload may have removed the account or
   set ``dry_run`` while this waited), the account's fresh record (another process may have
   rotated) and the clock now: Cloudflare's, estimated from its last ``Date`` and the monotonic time
   since (a maintenance window that closed during the waits is closed).
3. Record the intent, durably: from here on, a crash at any instant leaves a record that holds the
   gap. (In the ConfigMap, with leader election: written before going on, or nothing is sent; that
   write is a wait, so the decision is taken once more after it, and the intent is NOT_APPLIED if
   the answer has changed.)
4. Right before the send, with nothing awaited in between: not shutting down (after SIGTERM nothing
   not yet on the wire leaves) and, with leader election, fenced: this replica holds the Lease for
   longer than the POST's whole deadline, counted from now (rotator.ha.leader); otherwise the intent
   is NOT_APPLIED and nothing is sent.
5. Send one POST, and settle the intent by what came back:
   - 200: DONE at the answer's time, whatever its body says (a lagging replica may echo the old
     configuration);
   - 429, no connection, not sent at shutdown: NOT_APPLIED, and sent again (a new reservation, a
     new decision, a new intent) after the pause, at most ``ROTATE_ATTEMPTS`` POSTs in all;
   - a refusal (4xx, ``success: false``): NOT_APPLIED;
   - the answer lost (timeout, 5xx, dropped, unreadable): UNCONFIRMED. Never sent again here: two
     reads a backoff apart may show the rotation (DONE); otherwise it stays open, holding the gap,
     until later checks' reads settle it (rotator.ledger.ledger).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import structlog

from rotator.cloudflare.client import Backoff, CloudflareClient, Reservation
from rotator.config.credentials import Credential
from rotator.core.keys import KeyConfig
from rotator.core.policy import Decision
from rotator.core.records import AccountRecord, Rotation, State
from rotator.errors import (
    Abandoned,
    APIError,
    CloudflareError,
    ConnectError,
    NotLeading,
    RateLimitedError,
    RotationUnconfirmed,
    RotatorError,
    StateFileError,
)
from rotator.ledger.ledger import Ledger

_log = structlog.get_logger("rotator")
# Rotate POSTs known not to have been applied may be sent again, this many in all, per check.
ROTATE_ATTEMPTS = 3
# Reads right after a lost answer, a backoff apart, that may show the rotation applied.
CONFIRMING_READS = 2

# Given the account's fresh record and the clock now (Cloudflare's, estimated), the decision under
# the config in force now and the credential to send with; None when the account is no longer
# configured. Pure and quick: it is called with nothing awaited between it and the send.
Redecide = Callable[[AccountRecord, datetime], "tuple[Decision, Credential] | None"]


@dataclass(frozen=True)
class Outcome:
    """What became of a rotation that a check decided on."""

    rotation: Rotation | None = None  # the ledger's entry at the end (None: nothing was begun)
    answer: KeyConfig | None = None  # the 200's body, or the read that showed the rotation
    error: RotatorError | None = None
    # Decided again and not rotated: the decision then, or None with ``removed``.
    redecided: Decision | None = None
    removed: bool = False

    @property
    def applied(self) -> bool:
        return self.rotation is not None and self.rotation.state is State.DONE

    @property
    def possibly_applied(self) -> bool:
        return self.rotation is not None and self.rotation.state.open


def _rotation_id(rotation: Rotation | None) -> str | None:
    return rotation.id if rotation is not None else None


def _rotates_from(key: KeyConfig, record: AccountRecord) -> datetime | None:
    """The last rotation this one rotates away from: the read's, or the ledger's if later."""
    anchor, last = record.anchor, key.last_key_rotation_at
    return anchor if anchor is not None and (last is None or anchor > last) else last


@dataclass(frozen=True)
class _Lost:
    """A POST whose answer was lost: the rotation left UNCONFIRMED, and why."""

    rotation: Rotation
    error: CloudflareError


class Fence(Protocol):
    """Leader election's fence (rotator.ha.leader.LeaseFence)."""

    async def prepare(self) -> bool:
        """Renew the Lease now if it would not outlast a request: a wait, taken before deciding.
        False: this replica does not lead."""
        ...

    def holds(self) -> bool:
        """Whether this replica leads, its Lease running for a request's whole deadline from now:
        read without waiting, right before the send."""
        ...


class RotationProtocol:
    def __init__(
        self,
        client: CloudflareClient,
        ledger: Ledger,
        backoff: Backoff,
        fence: Fence | None = None,
    ) -> None:
        """``fence``: with leader election, whether this replica still leads, with time enough
        left for a POST to finish under its Lease (rotator.ha.leader): prepared before the
        decision, held right before each POST."""
        self._client = client
        self._ledger = ledger
        self._backoff = backoff
        self._fence = fence

    async def rotate(self, account_id: str, key: KeyConfig, redecide: Redecide) -> Outcome:
        """Rotate ``account_id``'s key, decided from ``key``, exactly as the module describes."""
        try:
            return await self._rotate(account_id, key, redecide)
        except StateFileError as exc:
            # The account not had in time (another process holds it), or the ledger unreadable:
            # nothing was begun, nothing sent.
            return Outcome(error=exc)
        finally:
            # Every step after the intent, where the ledger is kept remotely (the ConfigMap). The
            # intent itself was committed before the POST; whatever becomes of this write, it
            # holds the gap.
            await self._ledger.commit_quietly()

    async def _rotate(self, account_id: str, key: KeyConfig, redecide: Redecide) -> Outcome:
        async with self._ledger.deciding(account_id):  # the ledger's lock: the first wait
            attempts = 0
            rotation: Rotation | None = None
            while True:
                # A first look, to know the credential to reserve for (and to reserve nothing
                # for an account that no longer rotates).
                first = self._decide_now(account_id, redecide, rotation)
                if isinstance(first, Outcome):
                    return first
                try:
                    async with self._client.reserve(first[1]) as slot:  # budget, 429 pause, slot
                        step = await self._attempt(account_id, key, redecide, slot, first[1], rotation)
                except Abandoned as exc:  # shutdown while waiting for the reservation
                    return Outcome(rotation, error=exc)
                if isinstance(step, Outcome):
                    return step
                if isinstance(step, _Lost):
                    # Confirming reads, outside the reservation (they make their own).
                    return await self._confirm(account_id, first[1], step.rotation, step.error)
                if step is None:
                    continue  # a reload changed the credential: reserve with the new one
                rotation, failure = step
                attempts += 1
                if isinstance(failure, Abandoned) or attempts == ROTATE_ATTEMPTS or self._client.stopping:
                    return Outcome(rotation, error=failure)
                if isinstance(failure, ConnectError):
                    try:  # no connection: a backoff, holding no slot, before reserving again
                        await self._client.pause(self._backoff.initial)
                    except Abandoned as stopped:
                        return Outcome(rotation, error=stopped)
                # Known not applied: reserve again (a 429's pause is waited out there), decide
                # again, then send again.

    async def _attempt(
        self,
        account_id: str,
        key: KeyConfig,
        redecide: Redecide,
        slot: Reservation,
        reserved: Credential,
        rotation: Rotation | None,
    ) -> Outcome | _Lost | tuple[Rotation, RotatorError] | None:
        """One POST under its reservation, decided now: its Outcome; its lost answer; the intent
        known not applied and why (to send again); or None, not sent, to reserve again."""
        refused = await self._prepare()  # the ledger's pending writes, the Lease's renewal
        if refused is not None:
            return Outcome(rotation, error=refused)
        # Nothing is awaited from here to the send but the intent's commit where the ledger is
        # remote; after it, the decision is taken once more (``_final``).
        verdict = self._decide_now(account_id, redecide, rotation)
        if isinstance(verdict, Outcome):
            return verdict
        if verdict[1].fingerprint != reserved.fingerprint:
            return None
        record = self._ledger.record(account_id)
        try:
            rotation = self._ledger.begin(account_id, at=verdict[2], rotates_from=_rotates_from(key, record))
        except RotatorError as exc:
            return Outcome(rotation, error=exc)  # no intent on record: nothing is sent
        try:
            await self._ledger.commit()  # the ConfigMap: a write; the state file: written already
        except StateFileError as exc:
            refusal = StateFileError(f"the intent could not be recorded: {exc}")
            return Outcome(self._not_sent(account_id, rotation, f"not sent: {refusal}"), error=refusal)
        final = self._final(account_id, redecide, rotation, reserved, record)
        if final is not None:
            return final
        rotation = self._ledger.sent(account_id, rotation)
        try:
            answer = await slot.rotate(account_id)
        except (RateLimitedError, ConnectError, Abandoned) as exc:
            _log.warning("rotate_not_applied", error=str(exc), error_type=type(exc).__name__)
            return self._not_sent(account_id, rotation, str(exc)), exc
        except APIError as exc:
            return Outcome(self._not_sent(account_id, rotation, str(exc)), error=exc)
        except CloudflareError as exc:
            _log.warning("rotate_answer_lost", error=str(exc), error_type=type(exc).__name__)
            return _Lost(self._ledger.unconfirmed(account_id, rotation, why=str(exc)), exc)
        rotation = self._ledger.done(
            account_id, rotation, at=answer.observed_at, why="Cloudflare answered 200"
        )
        return Outcome(rotation, answer=answer)

    def _decide_now(
        self,
        account_id: str,
        redecide: Redecide,
        rotation: Rotation | None,
        before: AccountRecord | None = None,
    ) -> tuple[Decision, Credential, datetime] | Outcome:
        """Decide with the config in force, the account's fresh record and the clock now: what to
        send with, and when it was decided; or the Outcome of not rotating. ``before``: the record
        as it was before this attempt's own intent, which must not hold its own POST back."""
        try:
            record = self._ledger.record(account_id)
            if (
                before is not None
                and record.rotation is not None
                and record.rotation.id == _rotation_id(rotation)
            ):
                record = replace(record, rotation=before.rotation)
            now = self._client.server_now()
            verdict = redecide(record, now)
        except RotatorError as exc:
            return Outcome(rotation, error=exc)
        if verdict is None:
            return Outcome(rotation, removed=True)
        decision, credential = verdict
        if not decision.rotate:
            return Outcome(rotation, redecided=decision)
        return decision, credential, now

    def _final(
        self,
        account_id: str,
        redecide: Redecide,
        rotation: Rotation,
        reserved: Credential,
        before: AccountRecord,
    ) -> Outcome | None:
        """The last decision, with nothing left to wait for: decided again (the intent's commit
        may have waited), not shutting down, fenced. None: send now; else the intent, unsent."""
        verdict = self._decide_now(account_id, redecide, rotation, before)
        why: str | None = None
        refusal: RotatorError | None = None
        if isinstance(verdict, Outcome):
            why = "not sent: decided again right before sending"
        elif verdict[1].fingerprint != reserved.fingerprint:
            # Not sent, known not applied: the next check sends it with the new credential.
            refusal = ConnectError("not sent: a reload changed the credential while the intent was recorded")
            why = str(refusal)
        elif self._client.stopping:
            refusal = Abandoned("not sent: rotator is shutting down")
            why = str(refusal)
        elif self._fence is not None and not self._fence.holds():
            refusal = NotLeading("this replica no longer holds the Lease with time enough left to send it")
            why = f"not sent: {refusal}"
        if why is None:
            return None
        settled = self._not_sent(account_id, rotation, why)
        if isinstance(verdict, Outcome):
            return replace(verdict, rotation=settled)
        return Outcome(settled, error=refusal)

    def _not_sent(self, account_id: str, rotation: Rotation, why: str) -> Rotation:
        return self._ledger.not_applied(account_id, rotation, at=self._client.server_now(), why=why)

    async def _prepare(self) -> RotatorError | None:
        """The waits a decision must not come before: the ledger's pending writes committed (where
        it is kept remotely), the Lease renewed if it would not outlast a request. Why the
        rotation must not go on, if it must not."""
        try:
            await self._ledger.commit()
        except StateFileError as exc:
            return StateFileError(f"the ledger could not be written, so no intent can be: {exc}")
        if self._fence is not None and not await self._fence.prepare():
            return NotLeading("this replica no longer holds the Lease")
        return None

    async def _confirm(
        self, account_id: str, credential: Credential, rotation: Rotation, lost: CloudflareError
    ) -> Outcome:
        """Reads right after a lost answer: they may show the rotation; they never license a resend."""
        reason = f"the rotate POST's answer was lost ({lost})"
        for read in range(CONFIRMING_READS):
            if self._client.stopping:
                reason += "; not confirmed at shutdown"
                break
            try:
                if read:
                    await self._client.pause(self._backoff.initial)
                after = await self._client.get_keys(account_id, credential)
            except CloudflareError as exc:
                reason += f", and re-reading the key configuration to confirm failed ({exc})"
                break
            record = self._ledger.observe(account_id, after)
            settled = record.rotation
            if settled is not None and settled.id == rotation.id and not settled.state.open:
                if settled.state is State.DONE:
                    return Outcome(settled, answer=after)
                return Outcome(settled, error=RotationUnconfirmed(f"{reason}; {settled.why}"))
        else:
            reason += ", and re-reading the key configuration does not show it yet"
        return Outcome(
            rotation,
            error=RotationUnconfirmed(
                f"{reason}: it may have been applied; it holds the gap until a read settles it"
            ),
        )
