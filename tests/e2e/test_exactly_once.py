"""Exactly once, with real processes: killed at each step of a rotation, restarted, run side by side.

The kills are exact: strace injects SIGKILL into the real ``rotator`` process at the Nth ``rename``
or ``fsync`` it makes, and the ledger's writes are the only ones it makes (``rename`` publishes a
transition, the first ``fsync`` makes its content durable, the second its directory entry). A
rotation is two writes: its intent before the POST, its outcome once known (``sent`` is kept in
memory: on disk the intent says as much). So:

    rename #1            the intent is about to be published: nothing on record, nothing sent
    fsync #2             the intent is on record; the POST has not left
    (the simulator)      the POST is on the wire (a hang), applied or not
    rename #2            Cloudflare answered 200; the ledger has not recorded it
    fsync #4             the ledger recorded it

After each, the next process (or two) must leave exactly one rotation at the simulator, and the
ledger must agree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudflare_sim import Fault, SimulatorThread
from tests.support.processes import daemon, environment, events, log_lines, rotator, write_config

MakeSimulator = Callable[..., SimulatorThread]
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(
    STRACE is None and not os.environ.get("CI"), reason="strace is not installed (.ci/run installs it)"
)
SETTLE_TIME = "10m"  # the least allowed: the tests move the simulator's clock past it


def setup(make_simulator: MakeSimulator, tmp_path: Path, **cloudflare: Any) -> tuple[SimulatorThread, Path]:
    simulator = make_simulator(1)  # account 0 is due
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        cloudflare={"timeout": "2s", **cloudflare},
        state_file=str(tmp_path / "state.json"),
        settle_time=SETTLE_TIME,
    )
    return simulator, config


def ledger_state(tmp_path: Path, account_id: str) -> dict[str, Any] | None:
    path = tmp_path / "state.json"
    if not path.exists():
        return None
    record: dict[str, Any] | None = json.loads(path.read_text())["accounts"].get(account_id)
    return record


def killed_at(config: Path, syscall: str, when: int) -> subprocess.CompletedProcess[str]:
    """``run --once``, killed by SIGKILL on entering its ``when``-th ``syscall``."""
    assert STRACE is not None
    env = environment(PYTHONDONTWRITEBYTECODE="1")  # no .pyc renames: the ledger's are the only ones
    return subprocess.run(
        [
            *(STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"inject={syscall}:signal=SIGKILL:when={when}"),
            *(sys.executable, "-m", "rotator", "run", "--once", "-c", str(config)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_once(config: Path) -> list[dict[str, Any]]:
    done = rotator("run", "--once", "-c", str(config))
    return log_lines(done.stdout)


def settle_and_finish(simulator: SimulatorThread, config: Path) -> None:
    """Restart, then restart again once settle_time has passed by Cloudflare's clock."""
    run_once(config)
    simulator.sim.advance(1 / 24)  # an hour: past settle_time, far from the next due date
    run_once(config)


@needs_strace
@pytest.mark.parametrize(
    ("syscall", "when", "on_record", "sent"),
    [
        pytest.param("rename", 1, None, 0, id="before-the-intent-is-written"),
        pytest.param("fsync", 2, "intent", 0, id="after-the-intent-is-written"),
        pytest.param("rename", 2, "intent", 1, id="after-the-answer-before-the-ledger-records-it"),
        pytest.param("fsync", 4, "done", 1, id="after-the-ledger-records-it"),
    ],
)
def test_sigkill_at_each_step_of_a_rotation_then_restart_rotates_exactly_once(
    make_simulator: MakeSimulator,
    tmp_path: Path,
    syscall: str,
    when: int,
    on_record: str | None,
    sent: int,
) -> None:
    simulator, config = setup(make_simulator, tmp_path)
    (account_id,) = simulator.sim.account_ids

    crashed = killed_at(config, syscall, when)

    assert crashed.returncode in (-9, 137), crashed.stdout + crashed.stderr
    record = ledger_state(tmp_path, account_id)
    assert (record["rotation"]["state"] if record else None) == on_record
    assert len(simulator.sim.requests(op="rotate")) == sent

    settle_and_finish(simulator, config)

    rotations = simulator.sim.rotations(account_id)
    assert [r.source for r in rotations] == ["api"]
    final = ledger_state(tmp_path, account_id)
    assert final is not None
    assert final["rotation"]["state"] == "done"
    assert abs(_time(final["last_done"]) - rotations[0].at.timestamp()) < 2


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_killed_with_the_post_on_the_wire_and_stale_reads_after_a_restart_rotates_once(
    make_simulator: MakeSimulator, tmp_path: Path, applied: bool, signal_name: str
) -> None:
    simulator, config = setup(make_simulator, tmp_path)
    (account_id,) = simulator.sim.account_ids
    simulator.sim.add_fault(Fault(kind="apply_then_hang" if applied else "hang", op="rotate", times=1))
    with daemon(config) as running:
        running.wait_for("the rotate POST", lambda: simulator.sim.requests(op="rotate"))
        if signal_name == "SIGKILL":
            running.process.kill()
            running.process.wait(timeout=10)
        else:
            assert running.terminate() == 0
    record = ledger_state(tmp_path, account_id)
    assert record is not None
    # SIGKILL: the POST's intent was on record; SIGTERM: the POST ran to its deadline.
    assert record["rotation"]["state"] == ("intent" if signal_name == "SIGKILL" else "unconfirmed")

    # After the restart Cloudflare's read lags: it shows the key from before the rotation. (Reads
    # that stay stale for longer than settle_time cannot be told from "not applied": README, Safety.)
    simulator.sim.add_fault(Fault(kind="stale", op="get", times=1))
    after = run_once(config)
    assert [e["reason"] for e in events(after, "rotation_skipped")] == ["unsettled"]
    assert len(simulator.sim.requests(op="rotate")) == 1

    simulator.sim.advance(1 / 24)
    run_once(config)
    assert [r.source for r in simulator.sim.rotations(account_id)] == ["api"]
    assert len(simulator.sim.requests(op="rotate")) == (1 if applied else 2)


