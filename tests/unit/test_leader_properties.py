"""Leader election under every interleaving hypothesis can find.

A ``RuleBasedStateMachine`` drives real ``LeaderElector``s (rotator.ha.leader) against a model of the
Lease API with resourceVersion concurrency, on one fake clock: replicas try the Lease in any order,
time passes by any amount, a write's answer is lost after it was applied or an API call fails,
replicas die (SIGKILL: they never write again) and new ones start, the leader stops and releases,
and fences are asked for. (Not a person deleting the Lease: a replica that never saw it cannot know it
was held, so no Lease-based election can keep two from leading then; the example tests below pin
what rotator does instead.)

Invariants:
- never two replicas leading at the same instant;
- a fence granted at ``t`` for ``need`` seconds: no other replica leads before ``t + need``;
- a lone live replica, trying every retry_period with the API healthy, comes to lead.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rotator.config.model import LeaderElectionSettings
from rotator.errors import KubernetesConflict, KubernetesError, KubernetesNotFound
from rotator.ha.kube import Lease
from rotator.ha.leader import LeaderElector

SETTINGS = LeaderElectionSettings(enabled=True, lease_duration=15, renew_deadline=10, retry_period=2)
START = datetime(2026, 12, 2, tzinfo=UTC)
NAME = "rotator"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return START + timedelta(seconds=self.t)


class Leases:
    """The Lease API: resourceVersion-checked writes; the next call can fail, or lose its answer."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.version = 0
        self.next_call = "ok"  # "ok", "fail" (not applied), "lost" (applied, answer lost)

    def _outcome(self) -> str:
        outcome, self.next_call = self.next_call, "ok"
        if outcome == "fail":
            raise KubernetesError("the API server did not answer")
        return outcome

    async def read_lease(self, name: str, *, deadline: float) -> Lease | None:
        self._outcome()
        return self.lease

    async def create_lease(self, name: str, lease: Lease, *, deadline: float) -> Lease:
        outcome = self._outcome()
        if self.lease is not None:
            raise KubernetesConflict("exists")
        return self._store(lease, outcome)

    async def replace_lease(self, name: str, lease: Lease, *, deadline: float) -> Lease:
        outcome = self._outcome()
        if self.lease is None or self.lease.resource_version != lease.resource_version:
            raise (KubernetesNotFound("gone") if self.lease is None else KubernetesConflict("modified"))
        return self._store(lease, outcome)

    def _store(self, lease: Lease, outcome: str) -> Lease:
        self.version += 1
        self.lease = replace(lease, resource_version=str(self.version))
        if outcome == "lost":
            raise KubernetesError("no answer within the deadline")
        return self.lease


