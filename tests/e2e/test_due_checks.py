"""Due-aware checks (issue 20): the real daemon reads an account when its decision can change.

Against the simulator with a fast clock, the defaults scaled to it (an hour's check_interval, a
day's max_check_interval, on Cloudflare's clock), rotator reads each account about once a day and
still rotates every key before Cloudflare would. A restart resumes each account's schedule from the
ledger rather than reading every account at once.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from cloudflare_sim import Simulator, SimulatorThread
from tests.support.processes import TOKEN, daemon, events, write_config

DAY_SECONDS = 1.0
SPEED = 86400 / DAY_SECONDS
DAYS = 40
ACCOUNTS = 6


def _scaled(seconds: float) -> str:
    return f"{seconds / SPEED}s"


def test_reads_about_once_a_day_and_rotates_every_key_on_time(tmp_path: Path) -> None:
    sim = Simulator(tokens={TOKEN: "write"}, day_seconds=DAY_SECONDS, seed=20)
    for i in range(ACCOUNTS):
        sim.add_account(interval_days=30, days_until_next_rotation=6 + 20 * i / ACCOUNTS)
    start = sim.now()
    with SimulatorThread(sim) as running_sim:
        config = write_config(
            tmp_path / "config.yaml",
            running_sim,
            schedule={
                "check_interval": _scaled(3600),
                "jitter": _scaled(300),
                "max_check_interval": _scaled(86400),
            },
            cloudflare={"rate_limit": {"requests": 1000, "per": _scaled(300)}},
        )
        with daemon(config) as running:
            running.wait_for(f"{DAYS} simulated days", lambda: sim.now() - start > timedelta(days=DAYS), 120)
            assert running.terminate() == 0
    days = (sim.now() - start) / timedelta(days=1)
    reads = len(sim.requests(op="get"))
    # Before: 24 reads an account a day (one every check_interval).
    assert reads / ACCOUNTS / days <= 1.5, f"{reads} reads of {ACCOUNTS} accounts in {days:.1f} days"
    for account_id in sim.account_ids:
        rotations = sim.rotations(account_id)
        assert rotations, f"{account_id} was never rotated"
        assert [r.source for r in rotations] == ["api"] * len(rotations), "Cloudflare rotated on its own"


def test_a_restart_resumes_the_schedule_instead_of_reading_every_account(tmp_path: Path) -> None:
    # Real time: every key is weeks from due, so after its first read no account needs another today.
    sim = Simulator(tokens={TOKEN: "write"}, seed=20)
    for i in range(ACCOUNTS):
        sim.add_account(interval_days=90, days_until_next_rotation=40 + i)
    with SimulatorThread(sim) as running_sim:
        config = write_config(
            tmp_path / "config.yaml",
            running_sim,
            state_file=str(tmp_path / "state.json"),
            logging={"level": "info", "format": "json"},
        )
        with daemon(config) as first:
            spread = first.wait_for("first reads spread", lambda: events(first.logs, "checks_spread"))
            assert spread[0]["why"] == "first_start" and spread[0]["accounts"] == ACCOUNTS
            first.wait_for("every account read", lambda: len(sim.requests(op="get")) >= ACCOUNTS)
            assert first.terminate() == 0
        before = len(sim.requests(op="get"))
        with daemon(config) as second:
            resumed = second.wait_for("schedule resumed", lambda: events(second.logs, "checks_resumed"))
            assert resumed[0]["accounts"] == ACCOUNTS
            second.wait_ready()
            time.sleep(2)  # what a burst would have read by now
            assert second.terminate() == 0
    # One read, of the account planned first: it shows Cloudflare's clock. Before: every account.
    assert len(sim.requests(op="get")) - before == 1
