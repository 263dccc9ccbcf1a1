"""End to end: the real ``rotator`` process over real HTTP against the simulator."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudflare_sim import Fault, SimulatorThread
from tests.support.processes import (
    TOKEN,
    daemon,
    environment,
    events,
    free_port,
    log_lines,
    rotator,
    write_config,
)

MakeSimulator = Callable[..., SimulatorThread]


def test_run_once_rotates_only_the_due_account(simulator: SimulatorThread, tmp_path: Path) -> None:
    due, later, latest = simulator.sim.account_ids
    before = simulator.sim.key_state(due).last_key_rotation_at
    config = write_config(tmp_path / "config.yaml", simulator)

    done = rotator("run", "--once", "-c", str(config))

    assert done.returncode == 0, done.stderr
    assert [r.source for r in simulator.sim.rotations(due)] == ["api"]
    assert simulator.sim.rotations(later) == simulator.sim.rotations(latest) == []
    logs = log_lines(done.stdout)
    for line in logs:
        assert line["timestamp"].endswith("Z")
        assert line["level"] in {"debug", "info", "warning", "error"}
    assert events(logs, "config_loaded")
    checked = events(logs, "account_checked", account="account-0")[0]
    assert checked["account_id"] == due
    assert checked["decision"] == "rotate" and checked["reason"] == "due"
    assert {"days_until_next_rotation", "key_rotation_interval_days", "last_key_rotation_at"} <= set(checked)
    rotated = events(logs, "key_rotated", account="account-0")[0]
    assert rotated["previous_last_key_rotation_at"].startswith(before.strftime("%Y-%m-%dT%H:%M:%S"))
    assert rotated["last_key_rotation_at"] > rotated["previous_last_key_rotation_at"]
    assert [e["decision"] for e in events(logs, "account_checked", account="account-1")] == ["skip"]
    assert events(logs, "shutdown")
    assert TOKEN not in done.stdout + done.stderr


def test_check_is_read_only_and_prints_json_on_stdout(simulator: SimulatorThread, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", simulator)

    done = rotator("check", "--json", "-c", str(config))

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [a["action"] for a in report["accounts"]] == ["rotate", "skip", "skip"]
    assert report["accounts"][0]["reason"] == "due"
    assert report["accounts"][0]["days_until_next_rotation"] <= 3
    assert report["accounts"][1]["key_rotation_interval_days"] == 42
    assert {r.method for r in simulator.sim.requests()} == {"GET"}
    assert events(log_lines(done.stderr), "account_checked")  # logs go to stderr


def test_check_prints_a_table(simulator: SimulatorThread, tmp_path: Path) -> None:
    done = rotator("check", "-c", str(write_config(tmp_path / "config.yaml", simulator)))

    header, *lines = done.stdout.splitlines()
    assert header.split()[:3] == ["ACCOUNT", "DAYS", "LEFT"]
    rows = [line for line in lines if not line.startswith(" ")]
    assert [row.split()[0] for row in rows] == ["account-0", "account-1", "account-2"]
    assert "rotate" in rows[0] and "skip" in rows[1]
    # Each account's WHY under its row; every line fits 100 columns (it was 260 wide).
    assert lines[1].startswith("    ") and "days until Cloudflare rotates" in lines[1]
    assert max(len(line) for line in done.stdout.splitlines()) <= 100, done.stdout


def test_check_wide_shows_every_column_in_full(simulator: SimulatorThread, tmp_path: Path) -> None:
    done = rotator("check", "--wide", "-c", str(write_config(tmp_path / "config.yaml", simulator)))

    header, *rows = done.stdout.splitlines()
    for column in ("LAST ROTATION", "NEXT CHECK BY", "NEXT WINDOW", "WHY"):
        assert column in header
    assert len(rows) == 3 and all("days until Cloudflare rotates" in row for row in rows)
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z by (rotator|Cloudflare)", rows[1])


def test_one_failing_account_does_not_stop_the_others(simulator: SimulatorThread, tmp_path: Path) -> None:
    due, failing, _ = simulator.sim.account_ids
    simulator.sim.add_fault(Fault(kind="status", status=403, op="get", account_id=failing))
    config = write_config(tmp_path / "config.yaml", simulator)

    done = rotator("run", "--once", "-c", str(config))

    assert done.returncode == 1
    assert len(simulator.sim.rotations(due)) == 1
    failed = events(log_lines(done.stdout), "check_failed", account="account-1")[0]
    assert "Access: Organizations, Identity Providers, and Groups Read" in failed["error"]
    assert len(simulator.sim.requests(op="get", account_id=failing)) == 1  # a 403 is not retried


def test_rotate_command_holds_the_gap_unless_forced(simulator: SimulatorThread, tmp_path: Path) -> None:
    account_id = simulator.sim.account_ids[1]  # not due
    config = str(write_config(tmp_path / "config.yaml", simulator))

    first = rotator("rotate", "account-1", "-c", config)
    again = rotator("rotate", "account-1", "-c", config)
    assert len(simulator.sim.rotations(account_id)) == 1
    unconfirmed = rotator("rotate", "account-1", "--force", "-c", config)
    assert len(simulator.sim.rotations(account_id)) == 1
    forced = rotator("rotate", "account-1", "--force", "--yes", "-c", config)

    assert first.returncode == 0 and "rotated" in first.stdout
    assert again.returncode == 1 and "less than 7 days ago" in again.stdout
    assert unconfirmed.returncode == 1 and "needs --yes" in unconfirmed.stdout
    assert forced.returncode == 0
    assert len(simulator.sim.rotations(account_id)) == 2


def test_rotate_names_an_unknown_account(simulator: SimulatorThread, tmp_path: Path) -> None:
    done = rotator("rotate", "nope", "-c", str(write_config(tmp_path / "config.yaml", simulator)))

    assert done.returncode == 2
    assert "no account named 'nope'" in done.stderr and "account-0" in done.stderr


def test_dry_run_changes_nothing_and_says_so(simulator: SimulatorThread, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml", simulator, rotation={"dry_run": True, "key_rotation_interval_days": 30}
    )

    done = rotator("run", "--once", "-c", str(config))

    assert done.returncode == 0
    assert {r.method for r in simulator.sim.requests()} == {"GET"}
    skipped = events(log_lines(done.stdout), "rotation_skipped", account="account-0")[0]
    assert skipped["reason"] == "dry_run"


def test_interval_is_enforced(simulator: SimulatorThread, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", simulator, rotation={"key_rotation_interval_days": 30})

    done = rotator("run", "--once", "-c", str(config))

    assert done.returncode == 0, done.stdout
    assert {simulator.sim.key_state(a).key_rotation_interval_days for a in simulator.sim.account_ids} == {30}
    updated = events(log_lines(done.stdout), "interval_updated", account="account-1")[0]
    assert (updated["previous_key_rotation_interval_days"], updated["key_rotation_interval_days"]) == (42, 30)


def test_daemon_serves_metrics_and_probes_and_stops_on_sigterm(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", simulator, rotation={"dry_run": False})
    with daemon(config) as running:
        running.wait_ready()
        running.wait_for("key_rotated", lambda: events(running.logs, "key_rotated"))
        running.wait_for("3 checks", lambda: len(events(running.logs, "account_checked")) >= 3)
        assert running.get("/healthz").status_code == 200
        exposition = running.get("/metrics").text

        assert running.terminate() == 0

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    assert samples[("rotator_accounts", ())] == 3
    assert samples[("rotator_rotations_total", (("account", "account-0"), ("result", "success")))] == 1
    for i, account_id in enumerate(simulator.sim.account_ids):
        ids = (("account", f"account-{i}"), ("account_id", account_id))
        assert samples[("rotator_checks_total", (("account", f"account-{i}"), ("result", "error")))] == 0
        assert samples[("rotator_rotations_total", (("account", f"account-{i}"), ("result", "dry_run")))] == 0
        assert samples[("rotator_last_successful_check_timestamp_seconds", ids)] > 0
        state = simulator.sim.key_state(account_id)
        assert samples[("rotator_key_rotation_interval_seconds", ids)] == 42 * 86400
        next_rotation = state.last_key_rotation_at.timestamp() + 42 * 86400
        assert samples[("rotator_key_next_rotation_timestamp_seconds", ids)] == pytest.approx(next_rotation)
        assert samples[("rotator_rotation_threshold_seconds", ids)] == 3 * 86400
        assert samples[("rotator_dry_run", ids)] == 0
    assert samples[("rotator_check_interval_seconds", ())] == 3600
    assert samples[("rotator_state_save_failures_total", ())] == 0
    assert any(name == "rotator_build_info" for name, _ in samples)
    assert events(running.logs, "shutdown")


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_metrics_pass_promtool_lint(simulator: SimulatorThread, tmp_path: Path) -> None:
    with daemon(write_config(tmp_path / "config.yaml", simulator)) as running:
        running.wait_ready()
        exposition = running.get("/metrics").text
        running.terminate()

    lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == lint.stderr.strip() == ""


def test_not_ready_until_cloudflare_answers(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/client/v4"
    config = write_config(
        tmp_path / "config.yaml",
        unreachable,
        accounts=[{"name": "production", "account_id": "0" * 32}],
    )
    with daemon(config) as running:
        running.wait_for("/healthz 200", lambda: running.get("/healthz").status_code == 200)
        running.wait_for("check_failed", lambda: events(running.logs, "check_failed"))
        readyz = running.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.text == "not ready\n"  # open: nothing of the accounts or hosts
        verbose = running.get("/readyz?verbose")
        assert "has not answered" in verbose.text and "could not connect" in verbose.text
        assert running.terminate() == 0


def test_sigterm_during_a_rotation_lets_it_finish_and_the_next_process_settles_it(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(1)
    (account_id,) = simulator.sim.account_ids
    # The rotation is applied and its answer never comes: the POST runs to its deadline, and the
    # ledger keeps it unconfirmed (on disk), so the next process settles it from a read.
    simulator.sim.add_fault(Fault(kind="apply_then_hang", op="rotate", times=1))
    config = write_config(tmp_path / "config.yaml", simulator, state_file=str(tmp_path / "state.json"))
    with daemon(config) as running:
        running.wait_for("the rotate POST", lambda: simulator.sim.requests(op="rotate"))
        code = running.terminate()

    assert code == 0
    names = [e["event"] for e in running.logs]
    assert names.index("rotation_unconfirmed") < names.index("shutdown")
    (shutdown,) = events(running.logs, "shutdown")
    assert shutdown["rotations_unfinished"] == 0
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["accounts"][account_id]["rotation"]["state"] == "unconfirmed"

    after = rotator("run", "--once", "-c", str(config))
    assert after.returncode == 0, after.stdout
    (confirmed,) = events(log_lines(after.stdout), "key_rotated")
    assert confirmed["reason"] == "confirmed"
    assert len(simulator.sim.requests(op="rotate")) == 1
    assert len(simulator.sim.rotations(account_id)) == 1


def test_a_dry_run_counts_each_held_back_rotation_once(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    """rotator_rotations_total{result="dry_run"} counts rotations a dry run held back, not the
    checks that found the same key due again."""
    simulator = make_simulator(1)  # due within 2 days
    (account_id,) = simulator.sim.account_ids
    accounts = [{"name": "rehearsal", "account_id": account_id, "dry_run": True}]
    path = write_config(
        tmp_path / "config.yaml", simulator, accounts=accounts, schedule={"check_interval": "1s"}
    )
    with daemon(path) as running:
        running.wait_for(
            "three checks held back",
            lambda: len(events(running.logs, "rotation_skipped", reason="dry_run")) >= 3,
        )
        exposition = running.get("/metrics").text
        assert running.terminate() == 0
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    assert samples[("rotator_rotations_total", (("account", "rehearsal"), ("result", "dry_run")))] == 1
    assert samples[("rotator_dry_run", (("account", "rehearsal"), ("account_id", account_id)))] == 1
    assert simulator.sim.rotations(account_id) == []


def test_version() -> None:
    done = rotator("--version")
    assert done.returncode == 0 and done.stdout.startswith("rotator ")


def test_demo_shows_rotations(tmp_path: Path) -> None:
    done = rotator(
        "demo", "--json", "--duration", "8", "--listen", f"127.0.0.1:{free_port()}", env=environment(None)
    )

    assert done.returncode == 0, done.stderr
    # --json means JSON: every line on stdout is one (`rotator demo --json | jq` works); the
    # banner is on stderr.
    logs = [json.loads(line) for line in done.stdout.splitlines()]
    assert "Status page: http://127.0.0.1:" in done.stderr and "Status page" not in done.stdout
    assert events(logs, "key_rotated")
    assert events(logs, "rotation_skipped", reason="dry_run")
    # The demo's own config is one rotator has nothing to warn about.
    assert not events(logs, "config_warning")
    # (apscheduler's own "Error running job" for a check cancelled at shutdown is another matter.)
    said = [
        e
        for e in logs
        if e["level"] in ("warning", "error") and not e.get("logger", "").startswith("apscheduler")
    ]
    assert not said, said
    # Every rotation is followed by its key seen at the team's certs endpoint.
    rotated = {e["account"] for e in events(logs, "key_rotated")}
    published = {e["account"] for e in events(logs, "key_published")}
    # (The demo's last rotation may meet its end before its first certs read.)
    assert rotated and published <= rotated and len(published) >= len(rotated) - 1


def test_a_secret_is_blanked_out_of_logs_even_where_a_message_would_carry_it(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """Defence in depth: the simulator echoes the rejected token in its error message."""
    simulator.sim.add_fault(Fault(kind="status", status=400, op="get", message=f"bad request from {TOKEN}"))
    config = write_config(tmp_path / "config.yaml", simulator)

    done = rotator("run", "--once", "-c", str(config))

    assert done.returncode == 1
    assert events(log_lines(done.stdout), "check_failed")[0]["error"].count("[REDACTED]") == 1
    assert TOKEN not in done.stdout + done.stderr


DEMO_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d)  (\S+) +(.*)$")


def test_demo_is_a_view_a_person_can_watch() -> None:
    """Routine checks quiet, rotations marked, the simulated clock on every line, a summary."""
    seconds = 12  # six simulated days: one summary on the way, one at the end
    done = rotator(
        "demo", "--duration", str(seconds), "--listen", f"127.0.0.1:{free_port()}", env=environment(None)
    )

    assert done.returncode == 0, done.stderr
    banner, view = done.stdout.split("\n\n", 1)
    assert len(banner.splitlines()) <= 3 and "Status page: http://127.0.0.1:" in banner
    header, *lines = view.splitlines()
    assert header.split()[:3] == ["SIMULATED", "TIME", "ACCOUNT"]
    parsed = [DEMO_LINE.match(line) for line in lines]
    assert all(parsed), f"lines without the simulated time in front:\n{view}"
    assert all(len(line) <= 120 for line in lines), view
    # The clock in each line is the simulated one: twelve real seconds span about six days.
    times = [datetime.fromisoformat(m[1]) for m in parsed if m]
    days = (times[-1] - times[0]).total_seconds() / 86400
    assert times == sorted(times) and 4.5 <= days <= 7, view
    # Quiet: a few lines a simulated day (the JSON logs had about 12), no routine checks.
    assert len(lines) <= 3 * days, view
    assert "account_checked" not in view and "not_due" not in view
    assert "!!" not in view, view  # nothing needs attention: not even a warning about its own config
    # Rotations stand out, marked, one line each, and only rotations carry the mark.
    rotated = [line for line in lines if ">> KEY ROTATED" in line]
    assert any(" production " in line for line in rotated), view
    assert all("KEY ROTATED" in line or "ROTATED BY CLOUDFLARE" in line for line in lines if ">>" in line)
    assert len({line.split()[2] for line in rotated}) == len(rotated)  # one line per account's rotation
    assert any("** INTERVAL UPDATED" in line and "partners" in line for line in lines), view
    # A summary on the way and at the end: rotations so far, by whom.
    summaries = [line for line in lines if "---- summary:" in line]
    assert len(summaries) >= 2, view
    assert re.search(r"rotator [1-9]\d* \(production 1", summaries[-1]), summaries[-1]
    assert "Cloudflare on its own" in summaries[-1]


def test_a_400_for_an_interval_says_400_and_cloudflares_message(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    message = "key_rotation_interval_days must be between 21 and 365"
    simulator.sim.add_fault(Fault(kind="status", status=400, op="put", message=message))
    config = write_config(tmp_path / "config.yaml", simulator, rotation={"key_rotation_interval_days": 30})

    done = rotator("run", "--once", "-c", str(config))

    assert done.returncode == 1
    failed = events(log_lines(done.stdout), "interval_update_failed", account="account-1")[0]
    assert failed["error"].startswith("PUT keys: Cloudflare answered 400 (")
    assert message in failed["error"] and failed["wanted"] == 30
