"""The daemon: every account checked on its own schedule, served metrics, a clean shutdown.

rotator.check.schedule runs one job per account on the running event loop, on the monotonic clock
(a step of the system clock neither stops nor bunches the checks). One account's
failure never reaches another's job: ``Checker.check`` turns every failure of an account into a
logged, counted result. On SIGTERM or SIGINT the scheduler stops (which cancels running checks at
once, and with them every wait and backoff), a rotation already begun is let finish and be
recorded, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import httpx
import structlog
from prometheus_client import CollectorRegistry

from rotator import __version__, sighup
from rotator.after.events import Sinks
from rotator.after.followup import FollowUp
from rotator.after.kube_events import KubeEvents
from rotator.check.checker import Checker, CheckResult
from rotator.check.due import DueChecks
from rotator.check.schedule import Schedule
from rotator.cloudflare.client import Backoff, CloudflareClient
from rotator.config.capacity import config_warnings
from rotator.config.credentials import (
    Credential,
    read_auth_token,
    refuse_secret_names,
    require_credentials,
)
from rotator.config.model import Account, Config, load_config, read_config_file
from rotator.config.reload import ConfigChange, compare
from rotator.errors import ConfigError, CredentialError, HTTPStatusError, ListenError
from rotator.ha.election import Election
from rotator.ledger.ledger import Ledger
from rotator.logs import configure_logging
from rotator.metrics.families import Metrics
from rotator.web.server import StatusServer, why_not_listening
from rotator.web.status import StatusBoard

if TYPE_CHECKING:
    from rotator.ha.kube import KubeAPI

_T = TypeVar("_T")

# How often the config file is compared with the running config, in seconds.
CONFIG_POLL_SECONDS = 2.0
# Checks admitted at once per credential, per request slot (cloudflare.max_concurrency).
ADMITTED_PER_SLOT = 4
# The longest a check waits for its account's first certs read (the publication check's baseline).
BASELINE_WAIT_SECONDS = 2.0
# The longest a reload may take to read the config file and the secrets it names (_off_the_loop).
FILE_READ_SECONDS = 10.0
# Until Cloudflare has answered once, a failed check is tried again this soon (at most).
STARTUP_RETRY_SECONDS = 15.0


def _fingerprint(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(read_config_file(path)).digest()
    except ConfigError as exc:  # not a regular file, or too large: the reload will say so
        return hashlib.sha256(str(exc).encode()).digest()
    except OSError:
        return None  # mid-swap or briefly absent: judge at the next poll


def _load_with_credentials(path: Path) -> tuple[Config, dict[str, Credential]]:
    config = load_config(path)
    return config, require_credentials(config)


async def _off_the_loop(read: Callable[[Path], _T], path: Path) -> _T:
    """``read(path)`` in a thread, within FILE_READ_SECONDS: the config file and the secrets it
    names are files a person may point anywhere (a network file system that hangs, say), and the
    loop serves /healthz and runs every check meanwhile. ConfigError when time runs out; the thread,
    stuck in a read no one can interrupt, is left to finish on its own (rotator.files opens without
    blocking, so a named pipe or a device never gets that far)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(read, path), FILE_READ_SECONDS)
    except TimeoutError:
        raise ConfigError(
            f"{path}: reading the config file and the secrets it names took longer than "
            f"{FILE_READ_SECONDS:g}s: expected regular files on a file system that answers"
        ) from None


def _fingerprints(credentials: Mapping[str, Credential | CredentialError]) -> dict[str, str]:
    return {k: v.fingerprint for k, v in credentials.items() if isinstance(v, Credential)}


def build_client(
    config: Config, metrics: Metrics | None, transport: httpx.AsyncBaseTransport | None = None
) -> CloudflareClient:
    cloudflare = config.settings.cloudflare
    return CloudflareClient(
        cloudflare.base_url,
        timeout=cloudflare.timeout,
        max_concurrency=cloudflare.max_concurrency,
        rate_limit=(cloudflare.rate_limit.requests, cloudflare.rate_limit.per),
        max_retry_after=cloudflare.max_retry_after,
        ca_bundle=str(cloudflare.ca_bundle) if cloudflare.ca_bundle else None,
        transport=transport,
        observer=metrics,
        backoff=Backoff.within(config.settings.schedule.check_interval),
    )


def lock_wait(config: Config) -> float:
    """How long a lock of ``state_file`` is waited for: another process holds byte 0 for one write,
    an account's byte for one rotation (a POST, at most ``cloudflare.timeout``, and its writes)."""
    return 2 * config.settings.cloudflare.timeout + 5


