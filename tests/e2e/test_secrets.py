"""No secret on any surface: each secret injected into each source, each surface read, on the real process.

The secrets: the API token, a webhook's signing secret, the HTTP bearer token, a proxy's password.
The sources: a proxy variable with ``user:password@`` that a library prints back (aiohttp's 407 error
quotes the proxy URL), Cloudflare echoing every one of them in ``errors[].message`` (the simulator's
fault message), and a token pasted where a name belongs. The surfaces: the log lines, ``/status``,
the page ``/``, ``/metrics``, ``/readyz``, the state file, webhook bodies, ``check --json`` and
``rotate``'s output.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cloudflare_sim import Fault, SimulatorThread
from tests.support.processes import (
    daemon,
    environment,
    events,
    log_lines,
    rotator,
    write_config,
)
from tests.support.webhooks import Hooks

MakeSimulator = Callable[..., SimulatorThread]
TOKEN = "cfTOKEN-0123456789abcdefLEAK-api-token-value"
HOOK = "whsecLEAK-hook-secret-4f2a9c"
AUTH = "httpLEAK-bearer-token-8e1d7b"
PROXY_PASSWORD = "proxyLEAK-pass-3c5e"
# Credential-looking text Cloudflare may echo that rotator never loaded (another token, a key).
OTHER = "OtherLEAKtoken0123456789abcdefghijklmnop"
SECRETS = (TOKEN, HOOK, AUTH, PROXY_PASSWORD, OTHER)
ECHO = (
    f"request with token {TOKEN} refused; hook {HOOK}; auth {AUTH}; password {PROXY_PASSWORD} of "
    f"https://bob:{PROXY_PASSWORD}@proxy.example; Authorization: Bearer {OTHER}"
)


def leaked(*surfaces: str) -> list[tuple[int, str]]:
    """(which surface, what of it) for each secret found: every secret holds "LEAK", so a part of
    one is found too."""
    return [
        (i, text[max(0, text.index("LEAK") - 40) : text.index("LEAK") + 40])
        for i, text in enumerate(surfaces)
        if "LEAK" in text
    ]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.close()


@pytest.fixture
def proxy_407() -> Iterator[int]:
    """A proxy that refuses every CONNECT with 407: aiohttp's error then quotes the proxy's URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    server.close()


def test_an_echoed_secret_reaches_no_surface(
    make_simulator: MakeSimulator, hooks: Hooks, tmp_path: Path
) -> None:
    """Cloudflare echoes every secret in errors[].message: of a rotation (state file, webhook) and
    of a read (/status, the page, check --json)."""
    simulator = make_simulator(2, token=TOKEN)
    due, other = simulator.sim.account_ids
    simulator.sim.add_fault(Fault(kind="status", status=400, op="rotate", account_id=due, message=ECHO))
    simulator.sim.add_fault(Fault(kind="status", status=400, op="get", account_id=other, message=ECHO))
    auth_file = tmp_path / "auth-token"
    auth_file.write_text(AUTH)
    state = tmp_path / "state.json"
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        http={"auth_token_file": str(auth_file)},
        state_file=str(state),
        notify={"webhooks": [{"name": "ops", "url": hooks.url, "secret_env": "HOOK_SECRET"}]},
    )
    env = environment(
        TOKEN,
        HOOK_SECRET=HOOK,
        HTTPS_PROXY=f"http://bob:{PROXY_PASSWORD}@proxy.example:3128",
        NO_PROXY="127.0.0.1,localhost",
    )
    authorized = {"Authorization": f"Bearer {AUTH}"}

    with daemon(config, env) as running:
        running.wait_for("the failed rotation", lambda: events(running.logs, "rotation_failed"))
        running.wait_for("the failed read", lambda: events(running.logs, "check_failed"))
        running.wait_for(
            "the webhook", lambda: any("rotation_failed" in d["type"] for d in hooks.documents())
        )
        status = httpx.get(running.url + "/status", headers=authorized, timeout=10)
        page = httpx.get(running.url + "/", headers=authorized, timeout=10).text
        metrics = httpx.get(running.url + "/metrics", headers=authorized, timeout=10).text
        ready = running.get("/readyz").text
        assert running.terminate() == 0
    logs = "".join(running.output) + running.stderr
    bodies = "".join(body.decode() for _, body in hooks.received)
    check = rotator("check", "--json", "-c", str(config), env=env)
    rotate = rotator("rotate", "-c", str(config), "account-0", env=env)

    assert check.returncode == 1 and rotate.returncode == 1
    assert not leaked(
        logs, status.text, page, metrics, ready, state.read_text(), bodies, check.stdout + check.stderr
    )
    assert not leaked(rotate.stdout + rotate.stderr, state.read_text())
    # Each surface did carry the echo, redacted: Cloudflare's words are kept around it.
    failed = {a["account"]: a for a in status.json()["accounts"]}["account-1"]["error"]
    assert "[REDACTED]" in failed and "refused" in failed
    assert "[REDACTED]" in page and "[REDACTED]" in bodies and "[REDACTED]" in state.read_text()
    assert "[REDACTED]" in check.stdout and "[REDACTED]" in rotate.stdout


