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
to 256 KiB in all, a ConfigMap to 1 MiB. The ledger is stored gzipped in ``binaryData`` (about 56
bytes an account against 360 as JSON), so one ConfigMap holds some 18,000 accounts; read it with
``kubectl get configmap rotator-ledger -o jsonpath='{.binaryData.ledger\\.json\\.gz}' | base64 -d |
gunzip``.

Updates are kept in memory until ``commit()`` writes them: the rotation protocol commits the
intent before its POST leaves (and sends nothing if that fails) and every later step after it.
Only the leader writes; the Lease is what keeps two processes from holding one account, so the
per-account locks of the state file are not needed here.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

from rotator.config.model import LeaderElectionSettings
from rotator.errors import KubernetesConflict, KubernetesError, KubernetesNotFound, StateFileError
from rotator.ha.kube import ConfigMap, KubeAPI
from rotator.ledger.ledger import AccountRecord, decode, encode, merge

KEY = "ledger.json.gz"
# A write that keeps meeting a newer version (409) gives up after this many tries.
WRITE_ATTEMPTS = 5


class ConfigMapStore:
    def __init__(self, api: KubeAPI, name: str, *, deadline: float) -> None:
        """``deadline``: the longest one API call may take, in seconds."""
        self.name = name
        self._api = api
        self._deadline = deadline
        self._records: dict[str, AccountRecord] = {}
        self._version: str | None = None  # the resourceVersion last read or written
        self._fresh: dict[str, AccountRecord] | None = None
        self._updates = 0  # updates made in memory
        self._committed = 0  # of which written
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, api: KubeAPI, settings: LeaderElectionSettings) -> ConfigMapStore:
        """The ledger of ``settings``' election: ``<lease_name>-ledger``, calls bounded by
        ``renew_deadline``."""
        return cls(api, settings.ledger_name, deadline=settings.renew_deadline)

    @property
    def where(self) -> str:
        return f"the ConfigMap {self._api.namespace}/{self.name}"

    async def load(self) -> None:
        """Read the ConfigMap (when this process starts leading): the next read of the ledger
        merges it into what this process knows."""
        async with self._lock:
            records, self._version = await self._read()
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
        self._records = change(merge(mine, self._records))
        self._updates += 1
        return self._records

    async def commit(self) -> None:
        async with self._lock:
            target = self._updates
            if self._committed >= target:
                return
            try:
                await self._write()
            except KubernetesError as exc:
                raise StateFileError(f"{self.where}: {exc}") from None
            self._committed = max(self._committed, target)

    def try_lock_account(self, account_id: str) -> bool:
        return True  # the Lease holds every account: only its holder rotates

    def unlock_account(self, account_id: str) -> None:
        pass

    # ----------------------------------------------------------------------- internals

    async def _write(self) -> None:
        for _ in range(WRITE_ATTEMPTS):
            body = gzip.compress(encode(self._records).encode("utf-8"), mtime=0)
            try:
                written = await self._api.write_config_map(
                    self.name, ConfigMap({KEY: body}, self._version), deadline=self._deadline
                )
            except KubernetesConflict:
                # Changed since this process read it (or created meanwhile): merge, write again.
                theirs, self._version = await self._read()
                self._records = merge(self._records, theirs)
                # And the ledger's own view: its next read merges them (Ledger._refresh).
                self._fresh = merge(self._fresh or {}, theirs)
                continue
            except KubernetesNotFound:
                # Deleted since (by a person): what this process knows is written anew.
                self._version = None
                continue
            self._version = written.resource_version
            return
        raise KubernetesError(f"still changing under this write after {WRITE_ATTEMPTS} attempts")

    async def _read(self) -> tuple[dict[str, AccountRecord], str | None]:
        found = await self._api.read_config_map(self.name, deadline=self._deadline)
        if found is None:
            return {}, None
        body = found.binary_data.get(KEY)
        if body is None:
            raise StateFileError(
                f"{self.where}: has no {KEY}: not a rotator ledger. Delete it to start without the "
                "record of past rotations, or set leader_election.lease_name to use another name"
            )
        try:
            text = gzip.decompress(body).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise StateFileError(f"{self.where}: {KEY} is not gzipped UTF-8 text ({exc})") from None
        return decode(self.where, text), found.resource_version
