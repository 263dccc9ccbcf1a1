"""Sparse but legal answers (issue 16, item 3): every field of the keys result is optional.

The simulator serves the account's key configuration without the fields a test names (its
``sparse`` fault); the real process must still rotate when due, settle a rotation whose answer was
lost, and go on rotating.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudflare_sim import Fault, SimulatorThread
from tests.support.processes import events, log_lines, rotator, write_config

MakeSimulator = Callable[..., SimulatorThread]


def _run_once(config: Path) -> list[dict[str, Any]]:
    done = rotator("run", "--once", "-c", str(config))
    return log_lines(done.stdout)


def _state(tmp_path: Path, account_id: str) -> str:
    record = json.loads((tmp_path / "state.json").read_text())["accounts"][account_id]
    return str(record["rotation"]["state"])


@pytest.mark.parametrize(
    "omit",
    [
        ("last_key_rotation_at",),
        ("key_rotation_interval_days", "last_key_rotation_at"),  # days_until_next_rotation only
    ],
    ids=["no-last-rotation", "days-only"],
)
def test_a_lost_rotate_answer_on_a_sparse_account_settles_and_rotation_resumes(
    make_simulator: MakeSimulator, tmp_path: Path, omit: tuple[str, ...]
) -> None:
    simulator = make_simulator(1)  # account 0 is due: 2 days left of 42
    (account_id,) = simulator.sim.account_ids
    config = write_config(
        tmp_path / "config.yaml", simulator, state_file=str(tmp_path / "state.json"), settle_time="10m"
    )
    simulator.sim.add_fault(Fault(kind="sparse", op="get", omit=omit))
    simulator.sim.add_fault(Fault(kind="sparse", op="put", omit=omit))
    simulator.sim.add_fault(Fault(kind="apply_then_drop", op="rotate", times=1))

    first = _run_once(config)  # rotated, the answer lost, and no read can show it
    assert len(simulator.sim.rotations(account_id)) == 1
    assert events(first, "rotate_answer_lost")
    assert _state(tmp_path, account_id) == "unconfirmed"

    simulator.sim.advance(1 / 24)  # an hour: past settle_time
    second = _run_once(config)
    assert _state(tmp_path, account_id) == "not_applied"  # settled by the settle_time rule
    (checked,) = events(second, "account_checked")
    assert checked["decision"] == "skip"  # days left reset by the rotation: not due
    assert len(simulator.sim.rotations(account_id)) == 1

    simulator.sim.advance(40)  # due again
    third = _run_once(config)
    assert events(third, "key_rotated")
    assert [r.source for r in simulator.sim.rotations(account_id)] == ["api", "api"]
    assert _state(tmp_path, account_id) == "done"
