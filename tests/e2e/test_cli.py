"""The command line as an operator meets it: the real ``rotator`` process, what it prints, how it exits."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudflare_sim import SimulatorThread
from rotator.cli import _parser, main
from tests.support.processes import environment, free_port, log_lines, rotator, write_config

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

    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"rotator: error: {config}: http.listen: cannot listen on 127.0.0.1:{taken_port}: the address is "
        "already in use (is another rotator, or another program, listening there?)"
    ]
    assert simulator.sim.requests() == []  # no check was started
    assert "account_checked" not in {line["event"] for line in log_lines(result.stdout)}


def test_demo_with_its_address_in_use_says_so_before_its_banner(taken_port: int) -> None:
    result = rotator("demo", "--listen", f"127.0.0.1:{taken_port}", "--duration", "5")

    assert result.returncode == 3, result
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
    # With the secret, and in CI without it.
    for env, flags in ((environment(), ()), (environment(token=None), ("--without-secrets",))):
        result = rotator("validate", *flags, "-c", str(config), env=env)
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


# --- --help -------------------------------------------------------------------------------------

COMMANDS = ["run", "check", "rotate", "validate", "demo"]


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_what_it_does_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(command, capsys)
    description = text.split("\n\n")[1]  # after the usage line, before the options
    assert len(description.split()) >= 15, text  # a description, not a one-line label
    assert "\nexamples:\n" in text
    examples = text.split("\nexamples:\n")[1].split("\n\n")[0].splitlines()
    assert [line for line in examples if line.startswith(f"  rotator {command}")], text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_example_in_help_is_a_command_rotator_accepts(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = help_text(command, capsys).split("\nexamples:\n")[1].split("\n\n")[0].splitlines()
    for example in examples:
        words = shlex.split(example.split(" | ")[0], comments=True)
        words = [w for w in words if "=" not in w or w.startswith("-")]  # VAR=value before the command
        assert words[0] == "rotator", example
        args = _parser().parse_args(words[1:])  # SystemExit (and a failed test) if it does not parse
        assert args.command == command


# --- one time format ------------------------------------------------------------------------------

TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")


def test_every_time_in_check_output_is_utc_with_a_z(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    simulator = make_simulator(2)  # account 0 is due in 2 days, account 1 in 22
    first, second = simulator.sim.account_ids
    accounts = [
        # Due, and its only window is years away: the message says when Cloudflare rotates.
        {"name": "windowed", "account_id": first, "windows": [{"cron": "0 2 29 2 *", "duration": "1h"}]},
        # Due at a threshold of 30, but rotated 20 days ago, within a 25-day gap: says until when.
        {"name": "gapped", "account_id": second, "threshold_days": 30, "min_days_between_rotations": 25},
    ]
    config = write_config(tmp_path / "config.yaml", simulator, accounts=accounts)
    for output in ("--json", "--wide", None):
        result = rotator("check", *([output] if output else []), "-c", str(config))
        assert result.returncode == 0, result.stderr
        times = TIME.findall(result.stdout)
        assert times, result.stdout
        assert [t for t in times if not t.endswith("Z") or " " in t] == [], result.stdout
    messages = [
        a["message"] for a in json.loads(rotator("check", "--json", "-c", str(config)).stdout)["accounts"]
    ]
    assert all(TIME.search(m) for m in messages), messages  # each message names a time


# --- rotate --force, dry run, --quiet (issue 12, item 10) -----------------------------------------


def _rotate(
    config: Path, *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", "rotate", "-c", str(config), *args],
        env=environment(),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _within_the_gap(make_simulator: MakeSimulator, tmp_path: Path) -> tuple[SimulatorThread, str, Path]:
    simulator = make_simulator(2)  # account 1 was rotated 20 days ago: within a 25-day gap
    account_id = simulator.sim.account_ids[1]
    accounts = [{"name": "gapped", "account_id": account_id, "min_days_between_rotations": 25}]
    return simulator, account_id, write_config(tmp_path / "config.yaml", simulator, accounts=accounts)


def test_force_within_the_gap_says_what_happens_and_sends_nothing_without_yes(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator, account_id, config = _within_the_gap(make_simulator, tmp_path)

    refused = _rotate(config, "gapped", "--force")
    assert refused.returncode == 1
    assert (
        refused.stdout.strip()
        == "gapped: not rotated: --force within the minimum gap needs --yes (nothing was sent)"
    )
    assert "--force would break the minimum gap: the last rotation was at" in refused.stderr
    assert "logged out" in refused.stderr
    assert simulator.sim.rotations(account_id) == []
    assert simulator.sim.requests(op="rotate") == []

    confirmed = _rotate(config, "gapped", "--force", "--yes")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert confirmed.stdout.startswith("gapped: rotated")
    assert len(simulator.sim.rotations(account_id)) == 1


def test_force_within_the_gap_asks_on_a_terminal(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    simulator, account_id, config = _within_the_gap(make_simulator, tmp_path)
    for answer, code, rotations in ((b"\n", 1, 0), (b"n\n", 1, 0), (b"y\n", 0, 1)):
        controller, terminal = os.openpty()
        try:
            os.write(controller, answer)
            done = _rotate(config, "gapped", "--force", stdin=terminal)
        finally:
            os.close(controller)
            os.close(terminal)
        assert done.returncode == code, (answer, done.stdout, done.stderr)
        assert "Rotate gapped anyway? [y/N]" in done.stdout
        assert "logged out" in done.stderr
        assert len(simulator.sim.rotations(account_id)) == rotations


def test_rotate_on_a_dry_run_account_exits_1(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    simulator = make_simulator(1)
    (account_id,) = simulator.sim.account_ids
    accounts = [{"name": "rehearsal", "account_id": account_id, "dry_run": True}]
    config = write_config(tmp_path / "config.yaml", simulator, accounts=accounts)
    for args in ((), ("--force",)):
        done = _rotate(config, "rehearsal", *args)
        assert done.returncode == 1
        assert done.stdout.startswith("rehearsal: not rotated: dry run: would rotate")
    assert simulator.sim.rotations(account_id) == []


def test_quiet_prints_only_the_result(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    simulator = make_simulator(2)
    config = write_config(tmp_path / "config.yaml", simulator)
    loud = rotator("check", "-c", str(config))
    assert loud.stderr  # account_checked lines
    quiet = rotator("check", "-q", "-c", str(config))
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    assert TIME.sub("T", quiet.stdout) == TIME.sub("T", loud.stdout)  # the same table, a moment later

    rotated = _rotate(config, "account-0", "--quiet")
    assert rotated.returncode == 0
    assert rotated.stderr == ""
    assert len(rotated.stdout.splitlines()) == 1 and rotated.stdout.startswith("account-0: rotated")


# --- what check shows (issue 12, item 11) ---------------------------------------------------------


def test_check_shows_the_interval_a_run_would_set_and_who_rotates_when(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(3)  # Cloudflare's interval 42; due in 2, 22 and 42 days... at most
    due, enforced, rehearsal = simulator.sim.account_ids
    accounts = [
        {"name": "due", "account_id": due},
        {"name": "enforced", "account_id": enforced, "key_rotation_interval_days": 30},
        {"name": "rehearsal", "account_id": rehearsal, "dry_run": True},
    ]
    config = write_config(tmp_path / "config.yaml", simulator, accounts=accounts)
    report = {
        a["account"]: a for a in json.loads(rotator("check", "--json", "-c", str(config)).stdout)["accounts"]
    }
    table = rotator("check", "--wide", "-c", str(config)).stdout.splitlines()
    header, rows = table[0].split(), {line.split()[0]: line for line in table[1:]}
    for column in ("ACTION", "REASON", "NEXT", "ROTATION", "CHECK", "BY"):
        assert column in header

    # A run would PUT 30 where Cloudflare says 42: both are shown, and Cloudflare's time follows 30.
    assert report["enforced"]["set_interval"] == 30
    assert " 42 -> 30 " in rows["enforced"]
    last = report["enforced"]["last_key_rotation_at"]
    by, at = report["enforced"]["next_rotation_by"], report["enforced"]["next_rotation_at"]
    assert by == "rotator"  # threshold 3: rotator rotates 3 days before Cloudflare's day 30
    assert _days_between(last, at) == pytest.approx(27, abs=0.01)
    assert re.search(r" \S+Z by rotator ", rows["enforced"])  # (another run: another second)

    assert report["due"]["action"] == "rotate" and report["due"]["next_rotation_by"] == "rotator"
    assert "now, by rotator" in rows["due"]
    assert " due " in rows["due"]

    # In dry run nobody but Cloudflare rotates, when its interval runs out.
    assert report["rehearsal"]["next_rotation_by"] == "cloudflare"
    assert report["rehearsal"]["next_rotation_at"] == report["rehearsal"]["cloudflare_rotates_at"]
    assert re.search(r" \S+Z by Cloudflare ", rows["rehearsal"])

    # The next check: this one plus check_interval (1h) and jitter (0s).
    now = datetime.now(UTC).isoformat()
    column = table[0].index("NEXT CHECK BY")
    for name, entry in report.items():
        assert _days_between(now, entry["next_check_by"]) * 24 == pytest.approx(1, abs=0.05)
        shown = rows[name][column:].split()[0]
        assert _days_between(now, shown) * 24 == pytest.approx(1, abs=0.05)


def _days_between(start: str, end: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds() / 86400
