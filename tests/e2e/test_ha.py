"""Two and three real `rotator run` replicas, one simulator, one Kubernetes API stand-in.

Leader election on a Lease (rotator.ha.leader) and the ledger in a ConfigMap
(rotator.ha.configmap), exercised the way a Deployment of replicas meets them: exactly one
leader; SIGKILL and SIGTERM failovers and how long they take; no account rotated twice across
many failovers; a leader whose API calls hang stops acting; a fresh process remembers what its
predecessor began. Timings are shortened (a 3 s Lease) so that failovers take seconds.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cloudflare_sim import SimulatorThread
from cloudflare_sim.core import Fault
from rotator.web.status import schema
from tests.support.kubeapi import KubeAPIServer
from tests.support.processes import Daemon, environment, events, free_port, rotator, write_config

LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
NAMESPACE = "rotator"
LEADERSHIP_EVENTS = ("leader_elected", "leader_lost", "leader_released")
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
    """Replicas of one config, started and stopped as a Deployment's pods would be; a context
    manager that kills whichever still run when it ends."""

    def __init__(self, config: Path, kubeconfig: Path) -> None:
        self.config = config
        self.kubeconfig = kubeconfig
        self.started = 0
        self.running: list[Daemon] = []

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        for replica in self.running:
            replica.close()

    def start(self) -> Daemon:
        self.started += 1
        # Each its own port, as pods have their own network namespace.
        settings = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        settings["http"]["listen"] = f"127.0.0.1:{free_port()}"
        config = self.config.with_name(f"replica-{self.started}.yaml")
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        env = environment(KUBECONFIG=str(self.kubeconfig), POD_NAME=f"rotator-{self.started}")
        replica = Daemon(config, env)
        self.running.append(replica)
        return replica

    def leader(self) -> Daemon | None:
        leading = [r for r in self.running if r.process.poll() is None and is_leader(r)]
        assert len(leading) <= 1, "two replicas lead at once"
        return leading[0] if leading else None

    def wait_for_leader(self, timeout: float = 20, *, besides: Daemon | None = None) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader is not besides:
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


def lease_time(kube: KubeAPIServer, field: str) -> datetime:
    lease = kube.lease(NAMESPACE, "rotator")
    assert lease is not None
    return datetime.fromisoformat(lease["spec"][field])


def acted(replica: Daemon, intents: int, checked: int) -> Callable[[], bool]:
    """Whether ``replica`` recorded another intent, or checked every account once more."""

    def predicate() -> bool:
        logs = replica.logs
        return (
            len(events(logs, "rotation_intent")) > intents
            or len(events(logs, "account_checked")) >= checked + 6
        )

    return predicate


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
    """Every account's record, from every shard of the ledger (16 ConfigMaps by default)."""
    assert kube.configmap(NAMESPACE, "rotator-ledger") is not None, "no ledger ConfigMap"
    records: dict[str, Any] = {}
    for name in ["rotator-ledger", *(f"rotator-ledger-{n}" for n in range(1, 16))]:
        found = kube.configmap(NAMESPACE, name)
        if found is not None:
            body = base64.b64decode(found["binaryData"]["ledger.json.gz"])
            records |= json.loads(gzip.decompress(body))["accounts"]
    return records


