"""The organization read's ``auth_domain`` on the real process: only a host name becomes the host of
the certs URL (the rule of ``accounts[].team_domain``); anything else is logged, and no certs are read."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudflare_sim import SimulatorThread
from tests.support.processes import daemon, events, write_config


@pytest.fixture
def trap() -> Iterator[tuple[int, list[bytes]]]:
    """A listening port that notes every connection's first bytes: where a hostile auth_domain
    would steer the certs read."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.settimeout(2)
                try:
                    seen.append(client.recv(4096))
                except OSError:
                    seen.append(b"")

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1]), seen
    server.close()


def test_a_hostile_auth_domain_is_refused_and_no_certs_are_read(
    make_simulator: object, trap: tuple[int, list[bytes]], tmp_path: Path
) -> None:
    port, seen = trap
    simulator: SimulatorThread = make_simulator(3)  # type: ignore[operator]
    hostile = [f"127.0.0.1:{port}/x?", f"user:pw@127.0.0.1:{port}", "xn--zz.example"]
    for account_id, auth_domain in zip(simulator.sim.account_ids, hostile, strict=True):
        simulator.sim.set_team_domain(account_id, auth_domain)
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        publication={"enabled": True},  # https://{team_domain}/cdn-cgi/access/certs
    )

    with daemon(config) as running:
        refused = running.wait_for(
            "three refusals",
            lambda: (found := events(running.logs, "team_domain_invalid")) and len(found) >= 3 and found,
        )
        running.wait_for(
            "every account checked",
            lambda: all(events(running.logs, "account_checked", account=f"account-{i}") for i in range(3)),
        )
        assert running.get("/healthz").status_code == 200
        assert running.terminate() == 0

    problems = {e["account"]: e["problem"] for e in refused}
    assert problems == {
        "account-0": "not a host name: it has a port, a path, a query",
        "account-1": "not a host name: it has a user:password@ part, a port",
        "account-2": "not a host name (dot-separated labels of letters, digits and '-')",
    }
    assert seen == []  # no certs read went where the answer pointed
    assert not simulator.sim.requests(op="certs")
    assert not events(running.logs, "certs_read_failed")
    output = "".join(running.output) + running.stderr
    assert "Traceback" not in output and "Task exception" not in output
    assert "user:pw" not in output
