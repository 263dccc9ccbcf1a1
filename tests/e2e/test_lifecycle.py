"""Change and lifecycle: reload without a restart, state across restarts, start-up and recovery."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from cloudflare_sim import Fault, Simulator, SimulatorThread
from tests.support.processes import TOKEN, Daemon, daemon, events, free_port, log_lines, rotator, write_config

MakeSimulator = Callable[..., SimulatorThread]


class ConfigMapDir:
    """A config mounted the way Kubernetes mounts a ConfigMap: updates swap the ``..data`` link."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        root.mkdir()
        self.version = 0
        self.swap(config)
        (root / "config.yaml").symlink_to("..data/config.yaml")

    @property
    def path(self) -> Path:
        return self.root / "config.yaml"

    def swap(self, config: dict[str, Any] | str) -> None:
        self.version += 1
        target = self.root / f"..{self.version}"
        target.mkdir()
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        (target / "config.yaml").write_text(text, encoding="utf-8")
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        link.rename(self.root / "..data")  # atomic, as the kubelet does


def _config(path: Path, sim: SimulatorThread, n: int, **sections: Any) -> dict[str, Any]:
    accounts = [{"name": f"account-{i}", "account_id": a} for i, a in enumerate(sim.sim.account_ids[:n])]
    write_config(path, sim, accounts=accounts, schedule={"check_interval": "1s"}, **sections)
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _samples(running: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(running.get("/metrics").text)
        for s in family.samples
    }