def test_two_replicas_elect_exactly_one_leader_that_alone_checks(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    sim = make_simulator(3)
    config = ha_config(tmp_path, sim)
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
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
        # The Service sends a reader to either replica: the follower's status page says who leads.
        holder = kube.lease(NAMESPACE, "rotator")["spec"]["holderIdentity"]  # type: ignore[index]
        follower.wait_for(
            "the follower's next read of the Lease",
            lambda: follower.get("/status").json()["leader_election"]["holder"] == holder,
        )
        statuses = {r: r.get("/status").json() for r in (first, second)}
        for status in statuses.values():
            jsonschema.validate(status, schema())
        assert statuses[leader]["leader_election"] == {"leading": True, "holder": holder}
        assert statuses[follower]["leader_election"] == {"leading": False, "holder": holder}
        assert f"This replica follows ({holder} leads)" in follower.get("/").text
        assert "This replica follows" not in leader.get("/").text
        lease = kube.lease(NAMESPACE, "rotator")
        assert lease is not None and lease["spec"]["holderIdentity"].startswith("rotator-")
        assert first.terminate() == 0 and second.terminate() == 0
    # The rotation is in the ConfigMap ledger, written before its POST left.
    account_id = sim.sim.account_ids[0]
    assert ledger(kube)[account_id]["rotation"]["state"] == "done"
    assert len(sim.sim.rotations(account_id)) >= 1


def test_a_follower_leads_soon_after_the_leader_is_killed_and_at_once_after_it_is_stopped(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    """SIGKILL: the Lease must run out first (lease_duration, seen by the follower's own clock,
    plus up to a retry_period on each side). SIGTERM: the leader releases it, so a follower leads
    at its next try."""
    sim = make_simulator(3)
    config = ha_config(tmp_path, sim)
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
        replicas.start(), replicas.start()
        leader = replicas.wait_for_leader()
        leader.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.process.wait()
        last_renewal = lease_time(kube, "renewTime")
        second = replicas.wait_for_leader(besides=leader)
        after_kill = time.monotonic() - killed
        # Nobody took the Lease over sooner than lease_duration after its last renewal (both
        # times written by this machine's clock).
        assert lease_time(kube, "acquireTime") - last_renewal >= timedelta(seconds=LEASE_DURATION)

        replicas.start().wait_ready()  # the Deployment's replacement, following
        second.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        third = replicas.wait_for_leader(besides=second)
        after_stop = time.monotonic() - stopped
        assert second.process.wait(timeout=30) == 0
        assert events(second.logs, "leader_released")
        assert third.terminate() == 0
    print(f"\nfailover: {after_kill:.2f} s after SIGKILL, {after_stop:.2f} s after SIGTERM")
    assert after_kill < LEASE_DURATION + 2 * RETRY_PERIOD + 1.0
    # Sooner than the Lease could have run out (at least lease_duration - retry_period after the
    # signal, without a release): it was released.
    assert after_stop < LEASE_DURATION - RETRY_PERIOD


def test_no_account_is_rotated_twice_across_twenty_failovers(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    """Three replicas; twenty times the leader is killed (SIGKILL and SIGTERM in turn) just as
    rotations fall due, and a replacement starts. Cloudflare's record shows every rotation rotator
    made: none of an account within min_days_between_rotations (7 days) of the one before."""
    sim = make_simulator(6)
    config = ha_config(tmp_path, sim)
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
        for _ in range(3):
            replicas.start()
        leader = replicas.wait_for_leader()
        for round in range(20):
            intents = len(events(leader.logs, "rotation_intent"))
            checked = len(events(leader.logs, "account_checked"))
            sim.sim.advance(9)  # more accounts fall due: the leader starts rotating them now
            # Killed as soon as it records an intent (its POST about to leave, or on the wire), or
            # after a whole pass found nothing to rotate.
            leader.wait_for("a rotation begun, or a pass", acted(leader, intents, checked))
            leader.process.send_signal(signal.SIGKILL if round % 2 == 0 else signal.SIGTERM)
            leader.process.wait(timeout=30)
            replicas.start()
            leader = replicas.wait_for_leader(besides=leader)
        leader.wait_for("the last rotations", lambda: events(leader.logs, "account_checked"))
        for replica in replicas.running:
            if replica.process.poll() is None:
                replica.wait_ready()  # its signal handlers installed
                assert replica.terminate() == 0
    rotated = 0
    for account_id in sim.sim.account_ids:
        ours = [r.at for r in sim.sim.rotations(account_id) if r.source == "api"]
        rotated += len(ours)
        for before, after in itertools.pairwise(ours):
            assert after - before >= timedelta(days=7), f"{account_id} rotated twice: {before}, {after}"
    # The rounds did make rotations fall due, and some were made. (A leader killed with its POST
    # on the wire leaves the account held until a read settles it: settle_time, 10 minutes at
    # least, so fewer than one a round.)
    assert rotated >= 5


def test_a_leader_whose_api_calls_hang_stops_acting_before_another_can_lead(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    sim = make_simulator(3)
    config = ha_config(tmp_path, sim)
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
        replicas.start(), replicas.start()
        leader = replicas.wait_for_leader()
        leader.wait_for("a first pass", lambda: events(leader.logs, "key_rotated"))
        kube.stall()
        stalled = time.monotonic()
        sim.sim.advance(30)  # every account due: a leader would rotate them all
        lost_event = leader.wait_for("leader_lost", lambda: events(leader.logs, "leader_lost"))[0]
        stepped_down = time.monotonic() - stalled
        last_renewal = lease_time(kube, "renewTime")  # the stand-in's store, read past the stall
        lost = len(leader.logs)
        # Time passing, as the replica itself tells it: two more of its tries at the Lease fail.
        leader.wait_for(
            "two failed tries at the Lease",
            lambda: len(events(leader.logs[lost:], "leader_election_failed")) >= 2,
        )
        acted = [e for e in leader.logs[lost:] if e["event"] in ("account_checked", "rotation_intent")]
        assert acted == []
        kube.unstall()
        replicas.wait_for_leader()
        for replica in replicas.running:
            assert replica.terminate() == 0
    print(f"\nstepped down {stepped_down:.2f} s after the API server stopped answering")
    # Before the Lease could pass to another: no follower counts it expired sooner than
    # lease_duration after the last renewal (both times from this machine's clock).
    stopped_at = datetime.fromisoformat(lost_event["timestamp"])
    assert stopped_at - last_renewal < timedelta(seconds=LEASE_DURATION)


def test_a_new_leader_remembers_the_rotation_its_predecessor_had_on_the_wire(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    """The leader is killed while its rotate POST hangs. The intent was in the ConfigMap before the
    POST left, so the replica that takes over holds the account (unsettled), and sends nothing."""
    sim = make_simulator(3)
    sim.sim.add_fault(Fault(kind="hang", op="rotate"))
    config = ha_config(tmp_path, sim)
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
        first = replicas.start()
        first.wait_for("rotation_sent", lambda: events(first.logs, "rotation_sent"))
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        assert ledger(kube)[sim.sim.account_ids[0]]["rotation"]["state"] in ("intent", "sent")
        # `rotator check` reads the leader's ledger too: it says what the next leader will do.
        env = environment(KUBECONFIG=str(replicas.kubeconfig))
        checked = rotator("check", "--json", "-c", str(config), env=env)
        assert checked.returncode == 0, checked.stderr
        account = json.loads(checked.stdout)["accounts"][0]
        assert (account["account"], account["reason"]) == ("account-0", "unsettled")
        second = replicas.start()
        second.wait_for("ledger_loaded", lambda: events(second.logs, "ledger_loaded"), timeout=30)
        skipped = second.wait_for(
            "rotation_skipped", lambda: events(second.logs, "rotation_skipped", account="account-0")
        )
        assert second.terminate() == 0
    assert skipped[0]["reason"] == "unsettled"
    assert events(second.logs, "rotation_unconfirmed", account="account-0")
    assert len(sim.sim.requests(op="rotate")) == 1
    assert ledger(kube)[sim.sim.account_ids[0]]["rotation"]["state"] == "unconfirmed"


def test_run_once_refuses_beside_a_leader(simulator: SimulatorThread, tmp_path: Path) -> None:
    config = ha_config(tmp_path, simulator)
    done = rotator("run", "--once", "-c", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"rotator: error: {config}: leader_election is enabled, so only the elected leader (rotator run) "
        "rotates; `rotator run --once` would act beside it. Run `rotator run` (the replicas elect a "
        "leader), or `rotator rotate ACCOUNT`, which rotates as the leader when no replica holds the Lease"
    )
    assert simulator.sim.requests() == []


def test_rotate_rotates_as_the_leader_when_none_runs_and_says_who_leads_when_one_does(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    """With the replicas scaled to 0, `rotator rotate` takes the Lease, records its rotation in the
    leader's ledger and releases the Lease; beside a live leader it sends nothing and says who leads."""
    sim = make_simulator(3)
    config = ha_config(tmp_path, sim)
    env = environment(KUBECONFIG=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    account_id = sim.sim.account_ids[1]  # not due: a person asks
    done = rotator("rotate", "account-1", "-c", str(config), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ledger(kube)[account_id]["rotation"]["state"] == "done"
    lease = kube.lease(NAMESPACE, "rotator")
    assert lease is not None and lease["spec"].get("holderIdentity") is None  # released

    with Replicas(config, Path(env["KUBECONFIG"])) as replicas:
        leader = replicas.start()
        replicas.wait_for_leader()
        leader.wait_ready()
        refused = rotator("rotate", "account-2", "-c", str(config), env=env)
        holder = kube.lease(NAMESPACE, "rotator")["spec"]["holderIdentity"]  # type: ignore[index]
        assert leader.terminate() == 0
    assert refused.returncode == 1
    assert refused.stdout.strip() == (
        f"account-2: not rotated: the Lease {NAMESPACE}/rotator is held by {holder}, which renews it: only "
        "the leader rotates, and it rotates a due account at its next check (to rotate now, scale the "
        "replicas to 0 and run this again)"
    )
    # Nothing sent beside the leader (which rotates account-0, due, on its own).
    assert sim.sim.requests(op="rotate", account_id=sim.sim.account_ids[2]) == []


def test_run_without_a_kubernetes_api_says_where_it_looked(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    config = ha_config(tmp_path, simulator)
    missing = tmp_path / "no-kubeconfig"
    done = rotator("run", "-c", str(config), env=environment(KUBECONFIG=str(missing)))
    assert done.returncode == 3
    assert done.stderr.strip() == (
        "rotator: error: leader_election is enabled, but no Kubernetes API is configured: not in a pod "
        f"($KUBERNETES_SERVICE_HOST unset) and no kubeconfig at {missing}"
    )
    assert "Traceback" not in done.stdout + done.stderr


# --- Kubernetes Events (issue 18, item 5) ----------------------------------------------------------


def lease_events(kube: KubeAPIServer) -> list[dict[str, Any]]:
    return [e for e in kube.events(NAMESPACE) if e["regarding"].get("kind") == "Lease"]


def test_the_leaders_rotation_and_its_publication_verdict_are_events_about_the_lease(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    sim = make_simulator(3)
    certs = {"enabled": True, "certs_url": sim.sim.certs_url_template}
    config = ha_config(tmp_path, sim, publication=certs)
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
        leader = replicas.start()
        replicas.wait_for_leader()
        leader.wait_for(
            "account-0 published", lambda: events(leader.logs, "key_published", account="account-0")
        )
        found = leader.wait_for(
            "two Events", lambda: (found := lease_events(kube)) and len(found) >= 2 and found
        )
        holder = kube.lease(NAMESPACE, "rotator")["spec"]["holderIdentity"]  # type: ignore[index]
        uid = kube.lease(NAMESPACE, "rotator")["metadata"]["uid"]  # type: ignore[index]
        assert leader.terminate() == 0
    rotated, published = found[:2]
    assert (rotated["type"], rotated["reason"], rotated["action"]) == ("Normal", "KeyRotated", "Rotate")
    assert (published["type"], published["reason"]) == ("Normal", "KeyPublished")
    for event in (rotated, published):
        # On the Lease (kubectl describe lease rotator matches them by uid), by the leader's pod.
        assert event["regarding"]["name"] == "rotator" and event["regarding"]["uid"] == uid
        assert event["reportingInstance"] == holder and event["reportingInstance"].startswith("rotator-1")
        assert event["note"].startswith(f"account account-0 ({sim.sim.account_ids[0]}): ")
    assert "signing key rotated (reason: due)" in rotated["note"]
    assert sim.sim.current_kid(sim.sim.account_ids[0]) in published["note"]


def test_rotate_by_hand_records_a_failed_rotation_as_a_warning_event(
    make_simulator: Any, kube: KubeAPIServer, tmp_path: Path
) -> None:
    sim = make_simulator(3)
    account_id = sim.sim.account_ids[1]
    sim.sim.add_fault(Fault(kind="status", status=400, op="rotate", account_id=account_id, message="no"))
    config = ha_config(tmp_path, sim)
    env = environment(KUBECONFIG=str(kube.write_kubeconfig(tmp_path / "kubeconfig")), POD_NAME="ops-shell")
    done = rotator("rotate", "account-1", "-c", str(config), env=env)

    assert done.returncode == 1, done.stdout + done.stderr
    (failed,) = lease_events(kube)
    assert (failed["type"], failed["reason"], failed["action"]) == ("Warning", "RotationFailed", "Rotate")
    assert failed["reportingInstance"].startswith("ops-shell")
    assert failed["note"].startswith(f"account account-1 ({account_id}): rotation failed: ")
    assert "400" in failed["note"]
