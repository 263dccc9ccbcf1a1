"""The status page (/) and /status: the real daemon against the simulator, the JSON against its
schema, the page as a headless Chromium renders it at phone width."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cloudflare_sim import Fault, SimulatorThread
from rotator.check.checker import CheckResult
from rotator.config.model import parse_config
from rotator.errors import InternalError
from rotator.web.status import StatusBoard, schema
from tests.support.processes import Daemon, daemon, write_config

MakeSimulator = Callable[..., SimulatorThread]
WINDOW = {"cron": "0 3 * * sun", "duration": "2h"}


def _accounts(sim: SimulatorThread) -> list[dict[str, Any]]:
    due, unconfirmed, windowed = sim.sim.account_ids
    return [
        {"name": "production", "account_id": due},
        # Due at once (its threshold is above its days left).
        {"name": "staging", "account_id": unconfirmed, "threshold_days": 30},
        {"name": "lab", "account_id": windowed, "windows": [WINDOW]},
    ]


@pytest.fixture
def running(make_simulator: MakeSimulator, tmp_path: Path) -> Iterator[tuple[Daemon, SimulatorThread, Path]]:
    sim = make_simulator(3)
    staging = sim.sim.account_ids[1]
    # Its rotation's answer is lost and every later read is stale: the rotation stays unconfirmed.
    sim.sim.add_fault(Fault(kind="apply_then_drop", op="rotate", account_id=staging))
    sim.sim.add_fault(Fault(kind="stale", op="get", account_id=staging))
    config = write_config(tmp_path / "config.yaml", sim, accounts=_accounts(sim))
    with daemon(config) as running:
        running.wait_ready()
        running.wait_for("every account checked", lambda: _all_checked(running))
        yield running, sim, config


def _all_checked(running: Daemon) -> dict[str, Any] | None:
    answer = running.get("/status")
    if answer.status_code != 200:
        return None
    body: dict[str, Any] = answer.json()
    return body if all(a["checked"] for a in body["accounts"]) else None


def _by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["account"]: a for a in body["accounts"]}


def test_status_json_follows_its_schema_and_says_what_happens_next(
    running: tuple[Daemon, SimulatorThread, Path],
) -> None:
    proc, sim, config = running
    body = _all_checked(proc)
    assert body is not None

    jsonschema.validate(body, schema(), cls=jsonschema.Draft202012Validator)
    accounts = _by_name(body)
    assert list(accounts) == ["production", "staging", "lab"]
    production, staging, lab = accounts["production"], accounts["staging"], accounts["lab"]
    assert (production["action"], production["reason"], production["rotated"]) == ("rotate", "due", True)
    assert production["rotation"]["state"] == "done" and production["rotation_open"] is False
    assert staging["action"] == "rotate" and staging["rotated"] is False
    assert staging["rotation"]["state"] == "unconfirmed" and staging["rotation_open"] is True
    assert (lab["action"], lab["reason"]) == ("skip", "not_due")
    assert lab["next_window_at"] is not None and datetime.fromisoformat(lab["next_window_at"]).weekday() == 6
    assert production["next_window_at"] is None  # no windows configured
    for account in accounts.values():
        assert account["days_until_next_rotation"] is not None
        # check_interval is 1h: the next check is about an hour after the last one (planned when
        # the check ended, a moment after checked_at). Before Cloudflare's clock has been seen for a
        # minute, even an account far from due (lab) is read again within check_interval.
        gap = datetime.fromisoformat(account["next_check_at"]) - datetime.fromisoformat(account["checked_at"])
        assert 3000 < gap.total_seconds() <= 3605

    # The same data as `rotator check --json`: the fields it prints are all here.
    assert set(production) >= set(CheckResult(parse_config(config.read_text(), config).accounts[0]).as_dict())

    # A reload that removes an account removes it from /status and from the page.
    write_config(config, sim, accounts=_accounts(sim)[:2], http={"listen": proc.url.removeprefix("http://")})
    proc.wait_for("lab gone from /status", lambda: "lab" not in _by_name(proc.get("/status").json()))
    assert "lab" not in proc.get("/").text and "production" in proc.get("/").text
    jsonschema.validate(proc.get("/status").json(), schema(), cls=jsonschema.Draft202012Validator)


def test_status_page_escapes_what_it_shows(tmp_path: Path) -> None:
    sim_url = "http://127.0.0.1:1"
    config = write_config(tmp_path / "c.yaml", sim_url, accounts=[{"name": "a", "account_id": "a" * 32}])
    account = parse_config(config.read_text(), config).accounts[0]
    board = StatusBoard([account], next_check=lambda _: None)
    assert '"checked": false' not in board.html()  # the page is HTML, not JSON
    assert "not checked yet" in board.html()

    board.record(CheckResult(account, error=InternalError("<script>alert(1)</script> & more")))

    page = board.html()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    jsonschema.validate(board.as_json(), schema(), cls=jsonschema.Draft202012Validator)


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run installs it)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return found


def _browse(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=390,844",  # a phone
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_status_page_in_a_real_browser_at_phone_width(
    running: tuple[Daemon, SimulatorThread, Path], tmp_path: Path
) -> None:
    chromium = _chromium()
    proc, _, _ = running

    dom = _browse(chromium, tmp_path, "--dump-dom", proc.url + "/")
    shot = tmp_path / "status.png"
    _browse(chromium, tmp_path, f"--screenshot={shot}", proc.url + "/")

    assert dom.returncode == 0, dom.stderr
    page = dom.stdout
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<script" not in page
    for name in ("production", "staging", "lab"):
        assert f"<h2>{name} " in page
    assert "rotate: due" in page and "skip: not_due" in page
    assert "Unconfirmed rotation" in page and "unconfirmed since" in page
    assert "Next window" in page and "Next check" in page
    assert shot.exists(), "no screenshot"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (390, 844)
    assert len(png) > 20_000, f"a {len(png)}-byte screenshot is too plain to show three accounts"
