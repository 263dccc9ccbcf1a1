"""The simulator must behave like Cloudflare where the daemon can tell, and misbehave on request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudflare_sim import (
    Fault,
    RateLimit,
    SimClock,
    Simulator,
    SimulatorThread,
    account_id_for,
)

TOKEN = "test-token"
START = datetime(2030, 1, 1, tzinfo=UTC)
MakeSimulator = Callable[..., SimulatorThread]


def client(running: SimulatorThread, **headers: str) -> httpx.Client:
    """A client against the simulator, with the write token unless other headers are given."""
    return httpx.Client(base_url=running.base_url, headers=headers or {"Authorization": f"Bearer {TOKEN}"})


def keys(account_id: str) -> str:
    return f"/accounts/{account_id}/access/keys"


def rotate(account_id: str) -> str:
    return f"/accounts/{account_id}/access/keys/rotate"


@pytest.fixture
def api(simulator: SimulatorThread) -> Iterator[httpx.Client]:
    with client(simulator) as c:
        yield c


@pytest.fixture
def account(simulator: SimulatorThread) -> str:
    return simulator.sim.account_ids[0]


def assert_cloudflare_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert body["messages"] == []
    assert body["errors"][0]["code"] == code
    assert isinstance(body["errors"][0]["message"], str)
    return body


# --------------------------------------------------------------------------- the happy path


def test_get_answers_the_documented_envelope(api: httpx.Client, account: str) -> None:
    response = api.get(keys(account))

    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"success", "errors", "messages", "result"}
    assert (body["success"], body["errors"], body["messages"]) == (True, [], [])
    result = body["result"]
    assert isinstance(result["days_until_next_rotation"], float)
    assert result["key_rotation_interval_days"] == 42
    assert result["last_key_rotation_at"].endswith("Z")
    datetime.fromisoformat(result["last_key_rotation_at"])


def test_accounts_are_deterministic_and_staggered(simulator: SimulatorThread) -> None:
    sim = simulator.sim
    assert sim.account_ids == [account_id_for(i) for i in range(3)]
    days = [sim.key_state(a).days_until_next_rotation for a in sim.account_ids]
    assert days[0] == pytest.approx(2.0, abs=0.01)
    assert days == sorted(days)
    assert days[-1] < 42


def test_rotate_moves_last_rotation_to_now_and_resets_the_countdown(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    before = api.get(keys(account)).json()["result"]

    response = api.post(rotate(account))

    result = response.json()["result"]
    assert response.status_code == 200
    assert result["last_key_rotation_at"] > before["last_key_rotation_at"]
    assert result["days_until_next_rotation"] == 42.0
    assert api.get(keys(account)).json()["result"] == result
    assert [r.source for r in simulator.sim.rotations(account)] == ["api"]


def test_put_sets_the_interval(simulator: SimulatorThread, api: httpx.Client, account: str) -> None:
    response = api.put(keys(account), json={"key_rotation_interval_days": 90})

    assert response.status_code == 200
    assert response.json()["result"]["key_rotation_interval_days"] == 90
    assert simulator.sim.key_state(account).key_rotation_interval_days == 90
    assert simulator.sim.rotations(account) == []


@pytest.mark.parametrize(
    "body",
    [
        {"key_rotation_interval_days": 20},
        {"key_rotation_interval_days": 366},
        {"key_rotation_interval_days": 30.5},
        {"key_rotation_interval_days": "30"},
        {"key_rotation_interval_days": True},
        {"interval": 30},
        [30],
    ],
)
def test_put_refuses_an_interval_outside_21_to_365(api: httpx.Client, account: str, body: object) -> None:
    response = api.put(keys(account), json=body)

    error = assert_cloudflare_error(response, 400, 10001)
    assert "21" in error["errors"][0]["message"]


def test_put_refuses_a_body_that_is_not_json(api: httpx.Client, account: str) -> None:
    assert_cloudflare_error(api.put(keys(account), content=b"days=30"), 400, 10001)


def test_shortening_the_interval_below_the_key_age_rotates_at_once(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    # Account 0's key is 40 days old.
    result = api.put(keys(account), json={"key_rotation_interval_days": 21}).json()["result"]

    assert result["days_until_next_rotation"] == 21.0
    assert [r.source for r in simulator.sim.rotations(account)] == ["auto"]


# --------------------------------------------------------------------------- auth and routing


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-Auth-Email": "ops@example.com", "X-Auth-Key": "wrong"},
    ],
    ids=["none", "wrong-token", "wrong-scheme", "wrong-legacy-key"],
)
def test_missing_or_wrong_credentials_get_401(make_simulator: MakeSimulator, headers: dict[str, str]) -> None:
    running = make_simulator(legacy_keys=[("ops@example.com", "global-key")])
    account = running.sim.account_ids[0]
    with httpx.Client(base_url=running.base_url, headers=headers) as c:
        assert_cloudflare_error(c.get(keys(account)), 401, 10000)
        assert_cloudflare_error(c.post(rotate(account)), 401, 10000)
    assert running.sim.rotations(account) == []


def test_legacy_email_and_key_may_rotate(make_simulator: MakeSimulator) -> None:
    running = make_simulator(legacy_keys=[("ops@example.com", "global-key")])
    account = running.sim.account_ids[0]
    headers = {"X-Auth-Email": "ops@example.com", "X-Auth-Key": "global-key"}
    with client(running, **headers) as c:
        assert c.post(rotate(account)).status_code == 200


def test_read_only_token_reads_but_cannot_change(make_simulator: MakeSimulator) -> None:
    running = make_simulator(tokens={"reader": "read"})
    account = running.sim.account_ids[0]
    with client(running, Authorization="Bearer reader") as c:
        assert c.get(keys(account)).status_code == 200
        put = c.put(keys(account), json={"key_rotation_interval_days": 30})
        post = c.post(rotate(account))

    for response in (put, post):
        error = assert_cloudflare_error(response, 403, 9109)
        assert "Write" in error["errors"][0]["message"]
    assert running.sim.rotations(account) == []
    assert running.sim.key_state(account).key_rotation_interval_days == 42


def test_token_limited_to_some_accounts_is_refused_elsewhere() -> None:
    mine, other = account_id_for(0), account_id_for(1)
    sim = Simulator(tokens={TOKEN: "write"}, token_accounts={TOKEN: [mine]})
    sim.add_account(mine)
    sim.add_account(other)
    with SimulatorThread(sim) as running, client(running) as c:
        assert c.get(keys(mine)).status_code == 200
        assert_cloudflare_error(c.get(keys(other)), 403, 10000)


def test_unknown_account_and_unknown_route_get_404_code_7003(api: httpx.Client) -> None:
    assert_cloudflare_error(api.get(keys("0" * 32)), 404, 7003)
    assert_cloudflare_error(api.get(keys("not-an-id")), 404, 7003)
    assert_cloudflare_error(api.get("/accounts/x/access/apps"), 404, 7003)


# --------------------------------------------------------------------------- simulated time


def test_date_header_carries_the_simulated_time(make_simulator: MakeSimulator) -> None:
    running = make_simulator(start=START)
    account = running.sim.account_ids[0]
    with client(running) as c:
        first = parsedate_to_datetime(c.get(keys(account)).headers["Date"])
        running.sim.advance(10)
        later = parsedate_to_datetime(c.get(keys(account)).headers["Date"])
        refused = parsedate_to_datetime(c.get(keys("0" * 32)).headers["Date"])

    assert abs(first - START) < timedelta(seconds=5)
    assert abs(later - first - timedelta(days=10)) < timedelta(seconds=5)
    assert refused >= later


def test_clock_runs_a_day_per_day_seconds_of_real_time() -> None:
    real = [100.0]
    clock = SimClock(START, day_seconds=2.0, monotonic=lambda: real[0])

    real[0] += 3.0
    assert clock.now() == START + timedelta(days=1.5)
    clock.advance(1)
    assert clock.now() == START + timedelta(days=2.5)


def test_cloudflare_rotates_on_its_own_when_due_and_catches_up(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    sim = simulator.sim
    last = sim.key_state(account).last_key_rotation_at
    sim.advance(2.5)  # account 0 was due in two days

    result = api.get(keys(account)).json()["result"]

    due = last + timedelta(days=42)
    assert sim.rotations(account)[0].at == due
    assert datetime.fromisoformat(result["last_key_rotation_at"]) == due
    assert result["days_until_next_rotation"] == pytest.approx(41.5, abs=0.01)

    sim.advance(100)

    rotations = sim.rotations(account)
    assert [r.at for r in rotations] == [due, due + timedelta(days=42), due + timedelta(days=84)]
    assert {r.source for r in rotations} == {"auto"}


# --------------------------------------------------------------------------- faults


def test_status_fault_answers_a_cloudflare_error_without_rotating(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("status", op="rotate", status=503, retry_after=7, times=1))

    response = api.post(rotate(account))

    assert_cloudflare_error(response, 503, 1000)
    assert response.headers["retry-after"] == "7"
    assert simulator.sim.rotations(account) == []
    assert api.post(rotate(account)).status_code == 200  # times=1: spent


def test_html_status_fault_answers_an_edge_page(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("status", status=502, html=True))

    response = api.get(keys(account))

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


def test_drop_gives_the_client_a_transport_error(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("drop", times=1))

    with pytest.raises(httpx.TransportError):
        api.get(keys(account))

    assert [r.outcome for r in simulator.sim.requests()] == ["dropped"]
    assert api.get(keys(account)).status_code == 200


def test_hang_outlasts_a_short_client_timeout(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("hang", op="rotate"))

    with pytest.raises(httpx.ReadTimeout):
        api.post(rotate(account), timeout=0.2)

    assert simulator.sim.rotations(account) == []
    assert simulator.sim.requests(op="rotate")[0].outcome == "hung"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing_result", {"success": True, "errors": [], "messages": []}),
        ("null_result", {"success": True, "errors": [], "messages": [], "result": None}),
    ],
)
def test_result_shape_faults(
    simulator: SimulatorThread,
    api: httpx.Client,
    account: str,
    kind: Any,
    expected: dict[str, Any],
) -> None:
    simulator.sim.add_fault(Fault(kind))

    response = api.post(rotate(account))

    assert (response.status_code, response.json()) == (200, expected)
    assert len(simulator.sim.rotations(account)) == 1  # success: true, so it did rotate


def test_top_level_fault_answers_the_2024_shape(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("top_level"))

    body = api.get(keys(account)).json()

    assert "result" not in body
    assert body["success"] is True
    assert body["key_rotation_interval_days"] == 42
    assert body["days_until_next_rotation"] == pytest.approx(2.0, abs=0.01)


def test_not_json_and_success_false_do_not_rotate(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("not_json", times=1))
    simulator.sim.add_fault(Fault("success_false", times=1))

    not_json = api.post(rotate(account))
    success_false = api.post(rotate(account))

    assert (not_json.status_code, not_json.text) == (200, "<html>oops</html>")
    assert_cloudflare_error(success_false, 200, 1000)
    assert simulator.sim.rotations(account) == []


def test_apply_then_status_rotates_exactly_once(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    simulator.sim.add_fault(Fault("apply_then_status", op="rotate", status=502, html=True))

    response = api.post(rotate(account))

    assert response.status_code == 502
    assert [r.source for r in simulator.sim.rotations(account)] == ["api"]
    assert api.get(keys(account)).json()["result"]["days_until_next_rotation"] == 42.0


@pytest.mark.parametrize(
    ("kind", "error"), [("apply_then_hang", httpx.ReadTimeout), ("apply_then_drop", httpx.TransportError)]
)
def test_lost_answers_after_rotating(
    simulator: SimulatorThread,
    api: httpx.Client,
    account: str,
    kind: Any,
    error: type[Exception],
) -> None:
    simulator.sim.add_fault(Fault(kind, op="rotate"))

    with pytest.raises(error):
        api.post(rotate(account), timeout=0.2)

    assert len(simulator.sim.rotations(account)) == 1


def test_stale_get_still_reports_the_key_as_due_after_rotating(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    before = api.get(keys(account)).json()["result"]
    simulator.sim.add_fault(Fault("stale", op="get"))

    rotated = api.post(rotate(account)).json()["result"]
    stale = api.get(keys(account)).json()["result"]

    assert rotated["days_until_next_rotation"] == 42.0
    assert stale["last_key_rotation_at"] == before["last_key_rotation_at"]
    assert stale["days_until_next_rotation"] == pytest.approx(2.0, abs=0.01)


def test_faults_match_by_account_and_op_first_match_wins(
    simulator: SimulatorThread, api: httpx.Client
) -> None:
    first, second = simulator.sim.account_ids[:2]
    simulator.sim.add_fault(Fault("status", op="get", account_id=first, status=500))
    simulator.sim.add_fault(Fault("status", status=503))

    assert api.get(keys(first)).status_code == 500
    assert api.get(keys(second)).status_code == 503
    assert api.post(rotate(first)).status_code == 503

    simulator.sim.clear_faults()
    assert api.get(keys(first)).status_code == 200


def test_fault_ratio_fires_on_a_reproducible_share(make_simulator: MakeSimulator) -> None:
    def statuses(seed: int) -> list[int]:
        running = make_simulator(seed=seed)
        running.sim.add_fault(Fault("status", op="get", ratio=0.5, status=503))
        with client(running) as c:
            return [c.get(keys(running.sim.account_ids[0])).status_code for _ in range(30)]

    first = statuses(seed=7)
    assert 5 < first.count(503) < 25
    assert statuses(seed=7) == first


def test_fault_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kind"):
        Fault("explode")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- load and limits


def test_rate_limit_answers_429_with_retry_after(make_simulator: MakeSimulator) -> None:
    running = make_simulator(rate_limit=RateLimit(2, 60))
    account = running.sim.account_ids[0]
    with client(running) as c:
        statuses = [c.get(keys(account)).status_code for _ in range(2)]
        limited = c.get(keys(account))

    assert statuses == [200, 200]
    assert_cloudflare_error(limited, 429, 971)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert running.sim.snapshot()["requests"]["rate_limited"] == 1


def test_latency_is_added_to_each_request(make_simulator: MakeSimulator) -> None:
    running = make_simulator(latency=0.1)
    with client(running) as c:
        started = time.monotonic()
        c.get(keys(running.sim.account_ids[0]))
    assert time.monotonic() - started >= 0.1


def test_request_log_counts_rotate_posts_on_the_wire(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    api.get(keys(account))
    api.post(rotate(account))
    api.post(rotate(account))

    posts = simulator.sim.requests(op="rotate", account_id=account)
    assert [(r.method, r.outcome) for r in posts] == [("POST", 200), ("POST", 200)]
    by_op = simulator.sim.snapshot()["requests"]["by_op"]
    assert by_op == {"get": {"200": 1}, "rotate": {"200": 2}}


# --------------------------------------------------------------------------- admin API


def test_admin_api_drives_the_simulator_over_http(
    simulator: SimulatorThread, api: httpx.Client, account: str
) -> None:
    with httpx.Client(base_url=simulator.admin_url) as admin:
        fault = {"kind": "status", "op": "rotate", "status": 500, "times": 1}
        assert admin.post("/faults", json=fault).status_code == 201
        assert admin.post("/faults", json={"kind": "nope"}).status_code == 400
        assert api.post(rotate(account)).status_code == 500

        admin.post("/faults", json={"kind": "drop"})
        assert admin.delete("/faults").status_code == 200
        assert api.get(keys(account)).status_code == 200

        assert admin.post("/advance", json={"days": 3}).status_code == 200
        added = admin.post("/accounts", json={"interval_days": 30}).json()
        assert added["key_rotation_interval_days"] == 30
        assert api.get(keys(added["account_id"])).status_code == 200

        state = admin.get("/state").json()
        logged = admin.get("/requests", params={"op": "rotate"}).json()

    accounts = {a["account_id"]: a for a in state["accounts"]}
    assert accounts[account]["history"][0]["source"] == "auto"  # due after 2 of the 3 days
    assert added["account_id"] in accounts
    assert state["requests"]["by_op"]["rotate"] == {"500": 1}
    assert [(r["method"], r["outcome"], r["fault"]) for r in logged] == [("POST", 500, "status")]


# --------------------------------------------------------------------------- running it


async def test_start_and_stop_on_the_callers_event_loop() -> None:
    sim = Simulator.with_accounts(1, token=TOKEN)
    base_url = await sim.start("127.0.0.1", 0)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers) as c:
            sim.add_fault(Fault("hang", times=1))
            with pytest.raises(httpx.ReadTimeout):
                await c.get(keys(sim.account_ids[0]), timeout=0.1)
            response = await c.get(keys(sim.account_ids[0]))
        assert response.status_code == 200
    finally:
        started = time.monotonic()
        await sim.stop()
    assert time.monotonic() - started < 1.0  # the hung handler was released


def test_cli_prints_one_json_line_then_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "cloudflare_sim", "--listen", "127.0.0.1:0"]
    command += ["--accounts", "2", "--token", "T", "--day-seconds", "2", "--rate-limit", "300/10"]
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        account = line["accounts"][0]["account_id"]
        with httpx.Client(base_url=line["base_url"], headers={"Authorization": "Bearer T"}) as c:
            first = c.get(keys(account))
            state = httpx.get(line["admin_url"] + "/state").json()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0

    assert line["base_url"].endswith("/client/v4")
    assert [a["account_id"] for a in line["accounts"]] == [account_id_for(i) for i in range(2)]
    assert first.status_code == 200
    assert state["day_seconds"] == 2.0
