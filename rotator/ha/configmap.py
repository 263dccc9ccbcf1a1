"""The rotation ledger kept in a Kubernetes ConfigMap, so that it outlives the pod.

With leader election on, the leader keeps the ledger (rotator.ledger.ledger) in the ConfigMap
``<lease_name>-ledger`` of its namespace instead of a state file: a pod rescheduled onto another
node, or a follower that takes over, reads what its predecessor began. Written with
resourceVersion-checked updates: a write that finds the ConfigMap changed since it was read (a
deposed leader recording how its last POST ended) reads it again, merges the two copies as the
state file's writers do (times only move forward; the further state of one rotation wins) and
writes again.

A ConfigMap rather than the Lease's annotations: the Lease is renewed every ``retry_period``, and
each ledger write would race the renewals for its resourceVersion; annotations are also limited
to 256 KiB in all, a ConfigMap to 1 MiB. The ledger is stored gzipped in ``binaryData`` (about 76
bytes an account with a rotation on record, against 360 as JSON), so one ConfigMap holds some
13,000 accounts. It is sharded over ``leader_election.ledger_shards`` ConfigMaps (16 by default:
room for about 200,000 accounts): ``<lease_name>-ledger`` and ``<lease_name>-ledger-1`` to ``-15``,
each account in the shard its id hashes to (CRC-32), so a rotation writes only its own shard, with
the same resourceVersion checks and merge. The first shard also says how many shards there are: a
leader started with another count reads the old ones too, and moves every record where it now
belongs at its next writes (a single ConfigMap of an older rotator is read as one shard). Read a
shard with ``kubectl get configmap rotator-ledger -o jsonpath='{.binaryData.ledger\\.json\\.gz}' |
base64 -d | gunzip``.

Updates are kept in memory until ``commit()`` writes them: the rotation protocol commits the
intent before its POST leaves (and sends nothing if that fails) and every later step after it.
Only the leader writes; the Lease is what keeps two processes from holding one account, so the
per-account locks of the state file are not needed here.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable

from rotator.config.model import MAX_LEDGER_SHARDS as MAX_SHARDS
from rotator.config.model import LeaderElectionSettings
from rotator.core.records import AccountRecord, merge
from rotator.errors import KubernetesConflict, KubernetesError, KubernetesNotFound, StateFileError
from rotator.ha.kube import ConfigMap, KubeAPI
from rotator.ledger.ledger import decode, encode

KEY = "ledger.json.gz"
# In the first shard: how many shards the ledger had when it was written (absent: one, as before
# the ledger was sharded).
SHARDS_KEY = "shards"
# A write that keeps meeting a newer version (409) gives up after this many tries.
WRITE_ATTEMPTS = 5
# The Kubernetes API refuses a ConfigMap over 1 MiB; a shard is refused here, with what to do, a
# little before that (the object's own fields count too).
MAX_SHARD_BYTES = 1024 * 1024 - 16 * 1024


def shard_of(account_id: str, shards: int) -> int:
    """The shard an account's record lives in: stable across processes and Python versions."""
    return zlib.crc32(account_id.encode("utf-8")) % shards


