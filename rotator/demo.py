"""``rotator demo``: the real daemon against the built-in simulator, where a day lasts 2 seconds.

Five accounts, one already inside the threshold, the others falling due one after another, so
keys rotate within the first minute; one account is in dry run and one has its interval
enforced, so every kind of decision shows up in the logs. Each rotation's new key is then seen at
the team's certs endpoint (``key_published``), and Cloudflare's own rotation of the dry-run
account is noticed (``key_rotated_elsewhere``).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from rotator.config import parse_config
from rotator.credentials import CredentialSource
from rotator.daemon import Daemon
from rotator.errors import ListenError
from rotator.logs import configure_logging
from rotator.server import why_not_listening
from rotator.simulator import Simulator

DAY_SECONDS = 2.0
TOKEN_ENV = "ROTATOR_DEMO_TOKEN"  # noqa: S105 - a variable name
DEMO_TOKEN = "demo-token-not-a-secret"  # noqa: S105 - the simulator's own, accepted nowhere else

CONFIG = """\
cloudflare:
  base_url: {base_url}
  api_token_env: {token_env}
  timeout: 5s
schedule:
  check_interval: 1s       # a simulated half-day
  jitter: 0s
rotation:
  threshold_days: 3
  min_days_between_rotations: 7
publication:
  certs_url: "{certs_url}"   # the simulator's certs endpoints, on loopback
  deadline: 1d             # two real seconds: the demo's clock runs 43,200 times fast
http:
  listen: {listen}
logging:
  format: {log_format}
accounts:
  - {{name: production, account_id: "{ids[0]}"}}
  - {{name: sandbox, account_id: "{ids[1]}", dry_run: true}}
  - {{name: staging, account_id: "{ids[2]}"}}
  - {{name: partners, account_id: "{ids[3]}", key_rotation_interval_days: 30}}
  - {{name: internal, account_id: "{ids[4]}", threshold_days: 5}}
"""


async def run_demo(*, listen: str, duration: float | None) -> int:
    listen = _with_free_port(listen)
    simulator = Simulator.with_accounts(5, token=DEMO_TOKEN, day_seconds=DAY_SECONDS, interval_days=21)
    base_url = await simulator.start("127.0.0.1", 0)
    log_format = "console" if sys.stdout.isatty() else "json"
    text = CONFIG.format(
        base_url=base_url,
        certs_url=simulator.certs_url_template,
        token_env=TOKEN_ENV,
        listen=listen,
        log_format=log_format,
        ids=simulator.account_ids,
    )
    config = parse_config(text, Path("<demo>"))
    configure_logging(config.settings.logging.level, log_format, sys.stdout)
    credential = CredentialSource.token_env(TOKEN_ENV).load({TOKEN_ENV: DEMO_TOKEN})
    daemon = Daemon(config, {a.account_id: credential for a in config.accounts})
    host, _, port = listen.rpartition(":")
    print(
        f"rotator demo: simulated Cloudflare at {base_url} (one day = {DAY_SECONDS:g} s), "
        f"5 accounts, checked every simulated half-day.\n"
        f"Metrics: http://{host}:{port}/metrics   Readiness: http://{host}:{port}/readyz\n"
        f"Watch for key_rotated (the policy at work), key_published (the new key served at the "
        f"team's certs endpoint), rotation_skipped (the dry-run account), key_rotated_elsewhere "
        f"(Cloudflare rotating the dry-run account on its own) and interval_updated. Ctrl-C stops.\n",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    if duration is not None:
        loop.call_later(duration, daemon.stop, "demo_duration_elapsed")
    try:
        return await daemon.run()
    finally:
        await simulator.stop()


def _with_free_port(listen: str) -> str:
    """``HOST:0`` becomes a free port now, so the banner can say where /metrics is; a port that is
    taken is refused now, before the banner sends a reader to it."""
    host, _, port = listen.rpartition(":")
    try:
        address = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(address[0], socket.SOCK_STREAM) as probe:
            # As the server will bind: a port left in TIME_WAIT by an earlier run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address[4])
            return listen if port != "0" else f"{host}:{probe.getsockname()[1]}"
    except (OSError, ValueError) as exc:
        why = why_not_listening(exc) if isinstance(exc, OSError) else "expected HOST:PORT"
        raise ListenError(f"--listen: cannot listen on {listen}: {why}") from None
