"""Soak: 120 simulated days, 50 accounts, about one request in ten failing at random.

A simulated day lasts a quarter of a second; the daemon judges time by the simulator's clock
(the Date header of each answer), so its policy sees the days pass while its checks run every
half simulated day. Cloudflare's own rotation must never be the one that happens.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

from cloudflare_sim import Fault, Simulator, SimulatorThread
from tests.support.processes import TOKEN, daemon, write_config

DAY_SECONDS = 0.25
DAYS = 120
ACCOUNTS = 50
INTERVAL_DAYS = 30
THRESHOLD_DAYS = 8  # generous: a simulated day is a quarter second, and CI machines stall
MIN_GAP_DAYS = 7
RANDOM_FAULTS = [
    # Stale reads are not in the mix: a read that is still stale settle_time after a lost rotate
    # answer (an hour, here a few milliseconds) is indistinguishable from "not applied" (README,
    # Safety). tests/e2e/test_faults.py and tests/e2e/test_exactly_once.py cover stale reads on their own.
    Fault(kind="status", status=500, html=True, ratio=0.04),
    Fault(kind="drop", ratio=0.02),
    Fault(kind="not_json", ratio=0.01),
    Fault(kind="apply_then_status", op="rotate", status=502, html=True, ratio=0.1),
    Fault(kind="hang", ratio=0.01),
    Fault(kind="success_false", ratio=0.01),
]


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_120_days_of_rotations_under_random_failures(tmp_path: Path) -> None:
    sim = Simulator(tokens={TOKEN: "write"}, day_seconds=DAY_SECONDS, seed=20261127, hang_seconds=1.0)
    for i in range(ACCOUNTS):
        # Due in 4 to 20 days: after the daemon's start-up (a few simulated days), spread out.
        sim.add_account(interval_days=INTERVAL_DAYS, days_until_next_rotation=12 + 16 * i / ACCOUNTS)
    for fault in RANDOM_FAULTS:
        sim.add_fault(fault)
    start = sim.now()
    with SimulatorThread(sim) as running_sim:
        config = write_config(
            tmp_path / "config.yaml",
            running_sim,
            cloudflare={
                "timeout": "100ms",
                "max_concurrency": 8,
                "rate_limit": {"requests": 10**6, "per": "5m"},
            },
            schedule={"check_interval": f"{DAY_SECONDS / 2}s", "jitter": "0s"},
            rotation={"threshold_days": THRESHOLD_DAYS, "min_days_between_rotations": MIN_GAP_DAYS},
            logging={"level": "info"},
        )
        with daemon(config) as running:
            running.wait_for("30 simulated days", lambda: sim.now() - start > timedelta(days=30), timeout=60)
            rss_early = _rss_kib(running.process.pid)
            running.wait_for(
                "120 simulated days", lambda: sim.now() - start > timedelta(days=DAYS), timeout=60
            )
            rss_late = _rss_kib(running.process.pid)
            assert running.terminate() == 0

    failed = [r for r in sim.requests() if r.fault is not None]
    assert len(failed) / len(sim.requests()) > 0.05, "the soak must really inject failures"
    for account_id in sim.account_ids:
        rotations = sim.rotations(account_id)
        history = [line for line in running.output if account_id in line and "account_checked" not in line]
        assert [r.source for r in rotations if r.source != "api"] == [], (
            f"Cloudflare rotated {account_id}: {rotations}\n" + "".join(history[-40:])
        )
        assert len(rotations) >= DAYS // INTERVAL_DAYS
        gaps = [(b.at - a.at) / timedelta(days=1) for a, b in pairwise(rotations)]
        # Once per due period: not before the key is due, and never Cloudflare's own.
        assert all(INTERVAL_DAYS - THRESHOLD_DAYS - 0.01 <= gap < INTERVAL_DAYS for gap in gaps), gaps
    assert rss_late - rss_early < 8 * 1024, f"RSS grew from {rss_early} KiB to {rss_late} KiB"