def test_a_stale_200_echo_and_stale_reads_for_days_rotate_once(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """Cloudflare answers the rotate POST with the configuration from before it, and every read
    after it lags for days: the gap is anchored on the answer, not on the echo."""
    simulator = make_simulator(1, day_seconds=2.0)
    (account_id,) = simulator.sim.account_ids
    simulator.sim.add_fault(Fault(kind="stale", op="rotate", times=1))
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        schedule={"check_interval": "0.25s", "jitter": "0s"},
    )
    with daemon(config) as running:
        running.wait_for("the rotation", lambda: events(running.logs, "key_rotated"))
        simulator.sim.add_fault(Fault(kind="stale", op="get"))
        started = simulator.sim.now()
        running.wait_for("five simulated days", lambda: (simulator.sim.now() - started).days >= 5, timeout=30)
        assert running.terminate() == 0

    (rotated,) = events(running.logs, "key_rotated")
    assert rotated["answer_stale"] is True
    assert rotated["last_key_rotation_at"] > rotated["previous_last_key_rotation_at"]
    assert len(simulator.sim.requests(op="rotate")) == 1
    assert [r.source for r in simulator.sim.rotations(account_id)] == ["api"]
    later = events(running.logs, "account_checked")[-1]
    assert later["reason"] == "not_due"
    assert "predates the rotation at" in later["message"]


@needs_strace
def test_the_daemon_and_rotator_rotate_beside_it_never_both_rotate(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """Both decide from the same read; the account's lock makes the second decide again, after
    the first has sent and recorded its rotation."""
    assert STRACE is not None
    simulator, config = setup(make_simulator, tmp_path)
    (account_id,) = simulator.sim.account_ids
    # The daemon has decided and holds the account; it is slowed down right before it records its
    # intent (strace delays its first rename by 3 s) while a person runs `rotator rotate`.
    slowed = [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "inject=rename:delay_enter=3000000:when=1"]
    env = environment(PYTHONDONTWRITEBYTECODE="1")
    with daemon(config, env, prefix=slowed) as running:
        running.wait_for("the daemon's decision", lambda: events(running.logs, "rotation_started"))
        started = time.monotonic()
        beside = rotator("rotate", "account-0", "-c", str(config))
        waited = time.monotonic() - started
        running.wait_for("the daemon's rotation", lambda: events(running.logs, "key_rotated"))
        # SIGTERM to strace would only detach it: stop the daemon it runs.
        tracer = running.process.pid
        (traced,) = Path(f"/proc/{tracer}/task/{tracer}/children").read_text().split()
        os.kill(int(traced), signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0

    assert len(simulator.sim.requests(op="rotate")) == 1
    assert [r.source for r in simulator.sim.rotations(account_id)] == ["api"]
    assert beside.returncode == 1, beside.stdout + beside.stderr
    assert "less than 7 days ago" in beside.stdout
    assert waited > 1.0  # it waited for the daemon's rotation, then decided again
    decided_again = events(log_lines(beside.stderr), "rotation_skipped")
    assert "decided again right before sending" in decided_again[0]["message"]


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
