"""Issue 16: every rotation decided at the moment it leaves, whatever waited before it.

The real ``rotator run`` against the simulator over HTTP, with a wait put between the first decision
and the POST (the credential's budget spent, a 429's pause, a connection slot held by others) and
something changed during it (a reload, the end of a maintenance window, SIGTERM). rotator reserves
first (rotator.cloudflare.client.Reservation), then decides, then sends: none of these POSTs leaves.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudflare_sim import Fault, SimulatorThread
from tests.e2e.test_ha import ELECTION, Replicas
from tests.support.kubeapi import KubeAPIServer
from tests.support.processes import daemon, events, write_config

MakeSimulator = Callable[..., SimulatorThread]


def _reload(running: Any, config: Path, write: Callable[[], None]) -> None:
    before = len(events(running.logs, "config_reloaded"))
    write()
    running.process.send_signal(signal.SIGHUP)
    running.wait_for("the reload", lambda: len(events(running.logs, "config_reloaded")) > before)


@pytest.mark.parametrize("change", ["dry_run", "removed"])
def test_a_reload_while_the_post_waits_for_its_budget_sends_nothing(
    change: str, make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(0)
    sim = simulator.sim
    due = sim.add_account(days_until_next_rotation=1)
    later = sim.add_account(days_until_next_rotation=20)
    accounts = [{"name": "due", "account_id": due}, {"name": "later", "account_id": later}]
    # One request per 6 s: the due account's read spends it, and its POST waits ~6 s. (First reads
    # are spread over the budget, so the other account's read is no longer sure to come first.)
    budget = {"rate_limit": {"requests": 1, "per": "6s"}, "timeout": "2s"}
    config = tmp_path / "config.yaml"
    write_config(config, simulator, accounts=accounts, cloudflare=budget)

    def edited() -> None:
        if change == "dry_run":
            write_config(config, simulator, accounts=accounts, cloudflare=budget, rotation={"dry_run": True})
        else:
            write_config(config, simulator, accounts=accounts[1:], cloudflare=budget)

    with daemon(config) as running:
        running.wait_for("the due account's rotation", lambda: events(running.logs, "rotation_started"))
        assert sim.requests(op="rotate") == []  # it waits for the budget
        _reload(running, config, edited)
        # The budget is back ~6 s after the reads: the rotation is decided again then.
        ended = running.wait_for(
            "the rotation's end",
            lambda: (
                events(running.logs, "rotation_skipped", account="due")
                or events(running.logs, "key_rotated", account="due")
                or events(running.logs, "rotation_failed", account="due")
            ),
            timeout=30,
        )
        assert running.terminate() == 0
    assert sim.requests(op="rotate") == [], ended
    assert sim.rotations(due) == []
    assert ended[0]["event"] == "rotation_skipped"
    assert ended[0]["reason"] == ("dry_run" if change == "dry_run" else "removed")


def test_a_429_pause_that_outlasts_the_window_sends_nothing_after_it_closed(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    # Cloudflare's clock (its Date) starts 12 s before the daily window 02:00-03:00 UTC closes.
    start = datetime(2026, 12, 1, 2, 59, 48, tzinfo=UTC)
    simulator = make_simulator(0, start=start)
    sim = simulator.sim
    due = sim.add_account(days_until_next_rotation=2)  # the next window opens before Cloudflare rotates
    sim.add_fault(Fault(kind="status", status=429, retry_after=15, op="rotate", account_id=due, times=1))
    accounts = [{"name": "windowed", "account_id": due, "windows": [{"cron": "0 2 * * *", "duration": "1h"}]}]
    config = write_config(tmp_path / "config.yaml", simulator, accounts=accounts)
    with daemon(config) as running:
        running.wait_for("the 429", lambda: sim.requests(op="rotate", outcome=429), timeout=30)
        assert sim.now() < start + timedelta(seconds=12), "the window closed before the test could start"
        ended = running.wait_for(
            "the rotation's end",
            lambda: (
                events(running.logs, "rotation_skipped", reason="outside_window")
                or events(running.logs, "key_rotated")
                or events(running.logs, "rotation_failed")
            ),
            timeout=40,
        )
        assert running.terminate() == 0
    closed = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    after_close = [r for r in sim.requests(op="rotate") if r.at >= closed]
    assert after_close == [], ended
    assert sim.rotations(due) == []
    assert ended[0]["event"] == "rotation_skipped"


def test_sigterm_sends_none_of_the_rotations_queued_on_a_connection_slot(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(0, latency=0.5)
    sim = simulator.sim
    due = [sim.add_account(days_until_next_rotation=1) for _ in range(5)]
    accounts = [{"name": f"due-{i}", "account_id": a} for i, a in enumerate(due)]
    # One connection: every request waits for the one before it (each takes 0.5 s).
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        accounts=accounts,
        cloudflare={"max_concurrency": 1, "timeout": "3s"},
    )
    with daemon(config) as running:
        running.wait_for(
            "three rotations queued",
            lambda: len(events(running.logs, "rotation_started")) >= 3,
            timeout=30,
        )
        stopped_at = sim.now()
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(timeout=30)
        running.close()
        time.sleep(1.0)  # anything still on its way would have arrived by now (0.5 s latency)
    assert code == 0
    # One request at most was on the wire at SIGTERM (one connection); no other POST may follow.
    after = [r for r in sim.requests(op="rotate") if r.at > stopped_at]
    assert len(after) <= 1, [(r.account_id, r.at - stopped_at) for r in after]
    assert events(running.logs, "rotation_failed", error_type="Abandoned")
    assert events(running.logs, "shutdown")


@pytest.fixture
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


def test_a_leader_that_loses_its_lease_while_its_post_waits_sends_nothing(
    make_simulator: MakeSimulator, kube: KubeAPIServer, tmp_path: Path
) -> None:
    simulator = make_simulator(0)
    sim = simulator.sim
    due = sim.add_account(days_until_next_rotation=1)
    # One request per 8 s: the leader's first read spends it, and its POST waits ~8 s: longer than
    # the 3 s Lease, which it cannot renew once the API server stops answering.
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        accounts=[{"name": "due", "account_id": due}],
        cloudflare={"timeout": "1s", "rate_limit": {"requests": 1, "per": "8s"}},
        leader_election=ELECTION,
    )
    with Replicas(config, kube.write_kubeconfig(tmp_path / "kubeconfig")) as replicas:
        leader = replicas.start()
        leader.wait_for("the rotation", lambda: events(leader.logs, "rotation_started"), timeout=30)
        # Let an intent committed before the wait (as the protocol did before issue 16) reach the
        # API server; then the API server stops answering: no renewal, the Lease runs out.
        time.sleep(0.5)
        kube.stall()
        leader.wait_for("leader_lost", lambda: events(leader.logs, "leader_lost"))
        ended = leader.wait_for(
            "the rotation's end",
            lambda: events(leader.logs, "rotation_failed") or events(leader.logs, "key_rotated"),
            timeout=30,
        )
        kube.unstall()
        assert leader.terminate() == 0
    assert sim.requests(op="rotate") == [], ended
    assert ended[0]["event"] == "rotation_failed"
