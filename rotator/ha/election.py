"""Leader election in each command: who acts, the ledger taken over, the Lease released.

``connect_kubernetes`` finds the API (only with ``leader_election.enabled``). ``Election`` binds
rotator.ha.leader's elector to the daemon. ``holding_the_lease`` lets ``rotator rotate`` act as the
leader, and ``leaders_ledger`` lets ``rotator check`` decide as the leader would.

In the daemon, a replica acts (checks and rotates) only while it leads *and* has read the ledger
its predecessor left in the ConfigMap (rotator.ha.configmap); it then checks every account at
once, since rotations may have fallen due while none led. A follower checks nothing, and is ready
(it can take over) once the API server has answered.
``rotator_leader`` and ``rotator_leader_transitions_total`` follow the elector.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog

from rotator.config.model import Config
from rotator.errors import KubernetesError, StateFileError
from rotator.ha.configmap import ConfigMapStore
from rotator.ha.kube import KubeAPI
from rotator.ha.leader import LeaderElector, process_identity
from rotator.ledger.ledger import OBSERVED_FLUSH_SECONDS, Ledger
from rotator.metrics.families import Metrics

_log = structlog.get_logger("rotator")


class Election:
    def __init__(
        self, kubernetes: KubeAPI, config: Config, metrics: Metrics, *, on_ready: Callable[[], None]
    ) -> None:
        """``on_ready``: called when this replica starts acting (it leads, the ledger read)."""
        settings = config.settings.leader_election
        self.identity = process_identity(settings.identity)
        self.store = ConfigMapStore.of(kubernetes, settings)
        self._elector = LeaderElector(
            kubernetes, settings, self.identity, on_leading=self._leading, on_stopped=self._stopped
        )
        self._request_deadline = config.settings.cloudflare.timeout
        self._retry_period = settings.retry_period
        self._metrics = metrics
        self._on_ready = on_ready
        self._ledger_read = False
        self._ledger: Ledger | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.leader.set(0)

    @property
    def acting(self) -> bool:
        return self._ledger_read and self._elector.leading

    async def fence(self) -> bool:
        """Whether a rotate POST may leave now: this replica leads for longer than it can take."""
        return await self._elector.fence(self._request_deadline)

    def leadership(self) -> tuple[bool, str | None]:
        """Whether this replica acts, and who holds the Lease as last seen."""
        return self.acting, self._elector.holder

    def readiness_problem(self) -> str | None:
        if not self._elector.reached:
            return "the Kubernetes API has not answered leader election's first read of the Lease yet"
        return None

    def start(self, ledger: Ledger) -> None:
        self._ledger = ledger
        _log.info(
            "leader_election_started",
            lease=self._elector.lease_name,
            namespace=self.store.where,
            identity=self.identity,
        )
        self._spawn(self._elector.run())
        self._spawn(self._commit_now_and_then(ledger))

    async def stop(self, ledger: Ledger) -> None:
        """At shutdown, after the rotations in flight: write the ledger, then free the Lease."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._elector.leading:
            await ledger.commit_quietly()
        await self._elector.release()

    # ----------------------------------------------------------------------- internals

    def _leading(self) -> None:
        self._metrics.leader.set(1)
        self._metrics.leader_transitions.inc()
        self._spawn(self._take_over())

    def _stopped(self, reason: str) -> None:
        self._metrics.leader.set(0)
        self._ledger_read = False

    async def _take_over(self) -> None:
        """Read the ledger the previous leader left, then act; until read, act on nothing."""
        while self._elector.leading:
            try:
                await self.store.load()
            except (KubernetesError, StateFileError) as exc:
                _log.error("ledger_load_failed", ledger=self.store.where, error=str(exc))
                await asyncio.sleep(self._retry_period)
                continue
            self._ledger_read = True
            _log.info("ledger_loaded", ledger=self.store.where)
            self._on_ready()
            return

    async def _commit_now_and_then(self, ledger: Ledger) -> None:
        # What reads moved (`observed` times) is not write-ahead: written every few seconds.
        while True:
            await asyncio.sleep(OBSERVED_FLUSH_SECONDS)
            if self.acting:
                ledger.flush()
                await ledger.commit_quietly()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_crashed)


def _crashed(task: asyncio.Task[None]) -> None:
    # A bug: logged with its traceback. A leader whose loop died stops leading at renew_deadline.
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("leader_election_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)


async def connect_kubernetes(config: Config) -> KubeAPI | None:
    """The Kubernetes API for leader election and the ledger's ConfigMap; None when
    ``leader_election`` is off (and kubernetes_asyncio is then never imported)."""
    election = config.settings.leader_election
    if not election.enabled:
        return None
    return await KubeAPI.connect(election.namespace)


async def leaders_ledger(config: Config) -> tuple[KubeAPI | None, ConfigMapStore | None]:
    """With leader election, the API and the ledger the leader keeps in its ConfigMap, read once,
    so that ``rotator check`` decides as the leader would (an open rotation there holds the
    account); (None, None) without it. The caller closes the API."""
    kubernetes = await connect_kubernetes(config)
    if kubernetes is None:
        return None, None
    store = ConfigMapStore.of(kubernetes, config.settings.leader_election)
    try:
        await store.load()
    except BaseException:
        await kubernetes.close()
        raise
    return kubernetes, store


@contextlib.asynccontextmanager
async def holding_the_lease(
    config: Config,
) -> AsyncIterator[tuple[ConfigMapStore | None, Callable[[], Awaitable[bool]] | None] | str]:
    """With leader election, ``rotator rotate`` rotates as the leader: it takes the Lease (free,
    or run out) and the leader's ledger, fences its POST, and releases the Lease when done.
    Yields the ledger's store and the fence ((None, None) without leader election), or why the
    Lease cannot be had (a live leader holds it)."""
    kubernetes = await connect_kubernetes(config)
    if kubernetes is None:
        yield None, None
        return
    election = config.settings.leader_election
    elector = LeaderElector(kubernetes, election, process_identity(election.identity))
    try:
        if not await elector.acquire():
            yield (
                f"the Lease {kubernetes.namespace}/{election.lease_name} is held by {elector.holder}, "
                "which renews it: only the leader rotates, and it rotates a due account at its next "
                "check (to rotate now, scale the replicas to 0 and run this again)"
            )
            return
        store = ConfigMapStore.of(kubernetes, election)
        await store.load()
        timeout = config.settings.cloudflare.timeout
        yield store, lambda: elector.fence(timeout)
    finally:
        await elector.release()
        await kubernetes.close()
