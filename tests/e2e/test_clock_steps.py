"""A step of the system clock (issue 16, item 5), on the real process under libfaketime.

The daemon runs with libfaketime preloaded, its wall clock read from a file on every call
(FAKETIME_NO_CACHE), CLOCK_MONOTONIC left real (FAKETIME_DONT_FAKE_MONOTONIC): the test steps the
wall clock a year back, then a day forward, while the daemon runs. The simulator (in this process)
keeps the real clock, so Cloudflare's Date does not move.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudflare_sim import SimulatorThread
from tests.support.processes import daemon, environment, events, write_config

MakeSimulator = Callable[..., SimulatorThread]
# Debian's libfaketime, wherever the machine's architecture puts it.
LIBFAKETIME = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
)
INTERVAL = 1.5

# Skipped where libfaketime is missing, but in CI (`CI` set), whose .ci/run installs it: there, fail.
pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists() and not os.environ.get("CI"),
    reason="libfaketime is not installed (apt-get install faketime)",
)


def test_a_clock_step_neither_stops_nor_bunches_checks_nor_rotates(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(3)
    offset = tmp_path / "faketime"
    offset.write_text("+0\n", encoding="utf-8")
    env = environment(
        LD_PRELOAD=str(LIBFAKETIME),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    config = write_config(
        tmp_path / "config.yaml", simulator, schedule={"check_interval": f"{INTERVAL}s", "jitter": "1s"}
    )
    with daemon(config, env) as running:
        seen: list[float] = []  # when (this process's monotonic clock) each check was logged

        def checks() -> int:
            count = len(events(running.logs, "account_checked"))
            while len(seen) < count:
                seen.append(time.monotonic())
            return count

        running.wait_for("the first checks", lambda: checks() >= 6, timeout=30)
        rotations = {a: len(simulator.sim.rotations(a)) for a in simulator.sim.account_ids}

        for step in ("-365d", "+1d"):  # a year back, then from there a day ahead of the real time
            offset.write_text(f"{step}\n", encoding="utf-8")
            stepped_at, before = time.monotonic(), checks()
            # Checks go on at their pace: 3 accounts, one check each per interval (+ jitter).
            running.wait_for(f"checks after a step of {step}", lambda n=before: checks() >= n + 6, timeout=30)
            window = [t for t in seen[before:] if t - stepped_at <= INTERVAL]
            # Not bunched: within one interval of the step, at most one check per account, and
            # a check or two of the slot in progress (under load, lateness spreads them).
            assert len(window) <= 3 + 2, (step, [round(t - stepped_at, 2) for t in seen[before:]])
            assert running.get("/healthz").status_code == 200

        assert {a: len(simulator.sim.rotations(a)) for a in simulator.sim.account_ids} == rotations
        assert running.terminate() == 0
