"""The HTTP endpoints' bearer-token protection (http.auth_token_file), against a real daemon."""

from __future__ import annotations

from pathlib import Path

import httpx

from cloudflare_sim import SimulatorThread
from tests.support.processes import daemon, events, rotator, write_config

TOKEN_VALUE = "s3cret-metrics-token-0123456789"


def test_metrics_need_the_bearer_token_and_the_probes_stay_open(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN_VALUE + "\n", encoding="utf-8")
    path = write_config(tmp_path / "config.yaml", simulator, http={"auth_token_file": str(token_file)})
    with daemon(path) as running:
        running.wait_ready()
        assert running.get("/healthz").status_code == 200
        assert running.get("/readyz").status_code == 200

        for path in ("/status", "/"):  # the same data as /metrics, and more
            assert running.get(path).status_code == 401, path
            authorized = httpx.get(
                running.url + path, headers={"Authorization": f"Bearer {TOKEN_VALUE}"}, timeout=5
            )
            assert authorized.status_code == 200, path
        refused = running.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers.get_list("WWW-Authenticate")[-1].startswith("Bearer")
        assert "rotator_accounts" not in refused.text
        wrong = httpx.get(running.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        bare = httpx.get(running.url + "/metrics", headers={"Authorization": TOKEN_VALUE}, timeout=5)
        assert bare.status_code == 401
        allowed = httpx.get(
            running.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN_VALUE}"}, timeout=5
        )
        assert allowed.status_code == 200
        assert "\nrotator_accounts " in allowed.text

        (listening,) = events(running.logs, "http_listening")
        assert listening["auth"] == "bearer"
        assert running.terminate() == 0
    assert TOKEN_VALUE not in "".join(running.output) + running.stderr


def test_an_unreadable_token_file_stops_run_before_it_starts(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-token"
    path = write_config(tmp_path / "config.yaml", simulator, http={"auth_token_file": str(missing)})
    done = rotator("run", "-c", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"rotator: error: {path}: http.auth_token_file: token file {missing}: no such file"
    )
