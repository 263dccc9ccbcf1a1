"""The status page (/) and /status: the real daemon against the simulator, the JSON against its
schema, the page as a headless Chromium renders it at phone width."""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
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
    # Not due yet, with a Sunday 03:00 window: rotator rotates in the first window from its due day.
    planned = datetime.fromisoformat(lab["next_rotation_at"])
    assert (lab["next_rotation_by"], planned.weekday(), planned.hour, planned.minute) == ("rotator", 6, 3, 0)
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
    assert 'id="account-lab"' not in proc.get("/").text and 'id="account-production"' in proc.get("/").text
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
            *(args if any(a.startswith("--window-size") for a in args) else ("--window-size=390,844", *args)),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _screenshot(chromium: str, tmp_path: Path, url: str, width: int, height: int) -> bytes:
    shot = tmp_path / f"status-{width}.png"
    done = _browse(chromium, tmp_path, f"--window-size={width},{height}", f"--screenshot={shot}", url)
    assert shot.exists(), f"no screenshot: {done.stderr}"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (width, height)
    keep = os.environ.get("ROTATOR_SCREENSHOTS")  # a folder to keep them in, to look at
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / shot.name).write_bytes(png)
    return png


def _text(dom: str) -> str:
    """The page's words, as a reader sees them (tags dropped, entities read, spaces collapsed)."""
    inline = re.sub(r"</?(b|span)\b[^>]*>", "", dom)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def test_status_page_in_a_real_browser_at_desktop_and_phone_width(
    running: tuple[Daemon, SimulatorThread, Path], tmp_path: Path
) -> None:
    chromium = _chromium()
    proc, _, _ = running

    dom = _browse(chromium, tmp_path, "--dump-dom", proc.url + "/")
    desktop = _screenshot(chromium, tmp_path, proc.url + "/", 1280, 1100)
    phone = _screenshot(chromium, tmp_path, proc.url + "/", 390, 844)

    assert dom.returncode == 0, dom.stderr
    page = dom.stdout
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<script" not in page
    text = _text(page)
    # The fleet first: one unconfirmed (staging), the other two healthy (production just rotated).
    assert "0 failing 1 unconfirmed 0 due 2 healthy" in text, text
    assert re.search(
        r"Next rotation (production|staging|lab): (rotator|Cloudflare, on its own), in \d+ days", text
    )
    assert "Readiness ready" in text and "Leadership no leader election" in text
    # Most urgent first: the unconfirmed account, then the others.
    order = [m for m in re.findall(r'id="account-(\w+)"', page)]
    assert order[0] == "staging" and set(order) == {"production", "staging", "lab"}, order
    for name in ("production", "staging", "lab"):
        assert f"<h2>{name} " in page
    assert "rotate: due" in page and "skip: not_due" in page
    assert "Unconfirmed rotation unconfirmed since" in text
    # Who rotates next, and when: absolute and relative; lab waits for its Sunday window.
    assert re.search(
        r"lab .*?Next rotation rotator, in \d+ days \(Sun [\d-]+ \d\d:\d\d:\d\d UTC\), in the Sunday window",
        text,
    )
    assert re.search(
        r"production .*?Last rotation now \(\w{3} [\d-]+ [\d:]+ UTC\), by rotator; publication not checked",
        text,
    )
    assert "Window closed; opens in" in text and "Window no windows: any time" in text
    # One clock, to the second: the last check and the next one differ.
    last = re.findall(r"Last check now \((.*?)\)", text)
    following = re.findall(r"Next check in \d+ minutes \((.*?)\)", text)
    assert last and following and set(last).isdisjoint(following), text
    # A timeline per account: rotator's rotation (production), Cloudflare's own rotation ahead,
    # rotator's next one, and the lab's windows.
    svgs = re.findall(r'<svg class="timeline".*?</svg>', page, flags=re.DOTALL)
    assert len(svgs) == 3
    by_account = {re.search(r'aria-label="timeline of (\w+)"', svg).group(1): svg for svg in svgs}  # type: ignore[union-attr]
    assert '<circle class="rotator"' in by_account["production"]
    assert all('class="deadline"' in svg for svg in svgs)
    assert (
        '<rect class="window"' in by_account["lab"] and '<rect class="window"' not in by_account["production"]
    )
    assert '<polygon class="planned"' in by_account["lab"]
    assert len(desktop) > 40_000 and len(phone) > 20_000, "too plain a screenshot to show three accounts"


def test_a_browser_opens_the_page_with_the_token_as_its_password(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """With http.auth_token_file, a person types the token into the browser's own password prompt
    (HTTP Basic, any user name); Chromium given it in the URL shows the page, without it nothing."""
    chromium = _chromium()
    token = "page-token-0123456789abcdef"
    (tmp_path / "token").write_text(token + "\n")
    config = write_config(
        tmp_path / "config.yaml", simulator, http={"auth_token_file": str(tmp_path / "token")}
    )
    with daemon(config) as proc:
        proc.wait_ready()
        host = proc.url.removeprefix("http://")
        opened = _browse(chromium, tmp_path, "--dump-dom", f"http://on-call:{token}@{host}/")
        refused = _browse(chromium, tmp_path / "other", "--dump-dom", f"http://{host}/")
        wrong = httpx.get(proc.url + "/status", auth=("on-call", "not-the-token"), timeout=5)
        metrics = httpx.get(proc.url + "/metrics", auth=("", token), timeout=5)
        challenge = proc.get("/").headers.get_list("WWW-Authenticate")

    assert "account-0" in opened.stdout and "Readiness" in _text(opened.stdout), opened.stdout[:500]
    assert "account-0" not in refused.stdout
    assert wrong.status_code == 401
    assert metrics.status_code == 200 and "rotator_accounts" in metrics.text
    assert challenge[0].startswith("Basic ") and challenge[1].startswith("Bearer ")