def test_a_proxy_password_reaches_no_surface(proxy_407: int, tmp_path: Path) -> None:
    """aiohttp's error for a proxy's 407 quotes the proxy's URL, password and all: in the check's
    error, hence the logs, /status, the page, /readyz's reason, check --json and rotate."""
    config = write_config(
        tmp_path / "config.yaml",
        "https://api.cloudflare.example/client/v4",
        accounts=[{"name": "production", "account_id": "0123456789abcdef0123456789abcdef"}],
    )
    env = environment(TOKEN, HTTPS_PROXY=f"http://bob:{PROXY_PASSWORD}@127.0.0.1:{proxy_407}")

    with daemon(config, env) as running:
        running.wait_for("the failed check", lambda: events(running.logs, "check_failed"))
        status = running.get("/status").text
        page = running.get("/").text
        ready = running.get("/readyz")
        metrics = running.get("/metrics").text
        assert running.terminate() == 0
    check = rotator("check", "--json", "-c", str(config), env=env)
    rotate = rotator("rotate", "-c", str(config), "production", env=env)

    logs = "".join(running.output) + running.stderr
    assert ready.status_code == 503
    assert not leaked(logs, status, page, ready.text, metrics, check.stdout + check.stderr)
    assert not leaked(rotate.stdout + rotate.stderr)
    assert "http://[REDACTED]@127.0.0.1" in status and "http://[REDACTED]@127.0.0.1" in check.stdout
    assert events(log_lines("".join(running.output)), "check_failed")[0]["error"].count("[REDACTED]") == 1


def test_an_account_named_after_its_token_is_refused(simulator: SimulatorThread, tmp_path: Path) -> None:
    """A name is shown on every surface (a metric label, the page): one equal to the token is
    refused at load, and the refusal does not repeat it."""
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        accounts=[{"name": TOKEN, "account_id": simulator.sim.account_ids[0]}],
    )

    for command in ("run", "validate"):
        done = rotator(
            command, *(["--once"] if command == "run" else []), "-c", str(config), env=environment(TOKEN)
        )
        assert done.returncode == 2, command
        assert "accounts[0].name: it holds a secret rotator has loaded" in done.stderr
        assert not leaked(done.stdout + done.stderr)


PASTED = "Zq8vN3xK7mP2rT9wL4yB6cD1fG5hJ0kSaEuQ2xY7"  # a token, pasted where a name belongs


def test_a_reload_refusal_never_repeats_a_token_pasted_as_a_name(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """config_rejected's reason: a pasted token that is a valid variable name (no such variable),
    then one that is not a name at all, then one pasted as the token file's path."""
    config = write_config(tmp_path / "config.yaml", simulator)
    with daemon(config) as running:
        running.wait_ready()
        for n, (key, value) in enumerate(
            [("api_token_env", PASTED), ("api_token_env", f"{PASTED}-x"), ("api_token_file", PASTED)], 1
        ):
            write_config(tmp_path / "config.yaml", simulator, cloudflare={key: value})
            running.wait_for(f"refusal {n}", lambda n=n: len(events(running.logs, "config_rejected")) == n)
        reasons = [e["reason"] for e in events(running.logs, "config_rejected")]
        assert running.terminate() == 0

    assert "the environment variable named by api_token_env is not set or is empty" in reasons[0]
    assert "cloudflare.api_token_env: not an environment variable name" in reasons[1]
    assert "the token file named by api_token_file: no such file" in reasons[2]
    assert not [line for line in running.output if PASTED in line]
