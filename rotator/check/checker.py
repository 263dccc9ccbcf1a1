"""One check of one account: gather, decide, act, record.

- **Gather**: read the key configuration from Cloudflare, and take what it shows into the ledger
  (which may settle a rotation left unconfirmed).
- **Decide**: the policy, a pure function of the read, the ledger's record and the account's settings.
- **Act**: rotate through the one rotation protocol (rotator.check.rotation), and enforce the interval.
  Both look up the account's config again right before they send: a reload that removed the
  account or set ``dry_run`` while the check waited is obeyed.
- **Record**: one ``CheckResult``, turned into metrics once, at the end, and only while the account is
  still configured (a removed account's series stay gone).

A rotation, once begun, runs to its end even when the check is cancelled (shutdown): it is shielded,
and ``drain`` waits for it. ``check`` never raises for a failure of an account: every failure is a
logged, counted result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from rotator.check.rotation import Fence, Outcome, RotationProtocol
from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import Credential
from rotator.config.model import Account
from rotator.core.keys import DAY, KeyConfig, cloudflare_rotates_at
from rotator.core.policy import Decision, Reason, decide
from rotator.core.records import AccountRecord, Rotation, State, iso
from rotator.errors import CloudflareError, CredentialError, InternalError, RotatorError
from rotator.ledger.ledger import Ledger
from rotator.metrics.families import Metrics

_NEVER = object()  # no held-back rotation counted yet for an account

# Decisions that hold a due rotation back, each logged as `rotation_skipped`.
_HELD = (Reason.DRY_RUN, Reason.TOO_SOON, Reason.UNKNOWN, Reason.OUTSIDE_WINDOW, Reason.UNSETTLED)


@dataclass(frozen=True)
class CheckResult:
    """What one check found and did; ``rotator check --json`` prints its ``as_dict``."""

    account: Account
    key: KeyConfig | None = None
    decision: Decision | None = None
    record: AccountRecord | None = None  # the ledger's record at the end of the check
    rotation: Outcome | None = None  # set when the check tried to rotate
    interval_set: int | None = None
    error: RotatorError | None = None
    # The latest the daemon checks the account again: this check plus check_interval and jitter.
    next_check_by: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def rotated(self) -> bool:
        return self.rotation is not None and self.rotation.applied

    @property
    def seen(self) -> KeyConfig | None:
        """The configuration as rotator judges it: a stale read corrected by the ledger."""
        if self.key is None:
            return None
        return self.key.as_of(self.record.anchor if self.record else None)

    def next_rotation(self) -> tuple[str, datetime] | None:
        """Who rotates the key next, ``rotator`` or ``cloudflare``, and when (from this check's
        view: the earliest time rotator would, at the first check from then, within a window if
        any); None when it cannot be told (a failed check, an unknown or unsettled state).

        With an interval a run would PUT, Cloudflare's own time is the one after the PUT."""
        decision, seen = self.decision, self.seen
        if decision is None or seen is None:
            return None
        now = seen.observed_at
        if decision.rotate:
            return "rotator", now
        cloudflare_at = cloudflare_rotates_at(seen)
        if decision.set_interval is not None and seen.last_key_rotation_at is not None:
            cloudflare_at = seen.last_key_rotation_at + decision.set_interval * DAY
        if cloudflare_at is None or decision.reason in (Reason.UNKNOWN, Reason.UNSETTLED):
            return None
        policy = self.account.policy
        if policy.dry_run:
            return "cloudflare", cloudflare_at
        rotator_at = max(now, cloudflare_at - policy.threshold_days * DAY)
        if decision.reason is Reason.TOO_SOON:
            last = max(t for t in (seen.last_key_rotation_at, self.record and self.record.anchor) if t)
            rotator_at = max(rotator_at, last + policy.min_days_between_rotations * DAY)
        windows = self.account.windows
        if windows and rotator_at < cloudflare_at:
            # Due outside a window (now, or when it falls due later): the next window that opens
            # in time, else the last check before Cloudflare would (policy.decide).
            period = self.next_check_by - now if self.next_check_by else timedelta(0)
            state = windows.state(rotator_at)
            if state.open_until is None:
                opening = state.next_opening
                if opening is not None and opening + period < cloudflare_at:
                    rotator_at = max(rotator_at, opening)
                else:
                    rotator_at = max(now, cloudflare_at - period)
        return ("rotator", rotator_at) if rotator_at < cloudflare_at else ("cloudflare", cloudflare_at)

    def as_dict(self) -> dict[str, Any]:
        key, decision, seen = self.key, self.decision, self.seen
        rotation = self.record.rotation if self.record else None
        planned = self.next_rotation()
        return {
            "account": self.account.name,
            "account_id": self.account.account_id,
            "ok": self.ok,
            "days_until_next_rotation": decision.days_until_next_rotation if decision else None,
            "key_rotation_interval_days": key.key_rotation_interval_days if key else None,
            "last_key_rotation_at": iso(key.last_key_rotation_at) if key else None,
            "cloudflare_rotates_at": iso(cloudflare_rotates_at(seen)) if seen else None,
            "dry_run": self.account.policy.dry_run,
            "action": _action(decision),
            "window_open_until": iso(decision.window.open_until) if decision and decision.window else None,
            "next_window_at": iso(decision.window.next_opening) if decision and decision.window else None,
            "reason": decision.reason.value if decision else None,
            "message": decision.message if decision else None,
            "rotated": self.rotated,
            "new_last_key_rotation_at": iso(_rotated_at(self.rotation)) if self.rotated else None,
            "set_interval": decision.set_interval if decision else None,  # what a run would PUT
            "next_check_by": iso(self.next_check_by) if self.next_check_by else None,
            "next_rotation_by": planned[0] if planned else None,
            "next_rotation_at": iso(planned[1]) if planned else None,
            "interval_set": self.interval_set,
            # The ledger's latest rotation of this account: its state shows one left unconfirmed.
            "rotation": rotation.to_json() if rotation else None,
            "error": str(self.error) if self.error else None,
        }