def _log_resumed(accounts: int, first: datetime) -> None:
    structlog.get_logger("rotator").info(
        "checks_resumed", accounts=accounts, first_check_at=first.isoformat().replace("+00:00", "Z")
    )


class Daemon:
    def __init__(
        self,
        config: Config,
        credentials: Mapping[str, Credential | CredentialError],
        *,
        registry: CollectorRegistry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        log_stream: TextIO | None = None,
        kubernetes: KubeAPI | None = None,
    ) -> None:
        """``kubernetes``: with leader election (rotator.ha.election.connect_kubernetes), only the
        leader checks and rotates, and the ledger is kept in the ConfigMap ``<lease_name>-ledger``."""
        self._config = config
        # Read once, at start (a new file needs a restart): CredentialError, exit 2, if unreadable.
        self._auth_token = read_auth_token(config)
        # The settings in force until a restart (rotator.config.reload.RESTART_REQUIRED) are this config's.
        self._started = config
        # The content of the config in force, and of the last one a reload read (applied or not),
        # shared by the file watcher and SIGHUP so that one edit is one reload.
        self._applied = _fingerprint(config.path)
        self._read = self._applied
        self._credentials = _fingerprints(credentials)
        self._registry = registry or CollectorRegistry()
        self._metrics = Metrics(self._registry)
        self._client = build_client(config, self._metrics, transport)
        self._kubernetes = kubernetes
        self._election: Election | None = None
        if kubernetes is not None:
            self._election = Election(kubernetes, config, self._metrics, on_ready=self._check_all_now)
        self._ledger = Ledger(
            config.settings.state_file,
            settle_time=timedelta(seconds=config.settings.settle_time),
            on_save_failed=self._metrics.state_save_failures.inc,
            lock_wait=lock_wait(config),
            store=self._election.store if self._election else None,
            owner=self._election.identity if self._election else None,
        )
        self._accounts = {a.account_id: a for a in config.accounts}
        self._checker = Checker(
            self._client,
            self._metrics,
            self._ledger,
            credentials,
            # The config in force when a check acts, not when it began: a reload may come between.
            accounts=lambda account_id: self._accounts.get(account_id),
            check_period=config.check_period,
            fence=self._election.fence if self._election else None,
        )
        self._warnings = config_warnings(config, credentials)
        # With leader election, what an operator should hear of is a Kubernetes Event too.
        self._kube_events: KubeEvents | None = None
        if kubernetes is not None and self._election is not None:
            self._kube_events = KubeEvents(
                kubernetes, config.settings.leader_election.lease_name, self._election.identity
            )
        # When each account is read next: the moment its decision could change (rotator.check.due).
        self._due = DueChecks(config)
        # The latest check of each account, served at / and /status, on Cloudflare's clock as
        # last seen (the simulated one in the demo); it hears the events that follow a check.
        self.status = StatusBoard(
            config.accounts,
            next_check=self._next_check,
            clock=self._client.server_now,
            leadership=self._election.leadership if self._election else None,
            ready=self._readiness_problem,
            warnings=self._warnings,
            publication=config.settings.publication.enabled,
        )
        # Publication, rotations elsewhere, notifications: fed each check's result (rotator.after.followup).
        self._followup = FollowUp(
            config,
            self._client,
            self._metrics,
            self._registry,
            self._checker.credential_for,
            also=self.status if self._kube_events is None else Sinks((self.status, self._kube_events)),
        )
        # Every secret is loaded now (the webhooks' and the HTTP token too): no name may be one.
        refuse_secret_names(config)
        self._scheduler = Schedule(
            self._scheduled_check,
            interval=config.settings.schedule.check_interval,
            jitter=config.settings.schedule.jitter,
        )
        self._stop = asyncio.Event()
        self._stop_reason = "finished"
        self._answered = False
        self._last_api_problem = "no check has finished yet"
        self._log = structlog.get_logger("rotator")
        self._log_stream = log_stream
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._background_baselines: set[asyncio.Future[None]] = set()
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._max_concurrency = config.settings.cloudflare.max_concurrency

    def stop(self, reason: str = "requested") -> None:
        self._stop_reason = reason
        self._stop.set()

    async def run(self, *, once: bool = False) -> int:
        """Run until stopped (or one pass, with ``once``); return the process's exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig.name)
        if not once:
            loop.add_signal_handler(signal.SIGHUP, self._request_reload, "sighup")
        settings = self._config.settings
        self._metrics.configure(self._config.accounts, settings.schedule.check_interval)
        self._followup.start()
        if self._kube_events is not None:
            self._kube_events.start()
        self._log.info(
            "config_loaded",
            config=str(self._config.path),
            accounts=len(self._config.accounts),
            check_interval_seconds=settings.schedule.check_interval,
            version=__version__,
        )
        for warning in self._warnings:
            self._log.warning("config_warning", message=warning)
        try:
            if once:
                return await self._run_once()
            await self._serve()
            return 0
        finally:
            await self._shutdown()

    async def _run_once(self) -> int:
        checks: asyncio.Future[list[CheckResult]] = asyncio.ensure_future(
            asyncio.gather(*(self._admitted_check(a) for a in self._config.accounts))
        )
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait(
            [cast("asyncio.Future[Any]", checks), stopped], return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        if not checks.done():
            checks.cancel()
            await asyncio.gather(checks, return_exceptions=True)
            return 1
        results: list[CheckResult] = checks.result()
        return 0 if all(r.ok for r in results) else 1

    async def _serve(self) -> None:
        http = self._config.settings.http
        server = StatusServer(
            self._registry,
            healthy=self._health_problem,
            ready=self._readiness_problem,
            status=self.status,
            auth_token=self._auth_token,
        )
        try:
            await server.start(http.host, http.port)
        except OSError as exc:  # before any check is scheduled: nothing to undo
            self._stop_reason = "listen_failed"
            raise ListenError(
                f"{self._config.path}: http.listen: cannot listen on {http.listen}: {why_not_listening(exc)}"
            ) from None
        self._log.info(
            "http_listening",
            listen=http.listen,
            endpoints=["/", "/status", "/metrics", "/healthz", "/readyz"],
            auth="bearer" if self._auth_token else "none",
        )
        try:
            self._schedule_checks()
            self._scheduler.start()
            if self._election is not None:
                self._election.start(self._ledger)
            watcher = asyncio.create_task(self._watch_config())
            if sighup.arrived_early():  # a SIGHUP that came during start-up is not lost
                self._request_reload("sighup")
            await self._stop.wait()
            watcher.cancel()
        finally:
            await server.stop()

    def _request_reload(self, trigger: str) -> None:
        task = asyncio.get_running_loop().create_task(self._reload(trigger))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_config(self) -> None:
        """Reload when the file's content changes (a ConfigMap update swaps a symlink): content
        no reload has read yet, so an edit already read after a SIGHUP is not read again."""
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            try:
                current = await _off_the_loop(_fingerprint, self._config.path)
            except ConfigError:
                current = None  # a file that hangs: the reload it would start says so, this waits
            if current != self._read and current is not None:
                await self._reload("file_changed")

    async def _reload(self, trigger: str) -> None:
        """Reload; never raises but for cancellation, so the file watcher outlives any failure."""
        try:
            await self._try_reload(trigger)
        except Exception as exc:
            # The last resort: a refusal is config_rejected below; this is a failure nobody
            # foresaw (a bug, or a mistake no check knows yet). Silent, it killed the watcher,
            # and every later edit was ignored. The traceback is for a bug report.
            self._metrics.config_reloads.labels("error").inc()
            self._metrics.config_last_reload_successful.set(0)
            self._log.error(
                "config_reload_failed",
                trigger=trigger,
                error=str(exc),
                error_type=type(exc).__name__,
                exc_info=True,
            )

    async def _try_reload(self, trigger: str) -> None:
        """Apply a new config without a restart, or refuse it and keep the running one."""
        async with self._reload_lock:
            try:
                content = await _off_the_loop(_fingerprint, self._config.path)
            except ConfigError as exc:  # the file hangs
                self._rejected(trigger, exc)
                return
            if trigger == "file_changed" and content == self._read:
                return  # a SIGHUP read this content while the watcher waited for the lock
            self._read = content
            try:
                new, credentials = await _off_the_loop(_load_with_credentials, self._config.path)
            except (ConfigError, CredentialError) as exc:
                self._rejected(trigger, exc)
                return
            unchanged = content is not None and content == self._applied
            if unchanged and _fingerprints(credentials) == self._credentials:
                # The config in force, read again (a SIGHUP after an edit the watcher applied):
                # not a reload. A SIGHUP after a token file changed still reloads (new fingerprints).
                self._metrics.config_last_reload_successful.set(1)
                self._log.info("config_unchanged", trigger=trigger)
                return
            change = compare(self._config, new)
            self._apply(new, credentials, change)
            self._applied, self._credentials = content, _fingerprints(credentials)
            # Against the settings the process started with, not the previous reload's: a setting
            # that needs a restart stays listed until one (or until the edit is undone).
            restart_required = compare(self._started, new).restart_required
            self._metrics.restart_required(restart_required)
            self._metrics.config_reloads.labels("success").inc()
            self._metrics.config_last_reload_successful.set(1)
            warnings = config_warnings(new, credentials)
            self.status.warnings = tuple(warnings)
            for warning in warnings:
                self._log.warning("config_warning", message=warning)
            self._log.info(
                "config_reloaded",
                trigger=trigger,
                accounts=len(new.accounts),
                added=[a.name for a in change.added],
                removed=[a.name for a in change.removed],
                changed=[new_account.name for _, new_account in change.changed],
                restart_required=list(restart_required),
            )

    def _rejected(self, trigger: str, exc: ConfigError | CredentialError) -> None:
        self._metrics.config_reloads.labels("error").inc()
        self._metrics.config_last_reload_successful.set(0)
        self._log.error("config_rejected", trigger=trigger, reason=str(exc), kept="previous config")

    def _apply(self, new: Config, credentials: Mapping[str, Credential], change: ConfigChange) -> None:
        # Settings that need a restart keep their running value until then.
        self._config = new
        self._accounts = {a.account_id: a for a in new.accounts}
        self._checker.update(
            credentials,
            check_period=new.check_period * self._due.clock.rate,  # on Cloudflare's clock
            settle_time=timedelta(seconds=new.settings.settle_time),
        )
        configure_logging(new.settings.logging.level, new.settings.logging.format, self._log_stream)
        for account in change.removed:
            self._scheduler.remove(account.account_id)
            self._metrics.forget(account)
            self._followup.forget(account)
        for old, account in change.changed:
            if old.name != account.name:
                self._metrics.forget(old)
        self._metrics.configure(new.accounts, new.settings.schedule.check_interval)
        self._followup.configure(new.accounts)
        self.status.configure(new.accounts)  # a removed account leaves the status page
        self._due.configure(new)
        if change.schedule_changed:
            schedule = new.settings.schedule
            self._scheduler.reschedule(
                (a.account_id for a in new.accounts if a not in change.added),
                interval=schedule.check_interval,
                jitter=schedule.jitter,
            )
        # A changed account's next check was planned under its old settings: read it again soon,
        # spread so that a change to every account is no burst.
        changed = [account for _, account in change.changed]
        for account_id, at in self._due.spread(changed, why="config_changed").items():
            self._scheduler.run_at(account_id, at)
        self._schedule_checks(change.added)

    def _schedule_checks(self, accounts: Iterable[Account] | None = None) -> None:
        # Where the ledger's plan says, else spread; one account's checks never overlap.
        for account_id, at in self._first_checks(accounts).items():
            self._scheduler.add(account_id, at=at)

    def _first_checks(self, accounts: Iterable[Account] | None = None) -> dict[str, datetime]:
        """Each account's first check: where the ledger's plan says, else spread over a period.
        Accounts a reload added are read soon, spread: a plan the ledger kept from before the account
        left the config was made under settings that may have changed since."""
        added = accounts is not None
        why = "added" if added else "resumed"
        accounts = list(self._config.accounts if accounts is None else accounts)
        plans = {} if added else self._ledger.planned()
        times, rest = self._due.resume(plans, accounts)
        ids = {a.account_id for a in accounts}
        times = {a: t for a, t in times.items() if a in ids}
        why = why if plans or added else "first_start"
        if times and not rest:
            # One read at once, of the account planned first: it shows Cloudflare's clock.
            first = min(times, key=times.__getitem__)
            times[first] = datetime.now(UTC)
        if times:
            _log_resumed(len(times), min(times.values()))
        return {**times, **self._due.spread(rest, why=why)}

    def _check_all_now(self) -> None:
        """A new leader resumes each account's schedule from the ledger (rotations fell due
        while none led: their plans have passed, and those accounts are read first, spread)."""
        for account_id, at in self._first_checks().items():
            if self._scheduler.has(account_id):
                self._scheduler.run_at(account_id, at)

    async def _scheduled_check(self, account_id: str) -> None:
        account = self._accounts.get(account_id)
        if account is None:
            return
        if self._election is not None and not self._election.acting:
            return  # a follower: the leader checks
        try:
            result = await self._admitted_check(account)
        except asyncio.CancelledError:
            # Shutdown cancels checks in flight: expected, not an error of the job.
            self._log.debug("check_cancelled", account=account.name, account_id=account_id)
            return
        self._plan_next(result)
        if result.key is not None or isinstance(result.error, HTTPStatusError):
            self._answered = True  # any HTTP answer shows Cloudflare is reachable
        elif result.error is not None:
            self._last_api_problem = f"account {account.name}: {result.error}"
            if not self._answered and self._scheduler.running:
                # Not ready yet: try again soon rather than a whole check interval later.
                self._scheduler.run_soon(account_id, min(STARTUP_RETRY_SECONDS, self._interval))

    def _plan_next(self, result: CheckResult) -> None:
        """Schedule the account's next check at the moment its decision could change, and record it."""
        account_id = result.account.account_id
        settle_time = timedelta(seconds=self._config.settings.settle_time)
        planned = self._due.after_check(result, self._client.server_seen, settle_time)
        if planned is None or not self._scheduler.running:
            return
        if not self._scheduler.has(account_id):
            return  # removed by a reload meanwhile
        at, plan = planned
        self._scheduler.run_at(account_id, at)
        self._ledger.plan(account_id, plan)
        remapped = self._due.remap()  # the first Dates of a fast clock: every plan moves
        if remapped is not None:
            self._checker.set_check_period(self._due.check_period)
        for other, when in (remapped or {}).items():
            if self._scheduler.has(other):
                self._scheduler.run_at(other, when)

    def _next_check(self, account_id: str) -> datetime | None:
        return self._scheduler.next_run(account_id)

    @property
    def _interval(self) -> float:
        return self._config.settings.schedule.check_interval

    async def _admitted_check(self, account: Account) -> CheckResult:
        """Check, once fewer than a few rounds of requests are ahead on the same credential.

        Thousands of checks fall due together at start-up. Waiting here costs a coroutine frame;
        waiting inside the client costs a retry context, a log context and a request each, and
        delays the first answer until every check has started. The gate is per credential, so a
        credential paused by a 429 never holds back another's checks.
        """
        credential = self._checker.credential_for(account)
        key = credential.fingerprint if isinstance(credential, Credential) else account.account_id
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = asyncio.Semaphore(ADMITTED_PER_SLOT * self._max_concurrency)
        # The baseline read of the account's certs (rotator.after.publication) waits at most a moment,
        # outside the gate, then goes on in the background: a certs endpoint that hangs or does
        # not resolve must never hold the checks up (it stalled a 10,000-account pass for minutes).
        # Only when there is one to take: a task and a timed wait cost 20 µs of CPU a check.
        if self._followup.wants_baseline(account):
            baseline = asyncio.ensure_future(self._followup.before_check(account))
            self._background_baselines.add(baseline)
            baseline.add_done_callback(self._background_baselines.discard)
            await asyncio.wait({baseline}, timeout=BASELINE_WAIT_SECONDS)
        async with gate:
            result = await self._checker.check(account)
        self._followup.after_check(result)
        self.status.record(result)
        return result

    def _health_problem(self) -> str | None:
        return None if self._scheduler.running else "scheduler is not running"

    def _readiness_problem(self) -> str | None:
        if not self._scheduler.running:
            return "scheduler is not running"
        if self._election is not None:
            # A follower is ready: it can take over. So is a leader that just did.
            return self._election.readiness_problem()
        if not self._answered:
            return f"Cloudflare's API has not answered a check yet: {self._last_api_problem}"
        return None

    async def _shutdown(self) -> None:
        if self._scheduler.running:
            # Cancels the checks in flight; a rotation inside one is shielded and drained below.
            self._scheduler.shutdown()
        self._client.stop_waiting()  # a rotation waiting to send again gives up at once
        await asyncio.sleep(0)
        # A POST already on the wire, up to its deadline (its intent is on record either way);
        # bounded so the pod exits within Kubernetes' 30 s grace.
        await self._checker.drain(within=min(25.0, self._config.settings.cloudflare.timeout + 1))
        await self._followup.aclose()
        if self._kube_events is not None:
            await self._kube_events.aclose()
        await self._client.aclose()
        # Bounded: a stuck fsync (its write runs in a thread) must not hold the exit.
        await self._ledger.close(within=5.0)
        if self._election is not None:
            # The ledger written, then the Lease released: a follower leads within retry_period.
            await self._election.stop(self._ledger)
        if self._kubernetes is not None:
            await self._kubernetes.close()
        self._log.info("shutdown", reason=self._stop_reason, rotations_unfinished=self._checker.rotating)
