"""The command line as an operator meets it: the real ``rotator`` process, what it prints, how it exits."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotator.simulator import SimulatorThread
from tests.processes import environment, free_port, log_lines, rotator, write_config

MakeSimulator = Callable[..., SimulatorThread]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_run_with_its_address_in_use_says_so_in_one_line_before_any_check(
    simulator: SimulatorThread, taken_port: int, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", simulator, http={"listen": f"127.0.0.1:{taken_port}"})

    result = rotator("run", "-c", str(config))

    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"rotator: error: {config}: http.listen: cannot listen on 127.0.0.1:{taken_port}: the address is "
        "already in use (is another rotator, or another program, listening there?)"
    ]
    assert simulator.sim.requests() == []  # no check was started
    assert "account_checked" not in {line["event"] for line in log_lines(result.stdout)}


def test_demo_with_its_address_in_use_says_so_before_its_banner(taken_port: int) -> None:
    result = rotator("demo", "--listen", f"127.0.0.1:{taken_port}", "--duration", "5")

    assert result.returncode == 2, result
    assert result.stdout == ""  # no banner sending a reader to someone else's port
    assert result.stderr.splitlines() == [
        f"rotator: error: --listen: cannot listen on 127.0.0.1:{taken_port}: the address is already in "
        "use (is another rotator, or another program, listening there?)"
    ]


# Three accounts on one token whose budget is 3 requests per 2 hours: a cycle of checks takes 2 hours,
# but check_interval is 1 hour. threshold_days 1: nothing is due, so a pass is 3 GETs and no more.
TIGHT_BUDGET = {
    "cloudflare": {"rate_limit": {"requests": 3, "per": "2h"}},
    "rotation": {"threshold_days": 1},
}
CAPACITY = "3 accounts share one credential (API token from environment variable CLOUDFLARE_API_TOKEN)"


def test_validate_warns_once_when_the_budget_cannot_keep_up(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", simulator, **TIGHT_BUDGET)
    for env in (environment(), environment(token=None)):  # with the secret, and in CI without it
        result = rotator("validate", "-c", str(config), env=env)
        assert result.returncode == 0, result.stderr
        capacity = [line for line in result.stdout.splitlines() if CAPACITY in line]
        assert len(capacity) == 1, result.stdout
        assert capacity[0].startswith("warning: ")
        assert "Set schedule.check_interval to at least 2h" in capacity[0]


def test_run_logs_the_capacity_warning_once(simulator: SimulatorThread, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", simulator, **TIGHT_BUDGET)
    result = rotator("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    warnings = [
        e for e in log_lines(result.stdout) if e["event"] == "config_warning" and CAPACITY in e["message"]
    ]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"


def test_check_still_warns_once(simulator: SimulatorThread, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", simulator, **TIGHT_BUDGET)
    result = rotator("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(CAPACITY) == 1


def test_a_refused_connection_is_said_without_aiohttps_words(tmp_path: Path) -> None:
    # Nothing listens on this port; the URL is plain http, which aiohttp calls "ssl:default".
    port = free_port()
    account = {"name": "production", "account_id": "0" * 32}
    config = write_config(tmp_path / "config.yaml", f"http://127.0.0.1:{port}/client/v4", accounts=[account])
    result = rotator("check", "--json", "-c", str(config))
    assert result.returncode == 1, result.stderr
    (checked,) = json.loads(result.stdout)["accounts"]
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in checked["error"]
    assert "ssl:" not in result.stdout + result.stderr
    assert "Connect call failed" not in result.stdout + result.stderr
