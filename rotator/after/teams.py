"""Each account's team domain: where its certs are published.

Set per account in the config (``team_domain``), or read from Cloudflare's organization
(``GET /accounts/{id}/access/organizations``, ``result.auth_domain``): once, then again every
``publication.team_domain_refresh`` (a week by default), since a team renamed in the dashboard is
rare. A failed read is logged (``team_domain_unavailable``) and tried again at a later check, no
sooner than ``RETRY_SECONDS``; the last known domain, if any, stays in use meanwhile. An
``auth_domain`` that is not a host name (the rule of ``accounts[].team_domain``) is treated the same
way, logged as ``team_domain_invalid``: no certs are read from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import Credential
from rotator.config.followup_settings import team_domain_problem
from rotator.config.model import Account
from rotator.errors import CredentialError, RotatorError

RETRY_SECONDS = 600.0


class InvalidTeamDomain(RotatorError):
    """The organization's ``auth_domain`` is not a host name (``team_domain_problem``)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"the organization's auth_domain is {problem}")
        self.problem = problem


@dataclass
class _Known:
    domain: str | None
    next_read: float


class TeamDomains:
    def __init__(
        self,
        client: CloudflareClient,
        credential_for: Callable[[Account], Credential | CredentialError],
        *,
        refresh: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._credential_for = credential_for
        self._refresh = refresh
        self._monotonic = monotonic
        self._known: dict[str, _Known] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._log = structlog.get_logger("rotator")

    async def domain(self, account: Account) -> str | None:
        """The account's team domain, or None while it is not known."""
        if account.team_domain is not None:
            return account.team_domain
        lock = self._locks.setdefault(account.account_id, asyncio.Lock())
        async with lock:
            known = self._known.get(account.account_id)
            now = self._monotonic()
            if known is not None and now < known.next_read:
                return known.domain
            previous = known.domain if known else None
            try:
                domain = await self._read(account)
            except InvalidTeamDomain as exc:
                # Cloudflare's answer, used unchecked, steered the certs read to another host and
                # port ("127.0.0.1:PORT/x?", "user:pw@host"), and a name httpx refuses killed the
                # reader task. Not repeated: it is the answer of an endpoint that misbehaves.
                self._log.error(
                    "team_domain_invalid", problem=exc.problem, kept=previous, retry_seconds=RETRY_SECONDS
                )
                self._known[account.account_id] = _Known(previous, now + min(RETRY_SECONDS, self._refresh))
                return previous
            except RotatorError as exc:
                self._log.warning(
                    "team_domain_unavailable",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    kept=previous,
                )
                self._known[account.account_id] = _Known(previous, now + min(RETRY_SECONDS, self._refresh))
                return previous
            if domain != previous:
                self._log.info("team_domain_found", team_domain=domain, previous=previous)
            self._known[account.account_id] = _Known(domain, now + self._refresh)
            return domain

    async def _read(self, account: Account) -> str:
        credential = self._credential_for(account)
        if isinstance(credential, CredentialError):
            raise credential
        domain = await self._client.get_team_domain(account.account_id, credential)
        if domain is None:
            raise RotatorError("the organization's answer has no auth_domain")
        problem = team_domain_problem(domain)
        if problem is not None:
            raise InvalidTeamDomain(problem)
        return domain

    def forget(self, account: Account) -> None:
        self._known.pop(account.account_id, None)
        self._locks.pop(account.account_id, None)
