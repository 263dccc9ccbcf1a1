"""What follows a check, outside the checker: publication, rotations made elsewhere, notifications.

The daemon's one hook: ``before_check(account)`` (a baseline read of the account's certs before its
first check) and ``after_check(result)`` (everything else, started in the background; it returns at
once). Only ``CheckResult`` crosses over, so the checker's inside can change freely. ``rotator rotate``
uses the same hook, so a rotation by hand is notified and verified as the daemon's are; it then
waits for the verdict (``published``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
import structlog
from prometheus_client import CollectorRegistry

from rotator.after.elsewhere import ElsewhereWatch
from rotator.after.events import EventSink, Sinks, events_from_check
from rotator.after.notify import Notifier, NotifyMetrics, Webhook, load_webhooks
from rotator.after.publication import CertsReader, Publication, PublicationMetrics, Verdict
from rotator.after.teams import TeamDomains
from rotator.check.checker import CheckResult
from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import Credential
from rotator.config.model import Account, Config
from rotator.errors import CredentialError
from rotator.metrics.families import Metrics

# At shutdown, notifications still queued get this long to go out.
NOTIFY_DRAIN_SECONDS = 2.0


class FollowUp:
    def __init__(
        self,
        config: Config,
        client: CloudflareClient,
        metrics: Metrics,
        registry: CollectorRegistry,
        credential_for: Callable[[Account], Credential | CredentialError],
        *,
        certs_transport: httpx.AsyncBaseTransport | None = None,
        notify_transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        also: EventSink | None = None,
    ) -> None:
        """Reads every webhook's secret now: CredentialError, naming each missing one, refuses to start.
        ``also``: a sink that hears every event the webhooks do (the status page, Kubernetes Events)."""
        settings = config.settings
        self.notifier = Notifier(
            read_webhooks(config, environ),
            NotifyMetrics(registry),
            source=settings.notify.source,
            queue_size=settings.notify.queue_size,
            transport=notify_transport,
        )
        self._sink: EventSink = self.notifier if also is None else Sinks((self.notifier, also))
        self._elsewhere = ElsewhereWatch(metrics, self._sink)
        self._publication_metrics = PublicationMetrics(registry)
        self.publication: Publication | None = None
        self._teams: TeamDomains | None = None
        if settings.publication.enabled:
            self._teams = TeamDomains(
                client, credential_for, refresh=settings.publication.team_domain_refresh
            )
            self.publication = Publication(
                settings.publication,
                CertsReader(settings.publication, transport=certs_transport),
                self._publication_metrics,
                self._sink,
                self._teams.domain,
            )
        self.configure(config.accounts)

    def start(self) -> None:
        self.notifier.start()

    def configure(self, accounts: tuple[Account, ...]) -> None:
        """The configured accounts (at start and after a reload): their series exist from now."""
        self._configured = {account.account_id for account in accounts}
        if self.publication is not None:
            self._publication_metrics.configure(accounts)

    def forget(self, account: Account) -> None:
        """An account left the config: added again, it starts afresh, as after a restart."""
        self._elsewhere.forget(account)
        if self.publication is not None:
            self.publication.forget(account)
        if self._teams is not None:
            self._teams.forget(account)

    def wants_baseline(self, account: Account) -> bool:
        """Whether ``before_check`` has anything to do for this account (most checks: no)."""
        return self.publication is not None and self.publication.wants_baseline(account)

    async def before_check(self, account: Account) -> None:
        try:
            if self.publication is not None:
                await self.publication.before_check(account)
        except Exception as exc:  # what follows a check never stops the check
            _failed("before_check", account, exc)

    def after_check(self, result: CheckResult) -> None:
        try:
            for event in events_from_check(result):
                self._sink.emit(event)
            if result.account.account_id not in self._configured:
                return  # a check that was under way when its account left the config: nothing to follow
            self._elsewhere.observe(result)
            if self.publication is not None:
                self.publication.after_check(result)
        except Exception as exc:  # nor the daemon
            _failed("after_check", result.account, exc)

    async def published(self, account: Account) -> Verdict | None:
        """The verdict on the account's latest rotation, once its watch ends (by the deadline);
        None when none is watched (no rotation, or the publication check is off)."""
        if self.publication is None:
            return None
        return await self.publication.verdict(account)

    async def aclose(self, drain: float = NOTIFY_DRAIN_SECONDS) -> None:
        """``drain``: how long notifications still queued get to go out."""
        if self.publication is not None:
            await self.publication.aclose()
        await self.notifier.aclose(drain)


def read_webhooks(config: Config, environ: Mapping[str, str] | None = None) -> list[Webhook]:
    """The config's webhooks with their secrets; CredentialError, a line per secret that cannot be
    read, each naming the file, as ``run`` refuses to start and ``validate`` says."""
    try:
        return load_webhooks(config.settings.notify, environ)
    except CredentialError as exc:
        raise CredentialError("\n".join(f"{config.path}: {line}" for line in str(exc).splitlines())) from None


def _failed(step: str, account: Account, exc: Exception) -> None:
    structlog.get_logger("rotator").error(
        "followup_failed",
        step=step,
        account=account.name,
        account_id=account.account_id,
        error=repr(exc),
    )