class Election(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.leases = Leases()
        self.replicas: list[LeaderElector] = []
        self.dead: set[int] = set()
        self.fences: list[tuple[int, float]] = []  # (replica, until)
        self.alone_since: float | None = None
        for _ in range(2):
            self._new_replica()

    def teardown(self) -> None:
        self.loop.close()

    def _new_replica(self) -> None:
        elector = LeaderElector(
            self.leases,
            SETTINGS,
            f"rotator-{len(self.replicas)}",
            monotonic=self.clock.monotonic,
            now=self.clock.now,
        )
        self.replicas.append(elector)

    def _alive(self) -> list[int]:
        return [i for i in range(len(self.replicas)) if i not in self.dead]

    def _run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    # ----------------------------------------------------------------------- what happens

    @rule(
        data=st.data(),
        seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 2.5, 5.0, 9.0, 12.0, 16.0, 30.0]),
    )
    def a_round(self, data: st.DataObject, seconds: float) -> None:
        """Time passes; then some replicas (any, in any order) try the Lease, or ask the fence
        for a rotate POST, as their loops and checks would."""
        self.clock.t += seconds
        alive = self._alive()
        trying = data.draw(st.lists(st.sampled_from(alive), min_size=1, max_size=len(alive) + 1))
        for i in trying:
            need = data.draw(st.sampled_from([None, None, 1.0, 5.0, 10.0, 13.0]))
            if need is None:
                self._run(self.replicas[i].step())
            elif self._run(self.replicas[i].fence(need)):
                self.fences.append((i, self.clock.t + need))
            self._became_leader(i)

    @rule(call=st.sampled_from(["fail", "lost"]))
    def the_next_api_call_goes_wrong(self, call: str) -> None:
        self.leases.next_call = call

    @precondition(lambda self: len(self._alive()) > 2)  # two at least stay to contend
    @rule(data=st.data())
    def a_replica_is_killed(self, data: st.DataObject) -> None:
        self.dead.add(data.draw(st.sampled_from(self._alive())))

    @precondition(lambda self: len(self.replicas) < 6)
    @rule()
    def a_replica_starts(self) -> None:
        self._new_replica()

    @rule(data=st.data())
    def a_replica_stops_and_releases(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(self._alive()))
        if len(self._alive()) > 1:
            self.dead.add(i)
        self._run(self.replicas[i].release())
        self.fences = [(j, until) for j, until in self.fences if j != i]

    def _became_leader(self, i: int) -> None:
        if self.replicas[i].leading:
            for j, until in self.fences:
                assert j == i or self.clock.t >= until, (
                    f"replica {i} leads at {self.clock.t}, inside replica {j}'s fence (until {until})"
                )

    # ----------------------------------------------------------------------- what must hold

    @invariant()
    def never_two_leaders(self) -> None:
        if not hasattr(self, "replicas"):
            return
        leading = [i for i in self._alive() if self.replicas[i].leading]
        # A dead replica believes nothing: only the living count.
        assert len(leading) <= 1, f"replicas {leading} lead at once (t={self.clock.t})"

    @invariant()
    def a_lone_replica_leads_soon(self) -> None:
        if not hasattr(self, "replicas"):
            return
        alive = self._alive()
        if len(alive) != 1:
            self.alone_since = None
            return
        if self.alone_since is None:
            self.alone_since = self.clock.t
        elector = self.replicas[alive[0]]
        waited = self.clock.t - self.alone_since
        if waited <= SETTINGS.lease_duration + 2 * SETTINGS.retry_period or elector.leading:
            return
        # Trying every retry_period with the API healthy, it takes the Lease once the dead
        # holder's has run out (lease_duration after this replica first saw it unchanged).
        for _ in range(int(SETTINGS.lease_duration / SETTINGS.retry_period) + 4):
            self._run(elector.step())
            if elector.leading:
                break
            self.clock.t += SETTINGS.retry_period
        self.alone_since = self.clock.t
        assert elector.leading, f"the lone replica does not lead (t={self.clock.t})"


class TestElection(Election.TestCase):  # type: ignore[name-defined,misc]
    # On this class: Election.TestCase makes a new class each time it is read.
    settings = settings(
        max_examples=200,
        stateful_step_count=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


def _leader(leases: Leases, clock: Clock) -> LeaderElector:
    """A leader, as of ``clock.t`` 0: the Lease created at once (a free Lease left by a release)."""
    now = clock.now()
    leases.lease = Lease(None, 1, now, now, 0, resource_version="0")
    elector = LeaderElector(leases, SETTINGS, "rotator-0", monotonic=clock.monotonic, now=clock.now)
    asyncio.run(elector.step())
    assert elector.leading
    return elector


def test_the_fence_renews_first_when_the_lease_would_run_out_before_the_request() -> None:
    clock, leases = Clock(), Leases()
    elector = _leader(leases, clock)
    clock.t = 5.0  # 10 s of the Lease left: enough for 8 s (and the 1 s margin), not for 10
    assert asyncio.run(elector.fence(8.0))
    assert leases.version == 1  # no renewal needed
    assert asyncio.run(elector.fence(10.0))
    assert leases.version == 2  # renewed, then granted: 15 s left again
    assert elector.runs_for() == 15.0


def test_the_fence_refuses_when_the_renewal_fails() -> None:
    clock, leases = Clock(), Leases()
    elector = _leader(leases, clock)
    clock.t = 5.0
    leases.next_call = "fail"
    assert not asyncio.run(elector.fence(10.0))
    assert elector.leading  # still the leader (renew_deadline has not passed): only not for this long


def test_a_lease_deleted_under_its_leader_is_not_recreated_before_a_takeover_could_happen() -> None:
    clock, leases = Clock(), Leases()
    leader = _leader(leases, clock)
    follower = LeaderElector(leases, SETTINGS, "rotator-1", monotonic=clock.monotonic, now=clock.now)
    asyncio.run(follower.step())  # sees the Lease held
    leases.lease = None  # a person deletes it
    clock.t = 1.0
    asyncio.run(leader.step())
    assert not leader.leading  # stepped down at its next renewal, not at renew_deadline
    asyncio.run(follower.step())
    assert not follower.leading and leases.lease is None  # missing for less than lease_duration
    clock.t = 16.0
    asyncio.run(follower.step())
    assert follower.leading