class ConfigMapStore:
    def __init__(self, api: KubeAPI, name: str, *, deadline: float, shards: int = 1) -> None:
        """``name``: the first shard's (the others are ``<name>-1`` ...); ``deadline``: the longest
        one API call may take, in seconds."""
        self.name = name
        self.shards = shards
        self._api = api
        self._deadline = deadline
        self._records: dict[str, AccountRecord] = {}
        self._versions: dict[int, str | None] = {}  # each shard's resourceVersion last read or written
        self._fresh: dict[str, AccountRecord] | None = None
        self._updates = 0  # updates made in memory
        self._dirty: dict[int, int] = {}  # shard -> the update that last changed it, not yet written
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, api: KubeAPI, settings: LeaderElectionSettings) -> ConfigMapStore:
        """The ledger of ``settings``' election: ``<lease_name>-ledger`` and its shards, calls
        bounded by ``renew_deadline``."""
        return cls(api, settings.ledger_name, deadline=settings.renew_deadline, shards=settings.ledger_shards)

    @property
    def where(self) -> str:
        return self._where(0)

    def shard_name(self, shard: int) -> str:
        return self.name if shard == 0 else f"{self.name}-{shard}"

    def _where(self, shard: int) -> str:
        return f"the ConfigMap {self._api.namespace}/{self.shard_name(shard)}"

    async def load(self) -> None:
        """Read every shard (when this process starts leading): the next read of the ledger merges
        them into what this process knows."""
        async with self._lock:
            first, self._versions[0], written_with = await self._read(0)
            found = {0: first}
            for shard in range(1, max(written_with, self.shards)):
                found[shard], self._versions[shard], _ = await self._read(shard)
            records: dict[str, AccountRecord] = {}
            for shard, held in found.items():
                records = merge(records, held)
                for account_id in held:
                    home = shard_of(account_id, self.shards)
                    if home != shard:  # written with another shard count: moved at the next writes
                        self._dirty[home] = self._dirty[shard] = self._updates
            if written_with != self.shards or self._versions[0] is None:
                self._dirty[0] = self._updates  # the first shard says how many there are (now)
            self._records = merge(self._records, records)
            self._fresh = records

    # ----------------------------------------------------------------------- the Store protocol

    def read(self) -> dict[str, AccountRecord]:
        return dict(self._records)

    def read_if_changed(self) -> dict[str, AccountRecord] | None:
        fresh, self._fresh = self._fresh, None
        return fresh

    def update(
        self,
        mine: dict[str, AccountRecord],
        change: Callable[[dict[str, AccountRecord]], dict[str, AccountRecord]],
    ) -> dict[str, AccountRecord]:
        # ``mine`` is the ledger's view; what a 409 merged in since (a deposed leader's late
        # ``done``) is only here until the ledger reads it: merged, so no write erases it.
        before = self._records
        after = change(merge(mine, before))
        self._updates += 1
        for account_id, record in after.items():
            old = before.get(account_id)
            if old is not record and old != record:
                self._dirty[shard_of(account_id, self.shards)] = self._updates
        self._records = after
        return after

    async def commit(self) -> None:
        """Write every shard changed by an update made before this call."""
        async with self._lock:
            target = self._updates
            for shard in sorted(s for s, update in self._dirty.items() if update <= target):
                try:
                    await self._write(shard)
                except KubernetesError as exc:
                    raise StateFileError(f"{self._where(shard)}: {exc}") from None
                if self._dirty.get(shard, 0) <= target:  # not changed again while it was written
                    self._dirty.pop(shard, None)

    def try_lock_account(self, account_id: str) -> bool:
        return True  # the Lease holds every account: only its holder rotates

    def unlock_account(self, account_id: str) -> None:
        pass

    # ----------------------------------------------------------------------- internals

    def _held_by(self, shard: int) -> dict[str, AccountRecord]:
        return {a: r for a, r in self._records.items() if shard_of(a, self.shards) == shard}

    async def _write(self, shard: int) -> None:
        name = self.shard_name(shard)
        for _ in range(WRITE_ATTEMPTS):
            data = {KEY: gzip.compress(encode(self._held_by(shard)).encode("utf-8"), mtime=0)}
            if shard == 0:
                data[SHARDS_KEY] = str(self.shards).encode("ascii")
            if len(data[KEY]) > MAX_SHARD_BYTES:
                raise StateFileError(
                    f"{self._where(shard)}: its share of the ledger is {len(data[KEY]):,} bytes gzipped, "
                    "more than a ConfigMap holds: raise leader_election.ledger_shards (and the RBAC "
                    "Role's resourceNames with it)"
                )
            try:
                written = await self._api.write_config_map(
                    name, ConfigMap(data, self._versions.get(shard)), deadline=self._deadline
                )
            except KubernetesConflict:
                # Changed since this process read it (or created meanwhile): merge, write again.
                theirs, self._versions[shard], _ = await self._read(shard)
                self._records = merge(self._records, theirs)
                # And the ledger's own view: its next read merges them (Ledger._refresh).
                self._fresh = merge(self._fresh or {}, theirs)
                continue
            except KubernetesNotFound:
                # Deleted since (by a person): what this process knows is written anew.
                self._versions[shard] = None
                continue
            self._versions[shard] = written.resource_version
            return
        raise KubernetesError(f"still changing under this write after {WRITE_ATTEMPTS} attempts")

    async def _read(self, shard: int) -> tuple[dict[str, AccountRecord], str | None, int]:
        """A shard's records, its resourceVersion, and (the first shard's) how many shards it was
        written with."""
        where = self._where(shard)
        found = await self._api.read_config_map(self.shard_name(shard), deadline=self._deadline)
        if found is None:
            return {}, None, self.shards if shard == 0 else 1
        body = found.binary_data.get(KEY)
        if body is None:
            raise StateFileError(
                f"{where}: has no {KEY}: not a rotator ledger. Delete it to start without the "
                "record of past rotations, or set leader_election.lease_name to use another name"
            )
        try:
            text = gzip.decompress(body).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise StateFileError(f"{where}: {KEY} is not gzipped UTF-8 text ({exc})") from None
        count = found.binary_data.get(SHARDS_KEY, b"1")
        if not count.isdigit() or not 1 <= int(count) <= MAX_SHARDS:
            raise StateFileError(f"{where}: its {SHARDS_KEY} is not a shard count from 1 to {MAX_SHARDS}")
        return decode(where, text), found.resource_version, int(count)
