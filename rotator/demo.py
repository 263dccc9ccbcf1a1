"""``rotator demo``: the real daemon against the built-in simulator, where a day lasts 2 seconds.

Five accounts, one already inside the threshold, the others falling due one after another, so
keys rotate within the first minute; one account is in dry run and one has its interval
enforced, so every kind of decision shows up in the logs. Each rotation's new key is then seen at
the team's certs endpoint (``key_published``), and Cloudflare's own rotation of the dry-run
account is noticed (``key_rotated_elsewhere``).

What it prints is a view for a person (``DemoView``, a structlog renderer), not the logs: routine
checks dropped, one short line per event worth seeing, stamped with the simulator's clock, and a
summary every few simulated days. ``--json`` prints the logs themselves, and nothing else, on stdout
(the banner goes to stderr), so ``rotator demo --json | jq`` works.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from cloudflare_sim import Simulator
from rotator.config.credentials import CredentialSource
from rotator.config.model import parse_config
from rotator.daemon import Daemon
from rotator.errors import ListenError
from rotator.logs import configure_logging
from rotator.web.server import why_not_listening

DAY_SECONDS = 2.0
SUMMARY_DAYS = 5  # a summary line every this many simulated days
TOKEN_ENV = "ROTATOR_DEMO_TOKEN"  # noqa: S105 - a variable name
DEMO_TOKEN = "demo-token-not-a-secret"  # noqa: S105 - the simulator's own, accepted nowhere else

CONFIG = """\
cloudflare:
  base_url: {base_url}
  api_token_env: {token_env}
  timeout: 5s
  # The simulator has no budget to keep to, and its day lasts 2 s: 5 checks a second fit.
  rate_limit: {{requests: 6000, per: 5m}}
schedule:
  check_interval: 1s       # a simulated half-day
  jitter: 0s
rotation:
  threshold_days: 3
  min_days_between_rotations: 7
publication:
  certs_url: "{certs_url}"   # the simulator's certs endpoints, on loopback
  deadline: 1d             # two real seconds: the demo's clock runs 43,200 times fast
  rate_limit: {{requests: 6000, per: 5m}}   # a read a check, five a second, and verification's
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


async def run_demo(*, listen: str, duration: float | None, json_logs: bool = False) -> int:
    """``json_logs``: every log line as JSON, unfiltered, instead of the watchable view."""
    listen = _with_free_port(listen)
    simulator = Simulator.with_accounts(5, token=DEMO_TOKEN, day_seconds=DAY_SECONDS, interval_days=21)
    base_url = await simulator.start("127.0.0.1", 0)
    log_format = "json" if json_logs else "console"
    text = CONFIG.format(
        base_url=base_url,
        certs_url=simulator.certs_url_template,
        token_env=TOKEN_ENV,
        listen=listen,
        log_format=log_format,
        ids=simulator.account_ids,
    )
    config = parse_config(text, Path("<demo>"))
    host, _, port = listen.rpartition(":")
    url = f"http://{host}:{port}"
    view = None if json_logs else DemoView(simulator.now)
    configure_logging(config.settings.logging.level, log_format, sys.stdout, renderer=view)
    credential = CredentialSource.token_env(TOKEN_ENV).load({TOKEN_ENV: DEMO_TOKEN})
    daemon = Daemon(config, {a.account_id: credential for a in config.accounts})
    names = {a.account_id: a.name for a in config.accounts}
    print(
        f"rotator demo: the real daemon against a simulated Cloudflare where one day lasts "
        f"{DAY_SECONDS:g} s; 5 accounts, each checked when its decision can change "
        f"(sandbox is in dry run, partners has its interval enforced).\n"
        f"Status page: {url}/   Metrics: {url}/metrics   Ctrl-C stops.\n",
        file=sys.stderr if json_logs else sys.stdout,
        flush=True,
    )
    if view is not None:
        print(view.header(), flush=True)
    loop = asyncio.get_running_loop()
    if duration is not None:
        loop.call_later(duration, daemon.stop, "demo_duration_elapsed")
    summaries = None if json_logs else asyncio.create_task(_summaries(simulator, names))
    try:
        return await daemon.run()
    finally:
        if summaries is not None:
            summaries.cancel()
            print(summary(simulator, names), flush=True)
        await simulator.stop()


