"""The ConfigMap ledger with two writers: no record a writer committed is ever lost.

A deposed leader's late writes (its last POST's ``done``) meet the new leader's: each write that
finds a newer version merges it (rotator.ledger.configmap). The fake here is the KubeAPI seam in
memory (resourceVersion-checked replace, 409 on a stale one); every interleaving of begins, moves
and commits of the two writers must leave, in the ConfigMap, every record either committed.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rotator.errors import KubernetesConflict
from rotator.ha.kube import ConfigMap
from rotator.ledger.configmap import KEY, ConfigMapStore
from rotator.ledger.ledger import AccountRecord, Ledger, State, decode

ACCOUNTS = ("023e105f4ecef8ad9ca31a8372d0c353", "9a7806061c88ada191ed06f989cc3dac")
START = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class FakeKube:
    """The two ConfigMap calls of rotator.ha.kube.KubeAPI, in memory."""

    namespace = "rotator"

    def __init__(self) -> None:
        self.stored: ConfigMap | None = None
        self._versions = 0

    async def read_config_map(self, name: str, *, deadline: float) -> ConfigMap | None:
        return self.stored

    async def write_config_map(self, name: str, config_map: ConfigMap, *, deadline: float) -> ConfigMap:
        current = self.stored.resource_version if self.stored is not None else None
        if config_map.resource_version != current:
            raise KubernetesConflict(f"version {config_map.resource_version} is not {current}")
        self._versions += 1
        self.stored = ConfigMap(dict(config_map.binary_data), str(self._versions))
        return self.stored

    def records(self) -> dict[str, AccountRecord]:
        if self.stored is None:
            return {}
        return decode("fake", gzip.decompress(self.stored.binary_data[KEY]).decode())


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
def test_no_committed_record_is_ever_lost(plan: list[Step]) -> None:
    async def play() -> None:
        kube = FakeKube()
        stores = [ConfigMapStore(kube, "rotator-ledger", deadline=5) for _ in range(2)]  # type: ignore[arg-type]
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
            for snapshot in committed:
                for account_id, record in snapshot.items():
                    assert account_id in stored, f"{account_id} lost from the ConfigMap"
                    assert _dominates(stored[account_id], record), (stored[account_id], record)

    asyncio.run(play())
