"""The real daemon's HTTP server against clients that mean it harm (issue 17, item 3).

Slow heads, clients that never read, a flood of connections and bytes that are not text in
``Authorization``: none stalls the event loop that runs the checks, none holds sockets or memory
for long, and none gets a 500.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx

from cloudflare_sim import SimulatorThread
from tests.support.processes import Daemon, daemon, write_config

TOKEN_VALUE = "s3cret-page-token-0123456789abcdef"


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(running: Daemon) -> socket.socket:
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@contextmanager
def started(simulator: SimulatorThread, tmp_path: Path, **http: object) -> Iterator[Daemon]:
    path = write_config(tmp_path / "config.yaml", simulator, http=http)
    with daemon(path) as running:
        running.wait_ready()
        yield running


def test_any_authorization_bytes_get_401_and_every_answer_has_the_security_headers(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN_VALUE, encoding="utf-8")
    with started(simulator, tmp_path, auth_token_file=str(token_file)) as running:
        near = b"Bearer " + TOKEN_VALUE.encode() + b"\x80"
        for value in (b"Bearer \xff", b"Bearer \xc3\x28", b"\xff\xfe", near):
            with connect(running) as sock:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n")
                head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 401 "), (value, head[:200])
        authorized = {"Authorization": f"Bearer {TOKEN_VALUE}"}
        for path in ("/", "/status", "/metrics", "/healthz", "/readyz"):
            answer = httpx.get(running.url + path, headers=authorized, timeout=10)
            assert answer.status_code == 200, path
            assert answer.headers["X-Content-Type-Options"] == "nosniff", path
            assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
            assert "script-src" not in answer.headers["Content-Security-Policy"]  # default-src 'none'
            assert answer.headers["Cache-Control"] == "no-store", path
            assert "Server" not in answer.headers, (path, answer.headers.get("Server"))
        # A request aiohttp cannot parse: its own 400, without a version banner, and one log line
        # without a traceback quoting the request's 9 KB.
        with connect(running) as sock:
            sock.sendall(b"GET /" + b"A" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            head = sock.recv(4096).split(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.0 400 ") and b"aiohttp" not in head and b"Python" not in head, head
        # The open probes say ready or not, nothing else; why takes the token.
        assert running.get("/readyz").text == "ready\n"
        assert running.get("/readyz?verbose").status_code == 401
        assert running.terminate() == 0
    said = "".join(running.output) + running.stderr
    assert "Traceback" not in said and "AAAAAAAA" not in said


def test_slow_heads_and_clients_that_never_read_hold_neither_sockets_nor_memory(
    make_simulator: object, tmp_path: Path
) -> None:
    """200 connections that trickle a request head, then 40 that ask for the page and never read
    it: the extra ones are refused at once, the rest closed within the request timeout (15 s),
    /healthz answers meanwhile, and the process is back to its sockets and about its memory."""
    simulator = make_simulator(2000)  # type: ignore[operator]
    path = write_config(tmp_path / "config.yaml", simulator)
    with daemon(path) as running, ExitStack() as stack:
        running.wait_ready(timeout=60)
        pid = running.process.pid
        httpx.get(running.url + "/", timeout=30)  # the page made once: its memory counted before
        fds_before, rss_before = open_fds(pid), rss_mb(pid)

        trickling = [stack.enter_context(connect(running)) for _ in range(200)]
        for sock in trickling:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        silent = []
        for _ in range(40):
            sock = stack.enter_context(connect(running))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads a byte
            silent.append(sock)
        started_at = time.monotonic()
        while time.monotonic() - started_at < 20:
            for sock in trickling:
                with suppress(OSError):
                    sock.send(b"X")
            healthz = time.monotonic()
            assert httpx.get(running.url + "/healthz", timeout=5).status_code == 200
            assert time.monotonic() - healthz < 1.0
            time.sleep(1)
        # Every one of them closed by rotator by now: the process holds what it held before.
        assert open_fds(pid) <= fds_before + 2, (open_fds(pid), fds_before)
        assert rss_mb(pid) < rss_before + 60, (rss_mb(pid), rss_before)
        assert running.terminate() == 0
