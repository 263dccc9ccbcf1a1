"""Two and three real `rotator run` replicas, one simulator, one Kubernetes API stand-in.

Leader election on a Lease (rotator.leader) and the ledger in a ConfigMap
(rotator.ledger_configmap), exercised the way a Deployment of replicas meets them: exactly one
leader; SIGKILL and SIGTERM failovers and how long they take; no account rotated twice across
many failovers; a leader whose API calls hang stops acting; a fresh process remembers what its
predecessor began. Timings are shortened (a 3 s Lease) so that failovers take seconds.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.simulator import SimulatorThread
from tests.kubeapi import KubeAPIServer
from tests.processes import Daemon, environment, events, free_port, write_config

LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
NAMESPACE = "rotator"
ELECTION = {
    "enabled": True,
    "lease_duration": f"{LEASE_DURATION}s",
    "renew_deadline": f"{RENEW_DEADLINE}s",
    "retry_period": f"{RETRY_PERIOD}s",
}


@pytest.fixture
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


class Replicas:
    """Replicas of one config, started and stopped as a Deployment's pods would be."""

    def __init__(self, config: Path, kubeconfig: Path, stack: ExitStack) -> None:
        self.config = config
        self.kubeconfig = kubeconfig
        self.stack = stack
        self.started = 0
        self.running: list[Daemon] = []

    def start(self) -> Daemon:
        self.started += 1
        # Each its own port, as pods have their own network namespace.
        settings = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        settings["http"]["listen"] = f"127.0.0.1:{free_port()}"
        config = self.config.with_name(f"replica-{self.started}.yaml")
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        env = environment(KUBECONFIG=str(self.kubeconfig), POD_NAME=f"rotator-{self.started}")
        replica = Daemon(config, env)
        self.stack.callback(replica.close)
        self.running.append(replica)
        return replica

    def leader(self) -> Daemon | None:
        leading = [r for r in self.running if r.process.poll() is None and is_leader(r)]
        assert len(leading) <= 1, "two replicas lead at once"
        return leading[0] if leading else None

    def wait_for_leader(self, timeout: float = 20) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.02)
        raise AssertionError(
            "no replica became the leader; they said:\n"
            + "\n".join("".join(r.output[-30:]) for r in self.running)
        )


def is_leader(replica: Daemon) -> bool:
    """The replica's own word: its latest leadership event."""
    said = [
        e["event"] for e in replica.logs if e["event"] in ("leader_elected", "leader_lost", "leader_released")
    ]
    return bool(said) and said[-1] == "leader_elected"


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exposed")


def ha_config(tmp_path: Path, sim: SimulatorThread, **sections: Any) -> Path:
    sections.setdefault("cloudflare", {"timeout": "1s"})
    sections.setdefault("schedule", {"check_interval": "1s", "jitter": "0s"})
    return write_config(tmp_path / "config.yaml", sim, leader_election=ELECTION, **sections)


def ledger(kube: KubeAPIServer) -> dict[str, Any]:
    found = kube.configmap(NAMESPACE, "rotator-ledger")
    assert found is not None, "no ledger ConfigMap"
    body = base64.b64decode(found["binaryData"]["ledger.json.gz"])
    return json.loads(gzip.decompress(body))["accounts"]


def test_two_replicas_elect_exactly_one_leader_that_alone_checks(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    sim = make_simulator(3)
    config = ha_config(tmp_path, sim)
    with ExitStack() as stack:
        replicas = Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig"), stack)
        first, second = replicas.start(), replicas.start()
        leader = replicas.wait_for_leader()
        follower = second if leader is first else first
        leader.wait_for("a rotation", lambda: events(leader.logs, "key_rotated"))
        for replica in (first, second):
            replica.wait_ready()
        texts = {r: r.get("/metrics").text for r in (first, second)}
        assert metric(texts[leader], "rotator_leader") == 1
        assert metric(texts[follower], "rotator_leader") == 0
        assert metric(texts[leader], "rotator_leader_transitions_total") == 1
        assert not events(follower.logs, "account_checked")
        lease = kube.lease(NAMESPACE, "rotator")
        assert lease is not None and lease["spec"]["holderIdentity"].startswith("rotator-")
        assert first.terminate() == 0 and second.terminate() == 0
    # The rotation is in the ConfigMap ledger, written before its POST left.
    account_id = sim.sim.account_ids[0]
    assert ledger(kube)[account_id]["rotation"]["state"] == "done"
    assert len(sim.sim.rotations(account_id)) >= 1
