"""One check of one account: gather what Cloudflare reports, decide with the policy, act, record.

Everything an operator sees about a check comes from here: the log events and the metrics. A
rotation, once begun, runs to its end even when the check is cancelled (shutdown): it is shielded,
and ``drain`` waits for it, so nothing is ever left half-done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from rotator.cloudflare import CloudflareClient, KeyConfig
from rotator.config import Account
from rotator.credentials import Credential
from rotator.errors import CloudflareError, CredentialError, RotationUnconfirmed, RotatorError
from rotator.memory import RotationMemory
from rotator.metrics import Metrics
from rotator.policy import Decision, Reason, decide


@dataclass(frozen=True)
class CheckResult:
    """What one check found and did; ``rotator check --json`` prints its ``as_dict``."""

    account: Account
    key: KeyConfig | None = None
    decision: Decision | None = None
    rotated: KeyConfig | None = None
    interval_set: int | None = None
    error: RotatorError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        key, decision = self.key, self.decision
        return {
            "account": self.account.name,
            "account_id": self.account.account_id,
            "ok": self.ok,
            "days_until_next_rotation": decision.days_until_next_rotation if decision else None,
            "key_rotation_interval_days": key.key_rotation_interval_days if key else None,
            "last_key_rotation_at": _iso(key.last_key_rotation_at) if key else None,
            "dry_run": self.account.rotation.dry_run,
            "action": _action(decision),
            "window_open_until": _iso(decision.window.open_until) if decision and decision.window else None,
            "next_window_at": _iso(decision.window.next_opening) if decision and decision.window else None,
            "reason": decision.reason.value if decision else None,
            "message": decision.message if decision else None,
            "rotated": self.rotated is not None,
            "new_last_key_rotation_at": _iso(self.rotated.last_key_rotation_at) if self.rotated else None,
            "set_interval": decision.set_interval if decision else None,  # what a run would PUT
            "interval_set": self.interval_set,
            "error": str(self.error) if self.error else None,
        }


class Checker:
    def __init__(
        self,
        client: CloudflareClient,
        metrics: Metrics,
        memory: RotationMemory,
        credentials: Mapping[str, Credential | CredentialError],
        *,
        check_period: timedelta = timedelta(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``check_period``: the longest time until an account's next check (interval + jitter)."""
        self._check_period = check_period
        self._client = client
        self._metrics = metrics
        self._memory = memory
        self._credentials = credentials
        self._clock = clock
        self._rotations: set[asyncio.Task[CheckResult]] = set()
        self._log = structlog.get_logger("rotator")

    async def check(
        self, account: Account, *, act: bool = True, requested: bool = False, force: bool = False
    ) -> CheckResult:
        """Check one account; never raises for a failure of that account (it is logged and counted)."""
        # Bound for everything logged below, the client's retries included.
        with structlog.contextvars.bound_contextvars(account=account.name, account_id=account.account_id):
            return await self._check(account, act=act, requested=requested, force=force)

    async def _check(self, account: Account, *, act: bool, requested: bool, force: bool) -> CheckResult:
        log = self._log
        try:
            credential = self._credential(account)
            key = await self._client.get_keys(account.account_id, credential)
        except RotatorError as exc:
            log.error("check_failed", error=str(exc), error_type=type(exc).__name__)
            self._metrics.record_check(account, ok=False, at=self._clock())
            return CheckResult(account, error=exc)

        now = key.observed_at
        self._metrics.record_key(account, key)
        decision = decide(
            key,
            account.rotation,
            now=now,
            confirmed_rotation=self._memory.last_confirmed_rotation(account.account_id),
            possible_rotation=self._memory.last_possible_rotation(account.account_id),
            requested=requested,
            force=force,
            windows=account.windows,
            check_period=self._check_period,
        )
        log.info(
            "account_checked",
            days_until_next_rotation=decision.days_until_next_rotation,
            key_rotation_interval_days=key.key_rotation_interval_days,
            last_key_rotation_at=_iso(key.last_key_rotation_at),
            decision=_action(decision),
            reason=decision.reason.value,
            message=decision.message,
        )
        if not act:
            self._metrics.record_check(account, ok=True, at=now)
            return CheckResult(account, key, decision)

        result = CheckResult(account, key, decision)
        if decision.reason in (Reason.DRY_RUN, Reason.TOO_SOON, Reason.UNKNOWN, Reason.OUTSIDE_WINDOW):
            level = log.warning if decision.reason is Reason.UNKNOWN else log.info
            level("rotation_skipped", reason=decision.reason.value, message=decision.message)
            if decision.reason is Reason.DRY_RUN:
                self._metrics.record_rotation(account, "dry_run", now)
        if decision.rotate:
            # Shielded: a shutdown that cancels this check lets the rotation finish and be recorded.
            task = asyncio.create_task(self._rotate(account, credential, key, decision, result))
            self._rotations.add(task)
            task.add_done_callback(self._rotations.discard)
            result = await asyncio.shield(task)
        if decision.set_interval is not None and result.ok:
            result = await self._set_interval(account, credential, key, decision.set_interval, result)
        self._metrics.record_check(account, ok=result.ok, at=now)
        return result

    def update(
        self, credentials: Mapping[str, Credential | CredentialError], *, check_period: timedelta
    ) -> None:
        """Take a reloaded config's credentials and schedule; the memory of rotations stays."""
        self._credentials = credentials
        self._check_period = check_period

    async def drain(self, within: float) -> None:
        """Wait (at most ``within`` seconds) for rotations already begun to finish and be recorded."""
        if self._rotations:
            await asyncio.wait(set(self._rotations), timeout=within)

    @property
    def rotating(self) -> int:
        return len(self._rotations)

    def credential_for(self, account: Account) -> Credential | CredentialError:
        return self._credentials[account.account_id]

    def _credential(self, account: Account) -> Credential:
        credential = self._credentials[account.account_id]
        if isinstance(credential, CredentialError):
            raise credential
        return credential

    async def _rotate(
        self,
        account: Account,
        credential: Credential,
        before: KeyConfig,
        decision: Decision,
        result: CheckResult,
    ) -> CheckResult:
        log = self._log
        log.info("rotation_started", reason=decision.reason.value, message=decision.message)
        try:
            after = await self._client.rotate(account.account_id, credential, before)
        except CloudflareError as exc:
            if isinstance(exc, RotationUnconfirmed):
                # It may have happened: hold the minimum gap from now, and let the next check judge.
                self._memory.remember(account.account_id, before.observed_at, confirmed=False)
            log.error(
                "rotation_failed",
                error=str(exc),
                error_type=type(exc).__name__,
                possibly_applied=isinstance(exc, RotationUnconfirmed),
            )
            # Cloudflare's clock, like a success's timestamp: alerts compare the two.
            self._metrics.record_rotation(account, "error", before.observed_at)
            return replace(result, error=exc)
        rotated_at = after.last_key_rotation_at or after.observed_at
        self._memory.remember(account.account_id, rotated_at)
        self._metrics.record_rotation(account, "success", after.observed_at)
        self._metrics.record_key(account, after)
        log.info(
            "key_rotated",
            reason=decision.reason.value,
            previous_last_key_rotation_at=_iso(before.last_key_rotation_at),
            last_key_rotation_at=_iso(after.last_key_rotation_at),
            days_until_next_rotation=after.days_until_next_rotation,
        )
        return replace(result, rotated=after)

    async def _set_interval(
        self,
        account: Account,
        credential: Credential,
        key: KeyConfig,
        days: int,
        result: CheckResult,
    ) -> CheckResult:
        log = self._log
        try:
            after = await self._client.set_interval(account.account_id, credential, days)
        except CloudflareError as exc:
            log.error("interval_update_failed", error=str(exc), error_type=type(exc).__name__, wanted=days)
            return replace(result, error=exc)
        self._metrics.record_key(account, after)
        log.info(
            "interval_updated",
            previous_key_rotation_interval_days=key.key_rotation_interval_days,
            key_rotation_interval_days=days,
        )
        return replace(result, interval_set=days)


def _action(decision: Decision | None) -> str | None:
    if decision is None:
        return None
    return "rotate" if decision.rotate else "skip"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