async def _summaries(simulator: Simulator, names: Mapping[str, str]) -> None:
    while True:
        await asyncio.sleep(SUMMARY_DAYS * DAY_SECONDS)
        print(summary(simulator, names), flush=True)


def summary(simulator: Simulator, names: Mapping[str, str]) -> str:
    """One line: the simulated date, and the rotations so far, by rotator and by Cloudflare."""
    by: dict[str, list[str]] = {"api": [], "auto": []}
    for account_id, name in names.items():
        for rotation in simulator.rotations(account_id):
            by[rotation.source].append(name)
    total = len(by["api"]) + len(by["auto"])
    return (
        f"{_sim_time(simulator.now())}  ---- summary: {total} rotation{'' if total == 1 else 's'} so far: "
        f"{_tally('rotator', by['api'])}, {_tally('Cloudflare on its own', by['auto'])}"
    )


def _tally(who: str, names: list[str]) -> str:
    if not names:
        return f"{who} 0"
    counts = ", ".join(f"{n} {names.count(n)}" for n in dict.fromkeys(names))
    return f"{who} {len(names)} ({counts})"


def _sim_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


class DemoView:
    """A structlog renderer for a person watching: one short, aligned line per event worth seeing,
    stamped with the simulator's clock; routine checks are dropped.

    Rotations (``>>``) and what needs attention (``!!``) are marked with characters, not colours, so
    they stand out in any terminal and in a file. A repeated skip of one account for one reason is
    shown once, until something else happens to that account.
    """

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._days_left: dict[str, float] = {}  # from the latest account_checked, per account
        self._skipped: dict[str, str] = {}  # the reason of the latest skip shown, per account

    @staticmethod
    def header() -> str:
        return _line("SIMULATED TIME", "ACCOUNT", "  EVENT", "WHAT")

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        name = str(event.get("event", ""))
        account = str(event.get("account", ""))
        words = self._words(name, account, event)
        if words is None:
            raise structlog.DropEvent
        mark, label, what = words
        return _line(_sim_time(self._now()), account or "-", f"{mark} {label}", what)

    def _words(self, name: str, account: str, event: Mapping[str, Any]) -> tuple[str, str, str] | None:
        level = str(event.get("level", "info"))
        if name == "account_checked":
            days = event.get("days_until_next_rotation")
            if isinstance(days, int | float):
                self._days_left[account] = float(days)
            return None
        if name == "key_rotated":
            self._skipped.pop(account, None)
            left = self._days_left.get(account)
            when = f", {left:.1f} days before Cloudflare would" if left is not None else ""
            return ">>", "KEY ROTATED", f"by rotator: {event.get('reason')}{when}"
        if name == "key_rotated_elsewhere":
            self._skipped.pop(account, None)
            return ">>", "ROTATED BY CLOUDFLARE", "on its own schedule: rotator did not choose the moment"
        if name == "rotation_skipped":
            reason = str(event.get("reason"))
            if self._skipped.get(account) == reason:
                return None
            self._skipped[account] = reason
            left = self._days_left.get(account)
            return "..", "rotation skipped", reason + (f", {left:.1f} days left" if left is not None else "")
        if name == "interval_updated":
            before = event.get("previous_key_rotation_interval_days")
            after = event.get("key_rotation_interval_days")
            was = f"{before:g}" if isinstance(before, int | float) else "?"
            return "**", "INTERVAL UPDATED", f"{was} -> {after} days"
        if name == "key_published":
            return "  ", "key published", "the new key is served at the team's certs endpoint"
        if level in ("warning", "error", "critical"):
            detail = event.get("message") or event.get("error") or event.get("reason") or ""
            detail = str(detail)
            return "!!", name[:21], detail if len(detail) <= 60 else detail[:57] + "..."
        return None


def _line(when: str, account: str, event: str, what: str) -> str:
    return f"{when:<16}  {account:<10}  {event:<24}  {what}"


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