class Checker:
    def __init__(
        self,
        client: CloudflareClient,
        metrics: Metrics,
        ledger: Ledger,
        credentials: Mapping[str, Credential | CredentialError],
        *,
        accounts: Callable[[str], Account | None] | None = None,
        check_period: timedelta = timedelta(0),
        fence: Fence | None = None,
    ) -> None:
        """``accounts`` looks an account up in the config in force (None: no longer configured);
        ``check_period``: the longest time until an account's next check (interval + jitter);
        ``fence``: with leader election, prepared before and held right before each rotate POST
        (rotator.check.rotation)."""
        self._client = client
        self._metrics = metrics
        self._ledger = ledger
        self._credentials = credentials
        self._accounts = accounts
        self._check_period = check_period
        self._protocol = RotationProtocol(client, ledger, client.backoff, fence)
        self._rotations: set[asyncio.Task[CheckResult]] = set()
        # Per account, the key (its last_key_rotation_at) whose rotation a dry run held back.
        self._held_back: dict[str, datetime | None] = {}
        self._log = structlog.get_logger("rotator")

    async def check(
        self, account: Account, *, act: bool = True, requested: bool = False, force: bool = False
    ) -> CheckResult:
        """Check one account; never raises for a failure of that account (it is logged and counted)."""
        # Bound for everything logged below, the client's retries and the ledger's transitions too.
        # (Bound and reset by hand: structlog's bound_contextvars first reads every context
        # variable of the task, twice the cost.)
        bound = structlog.contextvars.bind_contextvars(account=account.name, account_id=account.account_id)
        try:
            try:
                result = await self._check(account, act=act, requested=requested, force=force)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the other accounts, nor the daemon
                self._log.error("check_crashed", error=f"{type(exc).__name__}: {exc}")
                result = CheckResult(account, error=InternalError(f"{type(exc).__name__}: {exc}"))
            self._record(result)
            return result
        finally:
            structlog.contextvars.reset_contextvars(**bound)

    def update(
        self,
        credentials: Mapping[str, Credential | CredentialError],
        *,
        check_period: timedelta,
        settle_time: timedelta,
    ) -> None:
        """Take a reloaded config's credentials, schedule and settle time; the ledger stays."""
        self._credentials = credentials
        self._check_period = check_period
        self._ledger.settle_time = settle_time

    def set_check_period(self, check_period: timedelta) -> None:
        """The longest time until an account's next check, by Cloudflare's clock: the config's,
        times how fast that clock runs (rotator.check.due measures it)."""
        self._check_period = check_period

    async def drain(self, within: float) -> None:
        """Wait (at most ``within`` seconds) for rotations already begun to finish and be recorded."""
        if self._rotations:
            await asyncio.wait(set(self._rotations), timeout=within)

    @property
    def rotating(self) -> int:
        return len(self._rotations)

    def credential_for(self, account: Account) -> Credential | CredentialError:
        credential = self._credentials.get(account.account_id)
        if credential is None:
            return CredentialError(f"account {account.name} is no longer configured")
        return credential

    # ----------------------------------------------------------------------- the four steps

    async def _check(self, account: Account, *, act: bool, requested: bool, force: bool) -> CheckResult:
        log = self._log
        account_id = account.account_id
        # Gather.
        try:
            credential = self._credential(account)
            key = await self._client.get_keys(account_id, credential)
            before = self._ledger.record(account_id).rotation
            record = self._ledger.observe(account_id, key)
        except RotatorError as exc:
            log.error("check_failed", error=str(exc), error_type=type(exc).__name__)
            return CheckResult(account, error=exc)
        confirmed = _settled_by_read(before, record.rotation)
        if confirmed is not None:
            log.info(
                "key_rotated",
                reason="confirmed",
                rotated_at=iso(confirmed.settled_at),
                last_key_rotation_at=iso(key.last_key_rotation_at),
                message=f"a rotation left unconfirmed is settled: {confirmed.why}",
            )
        # Decide.
        decision = self._decide(account, key, record, requested=requested, force=force)
        log.info(
            "account_checked",
            days_until_next_rotation=decision.days_until_next_rotation,
            key_rotation_interval_days=key.key_rotation_interval_days,
            last_key_rotation_at=iso(key.last_key_rotation_at),
            decision=_action(decision),
            reason=decision.reason.value,
            message=decision.message,
        )
        result = CheckResult(
            account, key, decision, record, next_check_by=key.observed_at + self._check_period
        )
        if confirmed is not None:
            result = replace(result, rotation=Outcome(confirmed, answer=key))
        if not act:
            return result
        # Act.
        if decision.reason in _HELD:
            level = log.warning if decision.reason in (Reason.UNKNOWN, Reason.UNSETTLED) else log.info
            level("rotation_skipped", reason=decision.reason.value, message=decision.message)
        if decision.rotate:
            # Shielded: a shutdown that cancels this check lets the rotation finish and be recorded.
            task = asyncio.create_task(self._rotate(account, key, decision, result, requested, force))
            self._rotations.add(task)
            task.add_done_callback(self._rotations.discard)
            result = await asyncio.shield(task)
        if result.decision is not None and result.decision.set_interval is not None and result.ok:
            result = await self._set_interval(account, key, result)
        return replace(result, record=self._ledger.record(account_id))

    def _decide(
        self,
        account: Account,
        key: KeyConfig,
        record: AccountRecord,
        *,
        requested: bool,
        force: bool,
        now: datetime | None = None,
    ) -> Decision:
        """``now``: the read's time (the check's decision), or the server-clock estimate at the
        moment of deciding again (right before a send)."""
        return decide(
            key,
            account.policy,
            now=key.observed_at if now is None else now,
            record=record,
            requested=requested,
            force=force,
            windows=account.windows,
            check_period=self._check_period,
        )

    async def _rotate(
        self,
        account: Account,
        key: KeyConfig,
        decision: Decision,
        result: CheckResult,
        requested: bool,
        force: bool,
    ) -> CheckResult:
        log = self._log
        log.info("rotation_started", reason=decision.reason.value, message=decision.message)

        def redecide(record: AccountRecord, now: datetime) -> tuple[Decision, Credential] | None:
            current = self._current(account)
            if current is None:
                return None
            again = self._decide(current, key, record, requested=requested, force=force, now=now)
            return again, self._credential(current)

        outcome = await self._protocol.rotate(account.account_id, key, redecide)
        result = replace(result, rotation=outcome)
        if outcome.removed:
            log.info("rotation_skipped", reason="removed", message="the account was removed from the config")
            return result
        if outcome.redecided is not None:
            again = outcome.redecided
            log.info(
                "rotation_skipped",
                reason=again.reason.value,
                message=f"decided again right before sending: {again.message}",
            )
            return replace(result, decision=again)
        if outcome.error is not None:
            log.error(
                "rotation_failed",
                error=str(outcome.error),
                error_type=type(outcome.error).__name__,
                possibly_applied=outcome.possibly_applied,
            )
            return replace(result, error=outcome.error)
        answer = outcome.answer
        assert answer is not None
        assert outcome.rotation is not None
        log.info(
            "key_rotated",
            reason=decision.reason.value,
            rotated_at=iso(outcome.rotation.settled_at),
            previous_last_key_rotation_at=iso(key.last_key_rotation_at),
            last_key_rotation_at=iso(_rotated_at(outcome)),
            # A 200 whose body still shows the old rotation: a lagging replica's echo, not a failure.
            answer_stale=answer.predates(outcome.rotation.settled_at),
        )
        return result

    async def _set_interval(self, account: Account, key: KeyConfig, result: CheckResult) -> CheckResult:
        log = self._log
        current = self._current(account)
        wanted = current.policy.key_rotation_interval_days if current else None
        if (
            current is None
            or current.policy.dry_run
            or wanted is None
            or wanted == key.key_rotation_interval_days
        ):
            return result  # the config in force now wants no PUT

        def still_wanted() -> Credential | None:
            # Asked again when nothing is left to wait for, right before each PUT leaves.
            now = self._current(account)
            if now is None or now.policy.dry_run or now.policy.key_rotation_interval_days != wanted:
                return None
            return self._credential(now)

        try:
            after = await self._client.enforce_interval(account.account_id, wanted, still_wanted)
        except (CloudflareError, CredentialError) as exc:
            log.error("interval_update_failed", error=str(exc), error_type=type(exc).__name__, wanted=wanted)
            return replace(result, error=exc)
        if after is None:
            log.info(
                "interval_update_skipped",
                wanted=wanted,
                message="decided again right before sending: the config in force wants no PUT",
            )
            return result
        log.info(
            "interval_updated",
            previous_key_rotation_interval_days=key.key_rotation_interval_days,
            key_rotation_interval_days=wanted,
        )
        return replace(
            result,
            key=replace(key, key_rotation_interval_days=after.key_rotation_interval_days or wanted),
            interval_set=wanted,
        )

    def _record(self, result: CheckResult) -> None:
        """Metrics, once per check, from its result; not for an account no longer configured."""
        account = result.account
        if self._current(account) is None:
            return
        at = result.key.observed_at if result.key else self._client.server_now()
        seen = result.seen
        if seen is not None:
            self._metrics.record_key(account, seen)
        self._metrics.record_check(account, ok=result.key is not None and result.ok, at=at)
        outcome = result.rotation
        if outcome is not None and outcome.applied and outcome.rotation is not None:
            self._metrics.record_rotation(account, "success", outcome.rotation.settled_at or at)
        elif outcome is not None and outcome.error is not None:
            self._metrics.record_rotation(account, "error", at)
        elif (
            result.decision is not None
            and result.decision.reason is Reason.DRY_RUN
            and result.rotation is None
            and seen is not None
            and self._held_back.get(account.account_id, _NEVER) != seen.last_key_rotation_at
        ):
            # One held-back rotation per key: a dry run finds the same key due at every check
            # until Cloudflare rotates it, and that is one rotation rotator did not make.
            self._held_back[account.account_id] = seen.last_key_rotation_at
            self._metrics.record_rotation(account, "dry_run", at)
        if result.record is not None:
            self._metrics.record_unconfirmed(account, result.record.open is not None)

    def _current(self, account: Account) -> Account | None:
        """The account as the config in force now has it; None once it was removed."""
        if self._accounts is None:
            return account
        current = self._accounts(account.account_id)
        return current if current is not None and current.name == account.name else None

    def _credential(self, account: Account) -> Credential:
        credential = self.credential_for(account)
        if isinstance(credential, CredentialError):
            raise credential
        return credential


def _settled_by_read(before: Rotation | None, after: Rotation | None) -> Rotation | None:
    """The rotation a read just showed applied, when it had been left unconfirmed."""
    if before is None or after is None or before.id != after.id or not before.state.open:
        return None
    return after if after.state is State.DONE else None


def _rotated_at(outcome: Outcome | None) -> datetime | None:
    """When the rotation happened: Cloudflare's own time if its answer shows it, else ours."""
    if outcome is None or outcome.rotation is None:
        return None
    settled, answer = outcome.rotation.settled_at, outcome.answer
    if answer is not None and answer.last_key_rotation_at is not None and not answer.predates(settled):
        return answer.last_key_rotation_at
    return settled


def _action(decision: Decision | None) -> str | None:
    if decision is None:
        return None
    return "rotate" if decision.rotate else "skip"
