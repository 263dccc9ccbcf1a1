"""Leader election on a Kubernetes Lease: of the replicas, only the leader checks and rotates.

client-go's algorithm, on the coordination.k8s.io/v1 Lease API directly rather than through
kubernetes_asyncio's ``leaderelection`` module, which lacks three things rotator needs: it never
releases the Lease on shutdown (a follower then waits a whole ``lease_duration``), it puts no
deadline on an API call (a call that hangs keeps a leader believing it leads), and it cannot say,
right before a rotate POST, how long the Lease it holds still has to run (the fence below).

- Every ``retry_period`` each replica reads the Lease. A Lease held by another replica is taken
  over only once it has gone unrenewed for its ``leaseDurationSeconds``, timed by this replica's
  own clock from when it saw the Lease change (never from the holder's timestamps: clocks differ).
  A free Lease (no holder: released on shutdown) is taken at once. A missing one is created only
  once it has been missing for ``lease_duration`` (a new install's first leader waits that long):
  a Lease deleted by hand must not give a second replica the lead while its holder still acts.
  Every write carries the resourceVersion it read, so of two replicas taking one Lease, one gets a
  409 and stays a follower.
- The leader renews every ``retry_period``. It counts its Lease as running until ``lease_duration``
  after the moment it *sent* its latest successful renewal: no follower can take it over sooner.
  If no renewal succeeds within ``renew_deadline`` it stops leading at once (it starts nothing
  new), and becomes a follower like the others.
- ``fence(need)``: before a rotate POST is decided, the leader confirms that it leads and that its
  Lease runs for at least ``need`` seconds (the POST's deadline) more, renewing first when it would
  not; ``holds(need)``, right before the POST leaves, asks the same without waiting, counted from
  then (``LeaseFence`` pairs them); otherwise the POST is not sent.
- ``release()``: at shutdown, after the rotations in flight have finished, the leader writes the
  Lease free, so a follower leads within one ``retry_period``.

Identities are unique per process: the configured identity (the pod's name) plus a random suffix,
as kube-controller-manager does. A restarted container, or a second process in the same pod, is
then never mistaken for the holder whose Lease it finds.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from rotator.config.model import FENCE_MARGIN_SECONDS, LeaderElectionSettings
from rotator.errors import KubernetesConflict, KubernetesError, KubernetesNotFound
from rotator.ha.kube import Lease

_log = structlog.get_logger("rotator")


class LeaseStore(Protocol):
    """The three Lease calls (rotator.ha.kube.KubeAPI), each bounded by ``deadline`` seconds."""

    async def read_lease(self, name: str, *, deadline: float) -> Lease | None: ...
    async def create_lease(self, name: str, lease: Lease, *, deadline: float) -> Lease: ...
    async def replace_lease(self, name: str, lease: Lease, *, deadline: float) -> Lease: ...


def process_identity(configured: str | None) -> str:
    """This process's identity in the Lease: the configured one, else $POD_NAME, else the
    hostname; with a random suffix, unique per process."""
    base = configured or os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        leases: LeaseStore,
        settings: LeaderElectionSettings,
        identity: str,
        *,
        on_leading: Callable[[], None] = lambda: None,
        on_stopped: Callable[[str], None] = lambda reason: None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``on_leading``: called when this process becomes the leader; ``on_stopped(reason)``:
        when it stops leading."""
        self.identity = identity
        self.lease_name = settings.lease_name
        self._leases = leases
        self._lease_duration = settings.lease_duration
        self._renew_deadline = settings.renew_deadline
        self._retry_period = settings.retry_period
        self._on_leading = on_leading
        self._on_stopped = on_stopped
        self._monotonic = monotonic
        self._now = now
        self._observed: Lease | None = None  # the Lease as last read or written
        self._observed_at = -math.inf  # when it last changed, by this process's clock
        self._renewed_at: float | None = None  # when the latest successful renewal was sent; None: following
        self._renewing: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.reached = False  # the API server has answered once: this replica can take over
        self.holder: str | None = None  # who leads, as last seen

    # ----------------------------------------------------------------------- what others ask

    @property
    def leading(self) -> bool:
        """Whether this process leads: it renewed within ``renew_deadline``."""
        renewed = self._renewed_at
        return renewed is not None and self._monotonic() - renewed < self._renew_deadline

    def runs_for(self) -> float:
        """Seconds the Lease this process holds runs for, as no follower can take it sooner."""
        if not self.leading:
            return 0.0
        assert self._renewed_at is not None
        return self._renewed_at + self._lease_duration - self._monotonic()

    async def fence(self, need: float) -> bool:
        """Whether a request of at most ``need`` seconds may be sent now, under this Lease."""
        need += FENCE_MARGIN_SECONDS
        if self.runs_for() >= need:
            return True
        if not self.leading:
            return False
        await self._renew_now()
        return self.runs_for() >= need

    def holds(self, need: float) -> bool:
        """``fence`` without renewing: whether a request of at most ``need`` seconds may leave
        now, read without waiting (the last thing before a send)."""
        return self.runs_for() >= need + FENCE_MARGIN_SECONDS

    # ----------------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Follow, lead, renew, every ``retry_period``: until cancelled (then ``release()``)."""
        while True:
            await self.step()
            await asyncio.sleep(self._retry_period)

    async def step(self) -> None:
        """One try: a follower tries to take the Lease, the leader to renew it. A leader that has
        not renewed within ``renew_deadline``, or that finds another holder, stops leading."""
        if self._renewed_at is None:
            sent = await self._attempt(deadline=self._retry_period)
            if sent is not None:
                self._renewed_at = sent
                _log.info("leader_elected", lease=self.lease_name, identity=self.identity)
                self._on_leading()
            return
        await self._renew_now()
        if self.holder not in (None, self.identity):
            self._stop_leading(f"the Lease is held by {self.holder}")
        elif not self.leading:
            self._stop_leading(f"the Lease was not renewed within renew_deadline ({self._renew_deadline:g}s)")

    async def acquire(self) -> bool:
        """For a one-shot command: take the Lease and hold it until ``release()``. At once when it
        is free; once it has gone unrenewed for its duration (a holder that died); False as soon as
        its holder renews it (a live leader), or after ``lease_duration`` + 2 x ``retry_period``."""
        deadline = self._monotonic() + self._lease_duration + 2 * self._retry_period
        first: Lease | None = None
        while True:
            await self.step()
            if self.leading:
                return True
            seen = self._observed
            if seen is not None and seen.holder not in (None, self.identity):
                if first is None:
                    first = seen
                elif seen.resource_version != first.resource_version:
                    return False  # renewed meanwhile: its holder is alive
            if self._monotonic() >= deadline:
                return False
            await asyncio.sleep(self._retry_period)

    async def release(self) -> None:
        """Write the Lease free (when this process holds it), so a follower leads at once."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        self._on_stopped("shutdown")
        try:
            # After a renewal still in flight: it moves the resourceVersion this write must carry.
            async with self._write_lock:
                observed = self._observed
                if observed is None or observed.holder != self.identity:
                    return
                now = self._now()
                free = replace(
                    observed, holder=None, lease_duration_seconds=1, acquire_time=now, renew_time=now
                )
                await self._leases.replace_lease(self.lease_name, free, deadline=self._retry_period)
        except KubernetesError as exc:
            _log.warning("leader_release_failed", lease=self.lease_name, error=str(exc))
            return
        _log.info("leader_released", lease=self.lease_name, identity=self.identity)

    # ----------------------------------------------------------------------- internals

    async def _renew_now(self) -> None:
        """One renewal at a time: the loop's and the fences' share it."""
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew())
        # Shielded: a fence's caller cancelled (a check at shutdown) leaves the renewal running.
        await asyncio.shield(self._renewing)

    async def _renew(self) -> None:
        if not self.leading:
            return
        assert self._renewed_at is not None
        left = self._renewed_at + self._renew_deadline - self._monotonic()
        sent = await self._attempt(deadline=max(0.05, min(left, self._retry_period)))
        if sent is not None:
            self._renewed_at = sent

    async def _attempt(self, *, deadline: float) -> float | None:
        """Try once to take or renew the Lease: when the successful write was sent, or None."""
        async with self._write_lock:
            try:
                return await self._take_or_renew(deadline)
            except KubernetesConflict:
                self._observed = None  # another replica wrote first: read it at the next attempt
                return None
            except KubernetesNotFound:
                # A person deleted the Lease under this leader: stop leading now, not at
                # renew_deadline (a replica that never saw it could create it at once).
                self._observed = None
                if self._renewed_at is not None:
                    self._stop_leading("the Lease was deleted")
                return None
            except KubernetesError as exc:
                _log.warning("leader_election_failed", lease=self.lease_name, error=str(exc))
                return None

    async def _take_or_renew(self, deadline: float) -> float | None:
        started = self._monotonic()
        ends = started + deadline
        observed = self._observed
        if not (self._renewed_at is not None and observed is not None and observed.holder == self.identity):
            # Following (or unsure): read the Lease. The leader writes over the version it last
            # wrote instead, as client-go does: a 409 means someone else wrote since.
            observed = await self._leases.read_lease(self.lease_name, deadline=deadline)
            self.reached = True
            self._see(observed)
        now = self._now()
        duration = math.ceil(self._lease_duration)
        if observed is None:
            if self._monotonic() < self._observed_at + self._lease_duration:
                # Missing since this process first looked (or since it last saw it): had a person
                # deleted it, its holder could still act until it would have run out. So it is
                # created no sooner than a takeover could happen; a new install's first leader
                # waits lease_duration.
                return None
            mine = Lease(self.identity, duration, now, now, 0)
            sent = self._monotonic()
            created = await self._leases.create_lease(self.lease_name, mine, deadline=self._left(ends))
            self._see(created)
            return sent
        held_by_other = observed.holder is not None and observed.holder != self.identity
        if held_by_other and self._monotonic() < self._observed_at + observed.lease_duration_seconds:
            return None
        mine = replace(
            observed,
            holder=self.identity,
            lease_duration_seconds=duration,
            renew_time=now,
            acquire_time=observed.acquire_time if observed.holder == self.identity else now,
            transitions=observed.transitions + (0 if observed.holder == self.identity else 1),
        )
        sent = self._monotonic()
        written = await self._leases.replace_lease(self.lease_name, mine, deadline=self._left(ends))
        self._see(written)
        return sent

    def _see(self, lease: Lease | None) -> None:
        # The first look counts as a change: a Lease found missing then is created no sooner than
        # lease_duration later (a person may have deleted it under a leader that still acts).
        if lease != self._observed or self._observed_at == -math.inf:
            self._observed = lease
            self._observed_at = self._monotonic()
        self.holder = lease.holder if lease is not None else None

    def _left(self, ends: float) -> float:
        return max(0.05, ends - self._monotonic())

    def _stop_leading(self, reason: str) -> None:
        self._renewed_at = None
        _log.warning("leader_lost", lease=self.lease_name, identity=self.identity, reason=reason)
        self._on_stopped(reason)


class LeaseFence:
    """The rotation protocol's fence (rotator.check.rotation.Fence) for requests of ``need`` seconds."""

    __slots__ = ("_elector", "_need")

    def __init__(self, elector: LeaderElector, need: float) -> None:
        self._elector = elector
        self._need = need

    async def prepare(self) -> bool:
        return await self._elector.fence(self._need)

    def holds(self) -> bool:
        return self._elector.holds(self._need)