def test_a_configmap_update_takes_effect_without_losing_memory(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    due = simulator.sim.account_ids[0]
    config = _config(tmp_path / "draft.yaml", simulator, 1)
    mount = ConfigMapDir(tmp_path / "mount", config)
    with daemon(mount.path) as running:
        running.wait_for("the due key rotated", lambda: events(running.logs, "key_rotated"))
        # From now on Cloudflare keeps answering as if the rotation never happened.
        simulator.sim.add_fault(Fault(kind="stale", op="get", account_id=due))
        mount.swap(_config(tmp_path / "draft.yaml", simulator, 2, http=config["http"]))

        reloaded = running.wait_for("config_reloaded", lambda: events(running.logs, "config_reloaded"))[0]
        assert reloaded["trigger"] == "file_changed"
        assert reloaded["added"] == ["account-1"]
        assert reloaded["restart_required"] == []
        running.wait_for(
            "account-1 checked", lambda: events(running.logs, "account_checked", account="account-1")
        )
        after = len(running.logs)
        running.wait_for(
            "a stale answer for account-0 recognised after the reload",
            lambda: [
                e
                for e in events(running.logs[after:], "account_checked", account="account-0")
                if "predates the rotation at" in e["message"]
            ],
        )
        samples = _samples(running)
        assert samples[("rotator_accounts", ())] == 2
        assert samples[("rotator_config_reloads_total", (("result", "success"),))] == 1
        assert running.terminate() == 0
    assert len(simulator.sim.rotations(due)) == 1


def test_an_account_removed_and_added_again_starts_afresh(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """What rotator remembered of an account (its last read, for rotations made elsewhere) goes
    with it: added again, it is judged as at a fresh start, not against a read from before."""
    simulator = make_simulator(2)
    path = tmp_path / "config.yaml"
    both = _config(path, simulator, 2)
    returning = "account-1"
    with daemon(path) as running:
        running.wait_for(
            "account-1 checked", lambda: events(running.logs, "account_checked", account=returning)
        )
        path.write_text(yaml.safe_dump({**both, "accounts": both["accounts"][:1]}), encoding="utf-8")
        running.wait_for("account-1 removed", lambda: events(running.logs, "config_reloaded"))
        # While it is out of the config, Cloudflare rotates account-1 on its own (due in 22 days).
        simulator.sim.advance(23)
        path.write_text(yaml.safe_dump(both), encoding="utf-8")
        running.wait_for("account-1 added again", lambda: len(events(running.logs, "config_reloaded")) == 2)
        # From the reload's line on: the account may be read the moment it is added, before this runs.
        after = [i for i, line in enumerate(running.logs) if line["event"] == "config_reloaded"][1]
        running.wait_for(
            "account-1 checked again",
            lambda: events(running.logs[after:], "account_checked", account=returning),
        )
        assert not events(running.logs, "key_rotated_elsewhere", account=returning)
        assert running.terminate() == 0


def test_an_invalid_config_is_refused_and_the_old_one_keeps_running(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    good = _config(path, simulator, 2)
    with daemon(path) as running:
        running.wait_ready()
        path.write_text(yaml.safe_dump({**good, "rotation": {"threshold_days": -1}}))
        running.process.send_signal(signal.SIGHUP)

        rejected = running.wait_for("config_rejected", lambda: events(running.logs, "config_rejected"))[0]
        assert "threshold_days" in rejected["reason"]
        after = len(running.logs)
        running.wait_for("checks go on", lambda: events(running.logs[after:], "account_checked"))
        samples = _samples(running)
        assert samples[("rotator_config_reloads_total", (("result", "error"),))] >= 1
        assert samples[("rotator_config_last_reload_successful", ())] == 0
        assert running.process.poll() is None
        assert running.terminate() == 0


def test_a_reload_that_fails_in_any_way_is_logged_and_counted_and_later_edits_still_apply(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """The file watcher outlives every failed reload: a YAML complex key (once a TypeError that
    killed the watcher in silence, every later edit ignored) and a failure outside the refusals."""
    path = tmp_path / "config.yaml"
    good = _config(path, simulator, 1)
    with daemon(path) as running:
        running.wait_ready()
        path.write_text(yaml.safe_dump(good) + "? [a, b]\n: 1\n", encoding="utf-8")
        rejected = running.wait_for("config_rejected", lambda: events(running.logs, "config_rejected"))[0]
        assert rejected["trigger"] == "file_changed"
        assert rejected["reason"].startswith(f"{path}: not valid YAML at line ")
        assert "expected a string as mapping key" in rejected["reason"]

        # A token file that is not UTF-8 escapes credential loading as UnicodeDecodeError, not as
        # a CredentialError: the kind of failure no refusal foresees, which the reload must survive
        # too. (Were it refused as a CredentialError one day, config_rejected would say so instead.)
        token_file = tmp_path / "token"
        token_file.write_bytes(b"\xff\xfe not text")
        account = {**good["accounts"][0], "api_token_file": str(token_file)}
        path.write_text(yaml.safe_dump({**good, "accounts": [account]}), encoding="utf-8")
        refusals = ("config_rejected", "config_reload_failed")
        failed = running.wait_for(
            "a second failed reload", lambda: [e for e in running.logs if e["event"] in refusals][1:]
        )[0]
        assert failed["level"] == "error"
        assert failed["trigger"] == "file_changed"

        path.write_text(yaml.safe_dump(_config(tmp_path / "draft.yaml", simulator, 2, http=good["http"])))
        reloaded = running.wait_for("config_reloaded", lambda: events(running.logs, "config_reloaded"))[0]
        assert reloaded["added"] == ["account-1"]
        samples = _samples(running)
        assert samples[("rotator_config_reloads_total", (("result", "error"),))] == 2
        assert samples[("rotator_config_reloads_total", (("result", "success"),))] == 1
        assert samples[("rotator_config_last_reload_successful", ())] == 1
        assert running.terminate() == 0
    assert "Traceback" not in running.stderr


def test_a_reload_names_the_settings_that_need_a_restart(simulator: SimulatorThread, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    config = _config(path, simulator, 1)
    with daemon(path) as running:
        running.wait_ready()
        path.write_text(yaml.safe_dump({**config, "http": {"listen": f"127.0.0.1:{free_port()}"}}))
        running.process.send_signal(signal.SIGHUP)

        reloaded = running.wait_for("config_reloaded", lambda: events(running.logs, "config_reloaded"))[0]
        assert reloaded["restart_required"] == ["http.listen"]
        assert running.get("/healthz").status_code == 200  # still on the old address
        assert running.terminate() == 0


def test_an_edit_and_a_sighup_are_one_reload_and_a_pending_restart_stays_listed(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """Issue 12, item 4: the watcher and SIGHUP read the same edit once, and a later reload that
    changes something else still names the setting that waits for a restart."""
    path = tmp_path / "config.yaml"
    config = _config(path, simulator, 1)
    listen = {"listen": f"127.0.0.1:{free_port()}"}
    with daemon(path) as running:
        running.wait_ready()
        assert _samples(running)[("rotator_config_restart_required", (("setting", "http.listen"),))] == 0
        path.write_text(yaml.safe_dump({**config, "http": listen}))
        running.process.send_signal(signal.SIGHUP)
        first = running.wait_for("config_reloaded", lambda: events(running.logs, "config_reloaded"))[0]
        assert first["restart_required"] == ["http.listen"]

        path.write_text(yaml.safe_dump(_config(tmp_path / "draft.yaml", simulator, 2, http=listen)))
        running.wait_for(
            "account-1 added",
            lambda: [e for e in events(running.logs, "config_reloaded") if e["added"] == ["account-1"]],
        )
        reloads = events(running.logs, "config_reloaded")
        assert len(reloads) == 2, reloads
        assert reloads[1]["restart_required"] == ["http.listen"]
        samples = _samples(running)
        assert samples[("rotator_config_reloads_total", (("result", "success"),))] == 2
        assert samples[("rotator_config_restart_required", (("setting", "http.listen"),))] == 1
        assert samples[("rotator_config_restart_required", (("setting", "state_file"),))] == 0
        assert running.terminate() == 0


def test_sighup_during_start_up_does_not_kill_the_daemon(simulator: SimulatorThread, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    _config(path, simulator, 1)
    with daemon(path) as running:
        _wait_until_sighup_is_caught(running.process.pid)
        running.process.send_signal(signal.SIGHUP)  # long before the daemon's loop is up

        running.wait_ready()
        # The file is the one the daemon started with: the SIGHUP is answered, not a reload.
        answered = running.wait_for("config_unchanged", lambda: events(running.logs, "config_unchanged"))[0]
        assert answered["trigger"] == "sighup"
        assert running.terminate() == 0


def _wait_until_sighup_is_caught(pid: int) -> None:
    """The kernel says when a handler is installed: bit 1 of SigCgt in /proc/PID/status."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGHUP - 1)):
            return
        os.sched_yield()
    raise AssertionError("rotator never installed a SIGHUP handler")


def test_state_file_keeps_the_gap_across_restarts(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    simulator = make_simulator(1)
    (account_id,) = simulator.sim.account_ids
    config = str(write_config(tmp_path / "config.yaml", simulator, state_file=str(tmp_path / "state.json")))

    assert rotator("run", "--once", "-c", config).returncode == 0
    simulator.sim.add_fault(Fault(kind="stale", op="get"))  # Cloudflare "forgets" the rotation
    again = rotator("run", "--once", "-c", config)

    assert again.returncode == 0
    (checked,) = events(log_lines(again.stdout), "account_checked")
    assert checked["decision"] == "skip"
    assert "predates the rotation at" in checked["message"]
    assert len(simulator.sim.rotations(account_id)) == 1


def test_start_up_with_cloudflare_unreachable_recovers_on_its_own(tmp_path: Path) -> None:
    port = free_port()
    sim = Simulator.with_accounts(1, token=TOKEN)
    account = {"name": "production", "account_id": sim.account_ids[0]}
    config = write_config(
        tmp_path / "config.yaml",
        f"http://127.0.0.1:{port}/client/v4",
        accounts=[account],
        schedule={"check_interval": "1s"},
    )
    with daemon(config) as running:
        running.wait_for("a failed check", lambda: events(running.logs, "check_failed"))
        assert running.get("/readyz").status_code == 503
        with SimulatorThread(sim, port=port):
            running.wait_ready()
            assert running.terminate() == 0
