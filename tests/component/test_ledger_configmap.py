"""The rotation ledger in a ConfigMap (rotator.ha.configmap), over real HTTP to the stand-in."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.records import AccountRecord, State
from rotator.errors import StateFileError
from rotator.ha.configmap import KEY, ConfigMapStore
from rotator.ha.kube import KubeAPI
from rotator.ledger.ledger import Ledger
from rotator.redaction import REDACTOR
from tests.support.kubeapi import KubeAPIServer

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER = "9a7806061c88ada191ed06f989cc3dac"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        # The process's own discovery, as `rotator run` would find it.
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server


def run(work: Any) -> Any:
    return asyncio.run(work)


async def _store() -> tuple[KubeAPI, ConfigMapStore]:
    api = await KubeAPI.connect(None)
    return api, ConfigMapStore(api, "rotator-ledger", deadline=5)


def test_an_intent_committed_is_what_a_fresh_process_reads(kube: KubeAPIServer) -> None:
    async def first() -> None:
        api, store = await _store()
        await store.load()
        ledger = Ledger(store=store)
        ledger.begin(ACCOUNT, at=NOW, rotates_from=None)
        await ledger.commit()
        await api.close()

    async def second() -> State | None:
        api, store = await _store()
        await store.load()
        record = Ledger(store=store).record(ACCOUNT)
        await api.close()
        return record.rotation.state if record.rotation else None

    run(first())
    assert os.environ["KUBECONFIG"]  # found through $KUBECONFIG, namespace from its context
    assert kube.configmap("rotator", "rotator-ledger") is not None
    assert run(second()) is State.INTENT


def test_a_write_that_meets_a_newer_version_merges_it(kube: KubeAPIServer) -> None:
    """A deposed leader records how its last POST ended while the new one writes: neither loses."""

    async def both() -> tuple[State | None, State | None]:
        api, old = await _store()
        api_new, new = await _store()
        await old.load()
        await new.load()
        old_ledger, new_ledger = Ledger(store=old), Ledger(store=new)
        rotation = old_ledger.begin(ACCOUNT, at=NOW, rotates_from=None)
        await old_ledger.commit()
        new_ledger.begin(OTHER, at=NOW, rotates_from=None)
        await new_ledger.commit()  # its version is older than the ConfigMap's now: 409, merge, write
        old_ledger.done(ACCOUNT, rotation, at=NOW, why="Cloudflare answered 200")
        await old_ledger.commit()  # and again
        api_fresh, fresh = await _store()
        await fresh.load()
        ledger = Ledger(store=fresh)
        for each in (api, api_new, api_fresh):
            await each.close()
        states = [ledger.record(a).rotation for a in (ACCOUNT, OTHER)]
        return tuple(r.state if r else None for r in states)  # type: ignore[return-value]

    assert run(both()) == (State.DONE, State.INTENT)


def test_a_configmap_that_is_not_a_ledger_stops_the_leader_with_its_name(kube: KubeAPIServer) -> None:
    async def foreign() -> None:
        api, store = await _store()
        await api._core.create_namespaced_config_map(
            "rotator",
            {"metadata": {"name": "rotator-ledger"}, "binaryData": {KEY: base64.b64encode(b"nope").decode()}},
        )
        try:
            await store.load()
        finally:
            await api.close()

    with pytest.raises(StateFileError) as caught:
        run(foreign())
    assert str(caught.value).startswith(
        f"the ConfigMap rotator/rotator-ledger: {KEY} is not gzipped UTF-8 text"
    )


def test_an_intent_that_cannot_be_written_is_an_error_before_the_post(kube: KubeAPIServer) -> None:
    async def refused() -> None:
        api, store = await _store()
        await store.load()
        ledger = Ledger(store=store)
        ledger.begin(ACCOUNT, at=NOW, rotates_from=None)
        kube.fail_next(1, 403)
        try:
            await ledger.commit()
        finally:
            await api.close()

    with pytest.raises(StateFileError) as caught:
        run(refused())
    assert str(caught.value).startswith("the ConfigMap rotator/rotator-ledger: creating the ConfigMap")
    assert "403" in str(caught.value)


def test_a_ledger_configmap_deleted_by_hand_is_written_anew(kube: KubeAPIServer) -> None:
    async def deleted() -> State | None:
        api, store = await _store()
        await store.load()
        ledger = Ledger(store=store)
        rotation = ledger.begin(ACCOUNT, at=NOW, rotates_from=None)
        await ledger.commit()
        await api._core.delete_namespaced_config_map("rotator-ledger", "rotator")
        ledger.done(ACCOUNT, rotation, at=NOW, why="Cloudflare answered 200")
        await ledger.commit()
        api_fresh, fresh = await _store()
        await fresh.load()
        record = Ledger(store=fresh).record(ACCOUNT)
        for each in (api, api_fresh):
            await each.close()
        return record.rotation.state if record.rotation else None

    assert run(deleted()) is State.DONE


def test_more_accounts_than_a_configmap_holds_fit_in_shards(kube: KubeAPIServer) -> None:
    """The API server refuses a ConfigMap over 1 MiB: one holds some 13,000 accounts' records (each
    with a rotation on record); 20,000 fit in two shards, read back whole by a new leader. (The 16
    default shards hold 100,000 the same way: 24 s here, too slow for this suite.)"""
    # As the ledger records them (its own transitions would take a merge of all 100,000 each).
    one = Ledger().begin(ACCOUNT, at=NOW, rotates_from=None)

    def record(n: int) -> AccountRecord:
        at = NOW - timedelta(seconds=n * 7919 % 3_600_000, microseconds=n * 104729 % 1_000_000)
        rotation = replace(one, id=uuid.uuid4().hex, intended_at=at)
        return AccountRecord(last_done=at, observed=at, rotation=rotation)

    records = {uuid.uuid4().hex: record(n) for n in range(20_000)}

    async def fill(shards: int) -> int:
        api = await KubeAPI.connect(None)
        store = ConfigMapStore(api, "rotator-ledger", deadline=30, shards=shards)
        try:
            await store.load()
            store.update({}, lambda mine: mine | records)
            await store.commit()
            fresh = ConfigMapStore(api, "rotator-ledger", deadline=30, shards=shards)
            await fresh.load()
            return len(fresh.read())
        finally:
            await api.close()

    assert run(fill(2)) == len(records)
    assert kube.configmap("rotator", "rotator-ledger-1") is not None
    with pytest.raises(StateFileError) as caught:
        run(fill(1))
    assert "more than a ConfigMap holds: raise leader_election.ledger_shards" in str(caught.value)


def test_a_why_that_quotes_a_secret_is_written_redacted(kube: KubeAPIServer) -> None:
    """A rotation's why quotes Cloudflare's answer, and an answer may echo the token."""
    token = "cm-ledger-token-0123456789abcdef"
    REDACTOR.remember(token)

    async def write() -> None:
        api, store = await _store()
        await store.load()
        ledger = Ledger(store=store)
        rotation = ledger.begin(ACCOUNT, at=NOW, rotates_from=None)
        ledger.not_applied(ACCOUNT, rotation, at=NOW, why=f"Cloudflare answered 400 (bad token {token})")
        await ledger.commit()
        await api.close()

    run(write())
    stored = kube.configmap("rotator", "rotator-ledger")
    assert stored is not None
    text = gzip.decompress(base64.b64decode(stored["binaryData"][KEY])).decode()
    assert token not in text
    assert "bad token [REDACTED]" in text
