"""The state file as users name it and as the machine treats it (issue 16, item 4), on the real process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cloudflare_sim import Fault, SimulatorThread
from tests.support.processes import environment, events, log_lines, write_config

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
