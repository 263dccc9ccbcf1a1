"""Failover times with the default leader election timings, measured on real replicas.

    .venv/bin/python bench/failover.py [--rounds 5]

Two `rotator run` replicas against the simulator and the Kubernetes API stand-in
(tests/support/kubeapi.py), `lease_duration` 15s, `renew_deadline` 10s, `retry_period` 2s. Each round
stops the leader, once with SIGTERM and once with SIGKILL, starts a replacement (as a Deployment
would), and times how long until another replica says `leader_elected`, and until it has read
the ledger and checked an account (`account_checked`).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudflare_sim import Simulator, SimulatorThread
from tests.e2e.test_ha import Replicas
from tests.support.kubeapi import KubeAPIServer
from tests.support.processes import Daemon, events, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    measured: dict[str, list[tuple[float, float]]] = {"SIGTERM": [], "SIGKILL": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        KubeAPIServer() as kube,
        SimulatorThread(Simulator.with_accounts(3, token="test-token")) as sim,  # noqa: S106 (a simulator)
    ):
        directory = Path(tmp)
        config = write_config(
            directory / "config.yaml",
            sim,
            leader_election={"enabled": True},
            schedule={"check_interval": "1h", "jitter": "0s"},
        )
        with Replicas(config, kube.write_kubeconfig(directory / "kubeconfig")) as replicas:
            for _ in range(2):
                replicas.start()
            leader = replicas.wait_for_leader(timeout=60)
            for _ in range(args.rounds):
                for how in (signal.SIGTERM, signal.SIGKILL):
                    leader = _fail_over(replicas, leader, how, measured[how.name])
    for how, times in measured.items():
        elected = [t[0] for t in times]
        checked = [t[1] for t in times]
        print(
            f"{how}: new leader after {statistics.median(elected):.2f} s median ({min(elected):.2f}-"
            f"{max(elected):.2f}), first check after {statistics.median(checked):.2f} s median "
            f"({min(checked):.2f}-{max(checked):.2f}), {len(times)} rounds"
        )


def _fail_over(
    replicas: Replicas, leader: Daemon, how: signal.Signals, times: list[tuple[float, float]]
) -> Daemon:
    """Stop the leader with ``how``, time the new one, start a replacement; the new leader."""
    for replica in replicas.running:
        if replica.process.poll() is None:
            replica.wait_ready(timeout=60)
    leader.process.send_signal(how)
    stopped = time.monotonic()
    new = replicas.wait_for_leader(timeout=60, besides=leader)
    elected = time.monotonic() - stopped
    checked_before = len(events(new.logs, "account_checked"))
    new.wait_for("a check", lambda: len(events(new.logs, "account_checked")) > checked_before, timeout=60)
    times.append((elected, time.monotonic() - stopped))
    leader.process.wait(timeout=60)
    replicas.start()
    print(f"{how.name}: leader after {elected:.2f} s, first check after {times[-1][1]:.2f} s")
    return new


if __name__ == "__main__":
    main()
