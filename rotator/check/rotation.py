"""One rotation, at most one applied POST: the protocol every rotation goes through.

The daemon's rotations, ``rotator rotate`` and ``rotator rotate --force`` all come here. In order:

1. Hold the account in the ledger (one process and one coroutine at a time) and read its record
   fresh.
2. Decide again with the config in force *now* (a reload may have removed the account or set
   ``dry_run`` while the check waited) and that fresh record (another process may have rotated).
3. Record the intent, durably: from here on, a crash at any instant leaves a record that holds the
   gap. (In the ConfigMap, with leader election: written before going on, or nothing is sent.)
4. With leader election, fence: send only while this replica holds the Lease for longer than the
   POST can take (rotator.ha.leader); otherwise the intent is NOT_APPLIED and nothing is sent.
5. Send one POST, and settle the intent by what came back:
   - 200: DONE at the answer's time, whatever its body says (a lagging replica may echo the old
     configuration);
   - 429, no connection, not sent at shutdown: NOT_APPLIED, and sent again (a new intent) after the
     pause, at most ``ROTATE_ATTEMPTS`` POSTs in all;
   - a refusal (4xx, ``success: false``): NOT_APPLIED;
   - the answer lost (timeout, 5xx, dropped, unreadable): UNCONFIRMED. Never sent again here: two
     reads a backoff apart may show the rotation (DONE); otherwise it stays open, holding the gap,
     until later checks' reads settle it (rotator.ledger.ledger).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from rotator.cloudflare.client import Backoff, CloudflareClient
from rotator.cloudflare.credentials import Credential
from rotator.core.keys import KeyConfig
from rotator.core.policy import Decision
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
from rotator.ledger.ledger import AccountRecord, Ledger, Rotation, State

_log = structlog.get_logger("rotator")
# Rotate POSTs known not to have been applied may be sent again, this many in all, per check.
ROTATE_ATTEMPTS = 3
# Reads right after a lost answer, a backoff apart, that may show the rotation applied.
CONFIRMING_READS = 2

# Given the account's fresh record, the decision under the config in force now and the credential
# to send with; None when the account is no longer configured.
Redecide = Callable[[AccountRecord], "tuple[Decision, Credential] | None"]


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


def _rotates_from(key: KeyConfig, record: AccountRecord) -> datetime | None:
    """The last rotation this one rotates away from: the read's, or the ledger's if later."""
    anchor, last = record.anchor, key.last_key_rotation_at
    return anchor if anchor is not None and (last is None or anchor > last) else last


class RotationProtocol:
    def __init__(
        self,
        client: CloudflareClient,
        ledger: Ledger,
        backoff: Backoff,
        fence: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``fence``: with leader election, whether this replica still leads, with time enough
        left for a POST to finish under its Lease (rotator.ha.leader); awaited right before each POST."""
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
        async with self._ledger.deciding(account_id) as record:
            attempts = waits = 0
            rotation: Rotation | None = None
            while True:
                try:
                    verdict = redecide(record)
                except RotatorError as exc:
                    return Outcome(rotation, error=exc)
                if verdict is None:
                    return Outcome(rotation, removed=True)
                decision, credential = verdict
                if not decision.rotate:
                    return Outcome(rotation, redecided=decision)
                paused = self._client.paused_for(credential)
                if paused > 0 and waits < ROTATE_ATTEMPTS:
                    # Wait out the credential's 429 pause here, then decide again with the config
                    # in force after it: the POST leaves right after the decision, not minutes later.
                    waits += 1
                    try:
                        await self._client.pause(paused)
                    except Abandoned as exc:
                        return Outcome(rotation, error=exc)
                    record = self._ledger.record(account_id)
                    continue
                attempts += 1
                try:
                    rotation = self._ledger.begin(
                        account_id, at=self._client.server_now(), rotates_from=_rotates_from(key, record)
                    )
                except RotatorError as exc:
                    return Outcome(rotation, error=exc)  # no intent on record: nothing is sent
                refused = await self._durable_and_leading()
                if refused is not None:
                    rotation = self._ledger.not_applied(
                        account_id, rotation, at=self._client.server_now(), why=f"not sent: {refused}"
                    )
                    return Outcome(rotation, error=refused)
                rotation = self._ledger.sent(account_id, rotation)
                try:
                    answer = await self._client.rotate(account_id, credential)
                except (RateLimitedError, ConnectError, Abandoned) as exc:
                    _log.warning("rotate_not_applied", error=str(exc), error_type=type(exc).__name__)
                    rotation = self._ledger.not_applied(
                        account_id, rotation, at=self._client.server_now(), why=str(exc)
                    )
                    if isinstance(exc, Abandoned) or attempts == ROTATE_ATTEMPTS or self._client.stopping:
                        return Outcome(rotation, error=exc)
                    if isinstance(exc, ConnectError):
                        try:
                            await self._client.pause(self._backoff.initial)
                        except Abandoned as stopped:
                            return Outcome(rotation, error=stopped)
                    record = self._ledger.record(account_id)
                    continue  # known not applied: decide again, then send again
                except APIError as exc:
                    rotation = self._ledger.not_applied(
                        account_id, rotation, at=self._client.server_now(), why=str(exc)
                    )
                    return Outcome(rotation, error=exc)
                except CloudflareError as exc:
                    _log.warning("rotate_answer_lost", error=str(exc), error_type=type(exc).__name__)
                    rotation = self._ledger.unconfirmed(account_id, rotation, why=str(exc))
                    return await self._confirm(account_id, credential, rotation, exc)
                rotation = self._ledger.done(
                    account_id, rotation, at=answer.observed_at, why="Cloudflare answered 200"
                )
                return Outcome(rotation, answer=answer)
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    async def _durable_and_leading(self) -> RotatorError | None:
        """Why the POST must not leave now, if it must not: the intent could not be recorded where
        the ledger is kept remotely, or this replica no longer holds the Lease long enough."""
        try:
            await self._ledger.commit()
        except StateFileError as exc:
            return StateFileError(f"the intent could not be recorded: {exc}")
        if self._fence is not None and not await self._fence():
            return NotLeading("this replica no longer holds the Lease with time enough left to send it")
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
