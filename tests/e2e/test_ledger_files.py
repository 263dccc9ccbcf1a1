"""The state file as users name it and as the machine treats it (issue 16, item 4), on the real process."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from cloudflare_sim import Fault, SimulatorThread
from tests.support.processes import Daemon, daemon, environment, events, log_lines, write_config

MakeSimulator = Callable[..., SimulatorThread]


def _run_once(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", "run", "--once", "-c", str(config)],
        env=environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_relative_or_symlinked_state_file_is_one_file_from_any_working_directory(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(1)
    (account_id,) = simulator.sim.account_ids
    for name in ("conf", "other", "elsewhere", "home"):
        (tmp_path / name).mkdir()
    # One config names it relatively (read from the config file's directory), the other by a symlink.
    first = write_config(tmp_path / "conf" / "config.yaml", simulator, state_file="state.json")
    (tmp_path / "other" / "link.json").symlink_to("../conf/state.json")
    second = write_config(tmp_path / "other" / "config.yaml", simulator, state_file="link.json")

    rotated = _run_once(first, cwd=tmp_path / "elsewhere")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert len(simulator.sim.rotations(account_id)) == 1
    assert (tmp_path / "conf" / "state.json").is_file()
    assert not (tmp_path / "elsewhere" / "state.json").exists()
    assert (tmp_path / "conf" / "state.json.lock").exists()

    simulator.sim.add_fault(Fault(kind="stale", op="get"))  # Cloudflare "forgets" the rotation
    again = _run_once(second, cwd=tmp_path / "home")
    assert again.returncode == 0, again.stdout + again.stderr
    (checked,) = events(log_lines(again.stdout), "account_checked")
    assert checked["decision"] == "skip"
    assert "predates the rotation at" in checked["message"]  # the first run's record, read
    assert len(simulator.sim.rotations(account_id)) == 1
    assert (tmp_path / "other" / "link.json").is_symlink()  # still a link: the file was written, not it
    assert not (tmp_path / "other" / "link.json.lock").exists()  # the one lock, beside the file


# --- nothing blocks the event loop; a failed write leaves memory right (issue 16, item 4) ---------

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed")


def _setup(make_simulator: MakeSimulator, tmp_path: Path, **schedule: str) -> tuple[SimulatorThread, Path]:
    simulator = make_simulator(1)  # account 0 is due
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        state_file=str(tmp_path / "state.json"),
        settle_time="10m",
        schedule={"check_interval": "1h", "jitter": "0s", **schedule},
    )
    return simulator, config


def _healthz_seconds(running: Daemon) -> float:
    started = time.monotonic()
    assert running.get("/healthz").status_code == 200
    return time.monotonic() - started


@contextmanager
def _traced(config: Path, strace: list[str]) -> Iterator[tuple[Daemon, int]]:
    """The daemon under strace, and its own pid (SIGTERM to strace would only detach it); killed
    at the end if still running (killing strace leaves it running, its pipes open)."""
    with daemon(config, environment(PYTHONDONTWRITEBYTECODE="1"), prefix=strace) as running:
        pid = running.wait_for("the daemon under strace", lambda: _pid_running(config))
        try:
            yield running, pid
        finally:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pid_running(config: Path) -> int | None:
    """The rotator process started with ``config`` (not the strace running it)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rotator" in argv and str(config).encode() in argv and not argv[0].endswith(b"strace"):
            return int(entry.name)
    return None


@pytest.mark.parametrize("held", ["the file's lock", "the account's lock"])
def test_a_lock_held_by_another_process_neither_stops_the_daemon_nor_lets_a_post_leave(
    make_simulator: MakeSimulator, tmp_path: Path, held: str
) -> None:
    simulator, config = _setup(make_simulator, tmp_path)
    (account_id,) = simulator.sim.account_ids
    # This test's process is the peer: it holds a byte of the lock file as another rotator would.
    fd = os.open(tmp_path / "state.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    offset = 0 if held == "the file's lock" else 1 + int(account_id, 16) % (2**31 - 2)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
    try:
        with daemon(config) as running:
            running.wait_for("the decision to rotate", lambda: events(running.logs, "rotation_started"))
            # While it waits for the lock, the daemon answers at once.
            assert max(_healthz_seconds(running) for _ in range(10)) < 1.0
            (failed,) = running.wait_for(
                "the lock's wait to run out", lambda: events(running.logs, "rotation_failed"), timeout=40
            )
            assert "another process has held" in failed["error"]
            assert f"for {2 * 2 + 5}s" in failed["error"]  # 2 x cloudflare.timeout + 5 s
            assert simulator.sim.requests(op="rotate") == []
            started = time.monotonic()
            assert running.terminate() == 0
            assert time.monotonic() - started < 10
    finally:
        os.close(fd)


@needs_strace
def test_a_slow_fsync_stops_neither_healthz_nor_sigterm(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    assert STRACE is not None
    simulator, config = _setup(make_simulator, tmp_path)
    slow = [
        STRACE,
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync",
        "-e",
        "inject=fsync:delay_enter=2000000",
    ]
    with _traced(config, slow) as (running, pid):
        running.wait_for("the decision to rotate", lambda: events(running.logs, "rotation_started"))
        slowest = 0.0
        while not events(running.logs, "key_rotated"):  # each of its writes takes 4 s (2 fsyncs)
            slowest = max(slowest, _healthz_seconds(running))
            assert running.process.poll() is None
            time.sleep(0.1)
        assert slowest < 1.0
        assert len(simulator.sim.requests(op="rotate")) == 1
        os.kill(pid, signal.SIGTERM)
        started = time.monotonic()
        assert running.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 10


@needs_strace
def test_a_failure_after_the_intents_rename_leaves_the_account_to_rotate_at_the_next_check(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """The directory's fsync (the intent's second) fails: the intent is on disk, nothing was sent.
    The process knows it and records it not applied; it is not an orphan held for settle_time."""
    assert STRACE is not None
    simulator, config = _setup(make_simulator, tmp_path, check_interval="1s")
    (account_id,) = simulator.sim.account_ids
    failing = [
        STRACE,
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync",
        "-e",
        "inject=fsync:error=EIO:when=2",
    ]
    with _traced(config, failing) as (running, pid):
        (failed,) = running.wait_for("the failed intent", lambda: events(running.logs, "rotation_failed"))
        assert "Input/output error" in failed["error"]
        running.wait_for("the rotation at a later check", lambda: events(running.logs, "key_rotated"))
        os.kill(pid, signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
    assert events(running.logs, "rotation_skipped") == []  # never held as an unsettled orphan
    assert len(simulator.sim.requests(op="rotate")) == 1
    assert [r.source for r in simulator.sim.rotations(account_id)] == ["api"]
