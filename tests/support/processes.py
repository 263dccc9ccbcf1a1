"""Running the real ``rotator`` process in tests: configs on disk, one-shot commands, a daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from cloudflare_sim import SimulatorThread

TOKEN = "test-token"
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    sim: SimulatorThread | str,
    *,
    accounts: Sequence[Mapping[str, Any]] | None = None,
    **sections: Any,
) -> Path:
    """A config pointing at the simulator, one account per simulator account unless given."""
    base_url = sim if isinstance(sim, str) else sim.base_url
    if accounts is None:
        assert not isinstance(sim, str)
        accounts = [{"name": f"account-{i}", "account_id": a} for i, a in enumerate(sim.sim.account_ids)]
    config: dict[str, Any] = {
        "cloudflare": {"base_url": base_url, "timeout": "2s"},
        "schedule": {"check_interval": "1h", "jitter": "0s"},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "logging": {"format": "json"},
        # Off unless a test asks for it (tests/e2e/test_publication_e2e.py): on, an account's first
        # check would read its organization and certs, which the fault tests do not expect.
        "publication": {"enabled": False},
        "accounts": list(accounts),
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def environment(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV and k != "ROTATOR_CONFIG"}
    if token is not None:
        env[TOKEN_ENV] = token
    env.update(extra)
    return env


def rotator(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", *args],
        env=dict(env) if env is not None else environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def log_lines(text: str) -> list[dict[str, Any]]:
    """Every line must be one JSON object: that is the log contract."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def events(lines: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in lines if e["event"] == name and all(e.get(k) == v for k, v in fields.items())]


class Daemon:
    """A running ``rotator run``: its stdout collected line by line, its HTTP endpoints at hand."""

    def __init__(self, config: Path, env: Mapping[str, str], prefix: Sequence[str] = ()) -> None:
        """``prefix``: a command the daemon runs under (strace, in tests/e2e/test_exactly_once.py)."""
        listen = yaml.safe_load(config.read_text())["http"]["listen"]
        self.url = f"http://{listen}"
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "rotator", "run", "-c", str(config)],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def logs(self) -> list[dict[str, Any]]:
        return log_lines("".join(self.output))

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def wait_for(self, what: str, predicate: Any, timeout: float = 20) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail saying what never happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except httpx.TransportError:
                value = None
            if value:
                return value
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen; rotator said:\n{''.join(self.output)}\n{self.stderr}")

    def wait_ready(self, timeout: float = 20) -> None:
        self.wait_for("/readyz 200", lambda: self.get("/readyz").status_code == 200, timeout)

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.close()
        return code

    def close(self) -> None:
        """Reap the process and its pipes (killing it if it still runs)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        assert self.process.stdout is not None and self.process.stderr is not None
        if not self.process.stderr.closed:
            self.stderr = self.process.stderr.read()
            self.process.stderr.close()
        self.process.stdout.close()


@contextmanager
def daemon(
    config: Path, env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()
) -> Iterator[Daemon]:
    running = Daemon(config, env if env is not None else environment(), prefix)
    try:
        yield running
    finally:
        running.close()
