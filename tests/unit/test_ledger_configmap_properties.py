"""The ConfigMap ledger with two writers: no record a writer committed is ever lost.

A deposed leader's late writes (its last POST's ``done``) meet the new leader's: each write that
finds a newer version merges it (rotator.ha.configmap). The fake here is the KubeAPI seam in
memory (resourceVersion-checked replace, 409 on a stale one); every interleaving of begins, moves
and commits of the two writers must leave, in the ConfigMap, every record either committed.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rotator.core.records import AccountRecord, State
from rotator.errors import KubernetesConflict
from rotator.ha.configmap import KEY, ConfigMapStore, shard_of
from rotator.ha.kube import ConfigMap
from rotator.ledger.ledger import Ledger, decode

ACCOUNTS = (
    "023e105f4ecef8ad9ca31a8372d0c353",
    "9a7806061c88ada191ed06f989cc3dac",
    "c667b5d4064a1e5f39f8736c05428488",
    "5b1b2a1f8c0e4d3a9f7e6d5c4b3a2910",
)
START = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class FakeKube:
    """The two ConfigMap calls of rotator.ha.kube.KubeAPI, in memory."""

    namespace = "rotator"

    def __init__(self) -> None:
        self.stored: dict[str, ConfigMap] = {}
        self.writes: list[str] = []
        self._versions = 0

    async def read_config_map(self, name: str, *, deadline: float) -> ConfigMap | None:
        return self.stored.get(name)

    async def write_config_map(self, name: str, config_map: ConfigMap, *, deadline: float) -> ConfigMap:
        stored = self.stored.get(name)
        current = stored.resource_version if stored is not None else None
        if config_map.resource_version != current:
            raise KubernetesConflict(f"version {config_map.resource_version} is not {current}")
        self._versions += 1
        self.stored[name] = ConfigMap(dict(config_map.binary_data), str(self._versions))
        self.writes.append(name)
        return self.stored[name]

    def shard(self, name: str) -> dict[str, AccountRecord]:
        stored = self.stored.get(name)
        if stored is None:
            return {}
        return decode("fake", gzip.decompress(stored.binary_data[KEY]).decode())

    def records(self) -> dict[str, AccountRecord]:
        return {a: r for name in sorted(self.stored) for a, r in self.shard(name).items()}


@dataclass(frozen=True)
class Step:
    writer: int
    op: str
    account: int
    to: str = "sent"  # a move's next state


steps = st.lists(
    st.builds(
        Step,
        st.integers(0, 1),
        st.sampled_from(["begin", "move", "commit", "commit", "load"]),
        st.integers(0, len(ACCOUNTS) - 1),
        st.sampled_from(["sent", "done", "not_applied", "unconfirmed"]),
    ),
    max_size=30,
)


def _dominates(stored: AccountRecord, committed: AccountRecord) -> bool:
    return stored.merged(committed) == stored


@settings(max_examples=1000, deadline=None, database=None)
@given(steps)
# The case found first: writer 1's write meets writer 0's intent (409, merged), and its next write,
# from its own view, erased it.
@example(
    [
        Step(0, "begin", 0),
        Step(0, "commit", 0),
        Step(1, "begin", 1),
        Step(1, "commit", 1),
        Step(1, "move", 1, "sent"),
        Step(1, "commit", 1),
    ]
)
@pytest.mark.parametrize("shards", [1, 3])
def test_no_committed_record_is_ever_lost(shards: int, plan: list[Step]) -> None:
    async def play() -> None:
        kube = FakeKube()
        stores = [ConfigMapStore(kube, "rotator-ledger", deadline=5, shards=shards) for _ in range(2)]  # type: ignore[arg-type]
        ledgers = [Ledger(store=s, owner=f"replica-{i}") for i, s in enumerate(stores)]
        for store in stores:
            await store.load()
        committed: list[dict[str, AccountRecord]] = []  # what each successful commit wrote
        for n, step in enumerate(plan):
            at = START + timedelta(minutes=n)
            ledger, account = ledgers[step.writer], ACCOUNTS[step.account]
            rotation = ledger.record(account).rotation
            if step.op == "begin":
                ledger.begin(account, at=at, rotates_from=None)
            elif step.op == "load":
                await stores[step.writer].load()
            elif step.op == "commit":
                await ledger.commit()
                committed.append(kube.records())
            elif rotation is not None and rotation.state.open:
                if step.to == "sent" and rotation.state is State.INTENT:
                    ledger.sent(account, rotation)
                elif step.to == "done":
                    ledger.done(account, rotation, at=at, why="Cloudflare answered 200")
                elif step.to == "not_applied":
                    ledger.not_applied(account, rotation, at=at, why="refused")
                elif step.to == "unconfirmed":
                    ledger.unconfirmed(account, rotation, why="answer lost")
            stored = kube.records()
            for name in kube.stored:  # each record in its own shard, and only there
                index = 0 if name == "rotator-ledger" else int(name.rsplit("-", 1)[1])
                assert all(shard_of(a, shards) == index for a in kube.shard(name)), name
            for snapshot in committed:
                for account_id, record in snapshot.items():
                    assert account_id in stored, f"{account_id} lost from the ConfigMap"
                    assert _dominates(stored[account_id], record), (stored[account_id], record)

    asyncio.run(play())


def test_a_rotation_writes_only_its_own_shard() -> None:
    async def play() -> list[str]:
        kube = FakeKube()
        store = ConfigMapStore(kube, "rotator-ledger", deadline=5, shards=16)  # type: ignore[arg-type]
        await store.load()
        ledger = Ledger(store=store)
        for account in ACCOUNTS:
            ledger.begin(account, at=START, rotates_from=None)
        await ledger.commit()
        kube.writes.clear()
        ledger.begin(ACCOUNTS[0], at=START + timedelta(days=8), rotates_from=None)
        await ledger.commit()
        return kube.writes

    shard = shard_of(ACCOUNTS[0], 16)
    assert asyncio.run(play()) == [store_name(shard)]


def store_name(shard: int) -> str:
    return "rotator-ledger" if shard == 0 else f"rotator-ledger-{shard}"


@pytest.mark.parametrize(("before", "after"), [(1, 16), (16, 3), (3, 1)])
def test_a_leader_with_another_shard_count_keeps_every_record_and_moves_it_home(
    before: int, after: int
) -> None:
    """A single ConfigMap of an older rotator (one shard), or a changed ledger_shards: every record
    is read, and the next commit leaves each in the shard it now belongs to."""

    async def play() -> tuple[dict[str, AccountRecord], dict[str, AccountRecord], FakeKube]:
        kube = FakeKube()
        old = ConfigMapStore(kube, "rotator-ledger", deadline=5, shards=before)  # type: ignore[arg-type]
        await old.load()
        ledger = Ledger(store=old)
        for account in ACCOUNTS:
            ledger.begin(account, at=START, rotates_from=None)
        await ledger.commit()
        written = kube.records()

        new = ConfigMapStore(kube, "rotator-ledger", deadline=5, shards=after)  # type: ignore[arg-type]
        await new.load()
        await Ledger(store=new).commit()
        reread = ConfigMapStore(kube, "rotator-ledger", deadline=5, shards=after)  # type: ignore[arg-type]
        await reread.load()
        fresh = Ledger(store=reread)
        return written, {a: fresh.record(a) for a in ACCOUNTS}, kube

    written, seen, kube = asyncio.run(play())
    assert set(written) == set(ACCOUNTS)
    assert {a: r.rotation for a, r in seen.items()} == {a: r.rotation for a, r in written.items()}
    for shard in range(after):
        assert all(shard_of(a, after) == shard for a in kube.shard(store_name(shard)))
