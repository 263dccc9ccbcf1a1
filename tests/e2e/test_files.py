"""Files read as secrets or state, on the real process: regular files of bounded size, or a clear
error; a reload that meets a named pipe or a device is refused, and the daemon goes on serving."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cloudflare_sim import SimulatorThread
from rotator.config.credentials import CredentialSource, read_secret
from rotator.config.model import load_config
from rotator.errors import ConfigError, CredentialError
from tests.support.processes import TOKEN, daemon, environment, events, rotator, write_config


def token_file_config(
    tmp_path: Path, simulator: SimulatorThread, token_file: Path, name: str = "config.yaml"
) -> Path:
    return write_config(tmp_path / name, simulator, cloudflare={"api_token_file": str(token_file)})


def test_a_fifo_token_file_on_reload_is_refused_and_healthz_keeps_answering(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """Read on the loop, open() of a named pipe waits for a writer that never comes: the reload,
    /healthz and every check froze."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    config = token_file_config(tmp_path, simulator, token)
    with daemon(config, environment(None)) as running:
        running.wait_ready()
        token.unlink()
        os.mkfifo(token)
        running.process.send_signal(signal.SIGHUP)
        rejected = running.wait_for("the reload's refusal", lambda: events(running.logs, "config_rejected"))
        started = time.monotonic()
        assert httpx.get(running.url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
        expected = f"token file {token}: a named pipe, not a regular file: expected a file that holds only"
        assert expected in rejected[0]["reason"]
        assert running.terminate() == 0


def test_dev_zero_as_a_token_file_is_refused_at_start_and_on_reload(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """/dev/zero never ends: read whole, it grew the daemon to 2 GB."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    refused_config = token_file_config(tmp_path, simulator, Path("/dev/zero"), "refused.yaml")
    refused = rotator("run", "--once", "-c", str(refused_config), env=environment(None), timeout=30)
    assert refused.returncode == 2
    assert "token file /dev/zero: a character device, not a regular file" in refused.stderr

    config = token_file_config(tmp_path, simulator, token)
    with daemon(config, environment(None)) as running:
        running.wait_ready()
        token_file_config(tmp_path, simulator, Path("/dev/zero"))  # the file watcher reloads it
        rejected = running.wait_for("the reload's refusal", lambda: events(running.logs, "config_rejected"))
        assert "token file /dev/zero: a character device, not a regular file" in rejected[0]["reason"]
        assert running.get("/healthz").status_code == 200
        assert running.terminate() == 0


def test_a_token_file_larger_than_64_kib_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "token"
    huge.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(CredentialError, match=r"token file .*/token: larger than 64 KiB: expected a file"):
        CredentialSource.token_file(huge).load()


def test_a_state_file_that_is_a_named_pipe_is_refused_at_load(tmp_path: Path) -> None:
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_file": str(fifo),
                "accounts": [{"name": "production", "account_id": "023e105f4ecef8ad9ca31a8372d0c353"}],
            }
        )
    )
    with pytest.raises(ConfigError, match=r"state_file: .*state.json is a named pipe, not a regular file"):
        load_config(config)


def test_a_webhook_secret_file_and_the_http_token_file_are_held_to_the_same_rule(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    with pytest.raises(CredentialError, match=r"^secret file /dev/zero: a character device, not a regular"):
        read_secret(None, Path("/dev/zero"))
    config = write_config(tmp_path / "config.yaml", simulator, http={"auth_token_file": "/dev/zero"})
    refused = rotator("run", "-c", str(config), timeout=30)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"rotator: error: {config}: http.auth_token_file: token file /dev/zero: a character device, not a "
        "regular file: expected a file that holds only the secret"
    )
