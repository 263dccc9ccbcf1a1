"""The command line as an operator meets it: the real ``rotator`` process, what it prints, how it exits."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotator.simulator import SimulatorThread
from tests.processes import log_lines, rotator, write_config

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
