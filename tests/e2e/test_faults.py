"""The fault matrix: the real ``rotator`` process against every failure the simulator can inject.

Each fault case is an account of its own, with a credential of its own (so a 429's pause stays with
its case), beside two healthy accounts: one due, one not. A persistent retryable fault costs seconds
of backoff, so the cases do not each get a process: they run side by side, in four processes at once,
each against its own simulator:

- ``run --once`` over the cases that must fail (exit code 1) and over those that must recover (0),
- ``check --json`` over all of them (read-only: only the GET faults bite),
- the daemon over all of them, for ``/metrics`` and to see it keep running.

The tests then assert one property each, parametrized by case, against those runs. What needs time
or a signal (a long retry-after, stale reads across simulated days) has a daemon of its own below.
Every byte any of these processes printed is kept in ``OUTPUTS`` and searched for the tokens last.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudflare_sim import (
    WRITE_PERMISSION,
    Fault,
    RequestRecord,
    Simulator,
    SimulatorThread,
    account_id_for,
)
from tests.support.processes import Daemon, daemon, environment, events, log_lines, rotator, write_config

MakeSimulator = Callable[..., SimulatorThread]
Op = Literal["get", "put", "rotate"]
OPS: tuple[Op, ...] = ("get", "put", "rotate")

# Every token in this file starts with this: a distinctive string no log line has a reason to hold.
SECRET = "zq7SECRETx"
MAIN_TOKEN = f"{SECRET}-main-4e1f"
READ_PERMISSION = "Access: Organizations, Identity Providers, and Groups Read"
PERMISSION: dict[Op, str] = {"get": READ_PERMISSION, "put": WRITE_PERMISSION, "rotate": WRITE_PERMISSION}
# The event that carries the failure of each operation, with its `error`.
FAILED: dict[Op, str] = {"get": "check_failed", "put": "interval_update_failed", "rotate": "rotation_failed"}
METHOD: dict[Op, tuple[str, str]] = {
    "get": ("GET", "keys"),
    "put": ("PUT", "keys"),
    "rotate": ("POST", "rotate"),
}
TIMEOUT = r"time(d)?[ -]?out"
DROPPED = r"connection|disconnect"
TROUBLE = "The key store is having trouble"
ENFORCED_INTERVAL = 30  # the PUT cases enforce this; the simulator's accounts start at 42
RETRIED = (2, 4)  # retried, and bounded: no storm
MIN_GAP_DAYS = 7

# Everything any rotator process of this module printed (logs, /metrics, check --json).
OUTPUTS: list[str] = []


def kept(text: str) -> str:
    OUTPUTS.append(text)
    return text


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str
    op: Op
    fails: bool
    fault: Mapping[str, Any] | None = None  # Fault fields, besides op and account_id
    cause: str | None = None  # what the logged error must say (a regex, case-insensitive)
    sent: tuple[int, int] = (1, 1)  # how many requests of `op` the account may see, at least and at most
    auth: Literal["write", "read", "unknown", "elsewhere"] = "write"
    exists: bool = True  # False: the account id is unknown to Cloudflare

    @property
    def due(self) -> bool:
        return self.op != "put"  # the PUT cases are not due, so only GET and PUT are sent

    @property
    def retry_after(self) -> float | None:
        return (self.fault or {}).get("retry_after")

    @property
    def rotations(self) -> int:
        """API rotations the account must see: one when due and nothing failed, else none."""
        return 1 if self.due and not self.fails else 0


def _matrix() -> list[Case]:
    cases: list[Case] = []
    for op in OPS:
        once = {"times": 1}
        status_429 = {"kind": "status", "status": 429, "retry_after": 1}
        html_502 = {"kind": "status", "status": 502, "html": True}
        # GET, missing its result, says nothing to judge by; PUT and rotate were applied all the same.
        no_result = r"result|key configuration" if op == "get" else None
        result_sent = (1, 1) if op == "rotate" else (1, 4)
        # A lost answer: GET and PUT are retried; a rotate POST may have been applied, so it is
        # never sent again: it stays unconfirmed, holding the gap until a later read settles it.
        lost, lost_once = ((1, 1), (1, 1)) if op == "rotate" else (RETRIED, (2, 2))
        cases += [
            Case(f"{op}-429", op, True, status_429, "429", RETRIED),
            Case(f"{op}-429-once", op, False, {**status_429, **once}, "429", (2, 2)),
            *(
                Case(f"{op}-{s}-html", op, True, {"kind": "status", "status": s, "html": True}, str(s), lost)
                for s in (500, 502, 503)
            ),
            Case(f"{op}-502-html-once", op, op == "rotate", {**html_502, **once}, "502", lost_once),
            Case(f"{op}-hang", op, True, {"kind": "hang"}, TIMEOUT, lost),
            Case(f"{op}-hang-once", op, op == "rotate", {"kind": "hang", **once}, TIMEOUT, lost_once),
            Case(f"{op}-drop", op, True, {"kind": "drop"}, DROPPED, lost),
            Case(f"{op}-drop-once", op, op == "rotate", {"kind": "drop", **once}, DROPPED, lost_once),
            Case(f"{op}-not-json", op, True, {"kind": "not_json"}, "json", (1, 4)),
            Case(
                f"{op}-success-false",
                op,
                True,
                {"kind": "success_false", "message": TROUBLE, "code": 10042},
                re.escape(TROUBLE),
                (1, 4),
            ),
            Case(f"{op}-missing-result", op, op == "get", {"kind": "missing_result"}, no_result, result_sent),
            Case(f"{op}-null-result", op, op == "get", {"kind": "null_result"}, no_result, result_sent),
            # 401 and 403: GET meets a token Cloudflare does not know, or one scoped to other
            # accounts; PUT and rotate meet a read-only token, or a 401 after a good GET.
            Case(
                f"{op}-401",
                op,
                True,
                None if op == "get" else {"kind": "status", "status": 401, "code": 10000},
                "invalid, expired or revoked",
                auth="unknown" if op == "get" else "write",
            ),
            Case(
                f"{op}-403",
                op,
                True,
                cause=re.escape(PERMISSION[op]),
                auth="elsewhere" if op == "get" else "read",
            ),
            Case(
                f"{op}-404",
                op,
                True,
                None if op == "get" else {"kind": "status", "status": 404, "code": 7003},
                "404",
                exists=op != "get",
            ),
        ]
    cases += [
        Case("rotate-applied-then-502", "rotate", False, {**html_502, "kind": "apply_then_status"}, "502"),
        Case("rotate-applied-then-hang", "rotate", False, {"kind": "apply_then_hang"}, TIMEOUT),
        Case("rotate-applied-then-drop", "rotate", False, {"kind": "apply_then_drop"}, DROPPED),
    ]
    return cases


CASES = _matrix()
FAILING = [c for c in CASES if c.fails]
RECOVERING = [c for c in CASES if not c.fails]
HEALTHY_DUE, HEALTHY_LATER = "healthy-due", "healthy-later"


def token_of(case: Case) -> str:
    return f"{SECRET}-{case.id}-9c2d"


def env_of(index: int) -> str:
    return f"CF_TOKEN_CASE_{index}"


# --------------------------------------------------------------------------- the runs


@dataclass
class Fleet:
    """One simulator with every case of a run as an account, and the config and env to reach it."""

    sim: Simulator
    ids: dict[str, str]  # account name (case id) -> account id
    config: Path
    env: dict[str, str]
    code: int | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""
    exposition: str = ""
    # The daemon, once every account was checked: still running, /healthz and /readyz answers.
    alive: bool = False
    probes: tuple[int, int] = (0, 0)

    def requests(self, name: str, op: Op | None = None) -> list[RequestRecord]:
        return self.sim.requests(op=op, account_id=self.ids[name])

    def api_rotations(self, name: str) -> int:
        return sum(r.source == "api" for r in self.sim.rotations(self.ids[name]))

    def account_logs(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("account") == name]


def build_fleet(stack: ExitStack, directory: Path, cases: list[Case]) -> Fleet:
    directory.mkdir()
    healthy = [HEALTHY_DUE, HEALTHY_LATER]
    ids = {name: account_id_for(i) for i, name in enumerate([*healthy, *(c.id for c in cases)])}
    tokens: dict[str, Literal["read", "write"]] = {MAIN_TOKEN: "write"}
    scoped: dict[str, list[str]] = {}
    for case in cases:
        if case.auth != "unknown":
            tokens[token_of(case)] = "read" if case.auth == "read" else "write"
        if case.auth == "elsewhere":
            scoped[token_of(case)] = [ids[HEALTHY_DUE]]
    sim = Simulator(tokens=tokens, token_accounts=scoped, hang_seconds=30)
    sim.add_account(ids[HEALTHY_DUE], days_until_next_rotation=1)
    sim.add_account(ids[HEALTHY_LATER], days_until_next_rotation=20)
    accounts: list[dict[str, Any]] = []
    env = environment(MAIN_TOKEN)
    for index, case in enumerate(cases):
        account_id = ids[case.id]
        if case.exists:
            sim.add_account(account_id, days_until_next_rotation=1 if case.due else 20)
        if case.fault is not None:
            sim.add_fault(Fault(**case.fault, op=case.op, account_id=account_id))
        account: dict[str, Any] = {"name": case.id, "account_id": account_id, "api_token_env": env_of(index)}
        if case.op == "put":
            account["key_rotation_interval_days"] = ENFORCED_INTERVAL
        accounts.append(account)
        env[env_of(index)] = token_of(case)
    # Last in the config: a rotator that worked through accounts in order would reach them late.
    accounts += [
        {"name": HEALTHY_DUE, "account_id": ids[HEALTHY_DUE]},
        {"name": HEALTHY_LATER, "account_id": ids[HEALTHY_LATER]},
    ]
    running = stack.enter_context(SimulatorThread(sim))
    config = write_config(
        directory / "config.yaml",
        running,
        accounts=accounts,
        cloudflare={"timeout": "1s", "max_concurrency": 64},
    )
    return Fleet(sim, ids, config, env)


def run_once(fleet: Fleet, *command: str) -> None:
    done = rotator(*command, "-c", str(fleet.config), env=fleet.env)
    fleet.code = done.returncode
    fleet.stdout = kept(done.stdout)
    kept(done.stderr)
    fleet.logs = log_lines(done.stderr if command[0] == "check" else done.stdout)


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def metric(exposition: str, name: str, **labels: str) -> float:
    return samples(exposition).get((name, frozenset(labels.items())), 0.0)


def run_daemon(fleet: Fleet) -> None:
    """Run the daemon until every account's first check is done; keep what it showed; SIGTERM it."""
    running = Daemon(fleet.config, fleet.env)
    try:

        def all_checked() -> str | None:
            text = running.get("/metrics").text
            checks = sum(v for (name, _), v in samples(text).items() if name == "rotator_checks_total")
            return text if checks >= len(fleet.ids) else None

        running.wait_for("a check of every account", all_checked, timeout=40)
        fleet.exposition = kept(running.get("/metrics").text)
        fleet.alive = running.process.poll() is None
        fleet.probes = (running.get("/healthz").status_code, running.get("/readyz").status_code)
        fleet.code = running.terminate()
    finally:
        running.close()
        kept("".join(running.output) + running.stderr)
    fleet.logs = running.logs


@dataclass
class Matrix:
    failing: Fleet
    recovering: Fleet
    checked: Fleet
    daemon: Fleet

    def once(self, case: Case) -> Fleet:
        return self.failing if case.fails else self.recovering


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    root = tmp_path_factory.mktemp("faults")
    with ExitStack() as stack:
        result = Matrix(
            failing=build_fleet(stack, root / "failing", FAILING),
            recovering=build_fleet(stack, root / "recovering", RECOVERING),
            checked=build_fleet(stack, root / "checked", CASES),
            daemon=build_fleet(stack, root / "daemon", CASES),
        )
        with ThreadPoolExecutor(4) as pool:
            runs = [
                pool.submit(run_once, result.failing, "run", "--once"),
                pool.submit(run_once, result.recovering, "run", "--once"),
                pool.submit(run_once, result.checked, "check", "--json"),
                pool.submit(run_daemon, result.daemon),
            ]
            for run in runs:
                run.result()
        yield result


def by_id(cases: list[Case]) -> Any:
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


# --------------------------------------------------------------------------- every case, once


def _cause_case(case: Case) -> Any:
    return pytest.param(case, id=case.id)


@pytest.mark.parametrize("case", [_cause_case(c) for c in CASES if c.cause is not None])
def test_the_failure_is_logged_with_its_cause(matrix: Matrix, case: Case) -> None:
    fleet = matrix.once(case)
    lines = fleet.account_logs(case.id)
    if case.fails:
        (failed,) = [e for e in lines if e["event"] == FAILED[case.op]]
        assert failed["level"] == "error"
        assert failed["account_id"] == fleet.ids[case.id]
        assert re.search(case.cause or "", failed["error"], re.IGNORECASE), failed["error"]
        assert "<html" not in failed["error"].lower()  # the edge's page is not the message
    else:
        noticed = [e.get("error", "") for e in lines if e["level"] in ("warning", "error")]
        assert any(re.search(case.cause or "", error, re.IGNORECASE) for error in noticed), lines


@by_id(RECOVERING)
def test_a_recovered_fault_ends_in_a_successful_check(matrix: Matrix, case: Case) -> None:
    fleet = matrix.recovering
    names = {e["event"] for e in fleet.account_logs(case.id)}

    assert not names & set(FAILED.values()), fleet.account_logs(case.id)
    assert "account_checked" in names
    if case.op == "put":
        assert fleet.sim.key_state(fleet.ids[case.id]).key_rotation_interval_days == ENFORCED_INTERVAL
        assert "interval_updated" in names
    else:
        assert "key_rotated" in names


@by_id(CASES)
def test_requests_on_the_wire_are_bounded(matrix: Matrix, case: Case) -> None:
    fleet = matrix.once(case)
    sent = fleet.requests(case.id, case.op)
    least, most = case.sent

    assert least <= len(sent) <= most, [r.outcome for r in sent]
    if case.retry_after is not None:  # retry-after is obeyed between attempts
        gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(sent)]
        assert all(gap >= case.retry_after * 0.95 for gap in gaps), gaps
    if case.op == "get" and case.fails:
        assert [r.op for r in fleet.requests(case.id)] == ["get"] * len(sent)  # nothing acted on


# Fault kinds that answer instead of doing the work; every other kind performs it first.
_NOT_APPLIED = {"status", "hang", "drop", "not_json", "success_false"}


@by_id(CASES)
def test_exactly_the_rotations_that_should_happen(matrix: Matrix, case: Case) -> None:
    fleet = matrix.once(case)
    account_id = fleet.ids[case.id]

    if case.exists:
        assert fleet.api_rotations(case.id) == case.rotations
        assert [r.source for r in fleet.sim.rotations(account_id)].count("auto") == 0
    if case.op == "rotate" and case.rotations:
        # One rotation is one POST on the wire whenever the server applied it.
        applied = [r for r in fleet.requests(case.id, "rotate") if r.fault not in _NOT_APPLIED]
        assert len(applied) == 1, [(r.outcome, r.fault) for r in fleet.requests(case.id, "rotate")]
    if case.op == "put" and case.fails:
        assert fleet.sim.key_state(account_id).key_rotation_interval_days == 42


@pytest.mark.parametrize("run", ["failing", "recovering", "daemon"])
def test_the_other_accounts_are_checked_and_rotated_on_time(matrix: Matrix, run: str) -> None:
    fleet: Fleet = getattr(matrix, run)

    assert fleet.api_rotations(HEALTHY_DUE) == 1
    assert fleet.api_rotations(HEALTHY_LATER) == 0
    (loaded,) = events(fleet.logs, "config_loaded")
    (rotated,) = events(fleet.logs, "key_rotated", account=HEALTHY_DUE)
    (skipped,) = events(fleet.logs, "account_checked", account=HEALTHY_LATER)
    assert skipped["decision"] == "skip"
    # On time: not queued behind the faults' timeouts and backoffs (the slowest take 7 s and more).
    took = datetime.fromisoformat(rotated["timestamp"]) - datetime.fromisoformat(loaded["timestamp"])
    assert took < timedelta(seconds=5)


def test_once_exits_1_when_an_account_failed_and_0_when_all_recovered(matrix: Matrix) -> None:
    assert matrix.failing.code == 1
    assert matrix.recovering.code == 0
    for fleet in (matrix.failing, matrix.recovering):
        assert events(fleet.logs, "shutdown")


@by_id(CASES)
def test_check_json_reports_each_account(matrix: Matrix, case: Case) -> None:
    """``check`` sends only GETs: a GET fault is the account's error, any other fault is unseen."""
    fleet = matrix.checked
    report = {a["account"]: a for a in json.loads(fleet.stdout)["accounts"]}
    row = report[case.id]

    assert fleet.code == 1
    assert report[HEALTHY_DUE]["ok"] and report[HEALTHY_DUE]["action"] == "rotate"
    assert {r.op for r in fleet.requests(case.id)} <= {"get"}
    if case.op == "get" and case.fails:
        assert not row["ok"]
        assert re.search(case.cause or "", row["error"], re.IGNORECASE), row["error"]
    else:
        assert row["ok"], row
        assert row["action"] == ("rotate" if case.due else "skip")


@by_id(CASES)
def test_the_daemon_counts_the_check(matrix: Matrix, case: Case) -> None:
    fleet = matrix.daemon
    text = fleet.exposition

    assert metric(text, "rotator_checks_total", account=case.id, result="error") == int(case.fails)
    assert metric(text, "rotator_checks_total", account=case.id, result="success") == int(not case.fails)
    if case.op == "rotate":
        result = "error" if case.fails else "success"
        assert metric(text, "rotator_rotations_total", account=case.id, result=result) == 1
    if case.exists:
        assert fleet.api_rotations(case.id) == case.rotations


def test_the_daemon_counts_every_answer_by_code_and_keeps_running(matrix: Matrix) -> None:
    fleet = matrix.daemon
    wire = Counter(
        (*METHOD[r.op], "error" if r.outcome in ("hung", "dropped") else str(r.outcome))
        for r in fleet.sim.requests()
        if r.op is not None
    )
    counted = {
        (labels["method"], labels["endpoint"], labels["code"]): value
        for (name, label_set), value in samples(fleet.exposition).items()
        if name == "rotator_api_requests_total" and value
        for labels in [dict(label_set)]
    }

    assert counted == dict(wire)
    assert {"429", "500", "502", "503", "401", "403", "404", "error"} <= {code for _, _, code in counted}
    # After every fault it is still running, healthy and ready; SIGTERM then stops it cleanly.
    assert fleet.alive
    assert fleet.probes == (200, 200)
    assert fleet.code == 0
    assert events(fleet.logs, "shutdown")


# --------------------------------------------------------------------------- a long retry-after


PAUSED_TOKEN, OTHER_TOKEN = f"{SECRET}-paused-77aa", f"{SECRET}-other-88bb"


@pytest.mark.parametrize(
    "op",
    [
        "get",
        "put",
        "rotate",
    ],
)
def test_a_long_retry_after_pauses_that_credential_only_and_sigterm_abandons_the_wait(
    op: Op, make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    simulator = make_simulator(0, token=PAUSED_TOKEN, tokens={OTHER_TOKEN: "write"})
    sim = simulator.sim
    limited = sim.add_account(days_until_next_rotation=20 if op == "put" else 1)
    sibling = sim.add_account(days_until_next_rotation=20)  # same token: must wait too
    other_due = sim.add_account(days_until_next_rotation=1)
    other_later = sim.add_account(days_until_next_rotation=20)
    sim.add_fault(Fault(kind="status", status=429, retry_after=120, op=op, account_id=limited))
    paused, other = {"api_token_env": "CF_PAUSED"}, {"api_token_env": "CF_OTHER"}
    accounts = [
        {"name": "limited", "account_id": limited, **paused},
        {"name": "sibling", "account_id": sibling, **paused},
        {"name": "other-due", "account_id": other_due, **other},
        {"name": "other-later", "account_id": other_later, **other},
    ]
    if op == "put":
        accounts[0]["key_rotation_interval_days"] = ENFORCED_INTERVAL
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        accounts=accounts,
        cloudflare={"timeout": "1s"},
        schedule={"check_interval": "0.3s", "jitter": "0s"},
    )
    env = environment(None, CF_PAUSED=PAUSED_TOKEN, CF_OTHER=OTHER_TOKEN)
    with daemon(config, env) as running:
        try:
            (limited_429,) = running.wait_for("the 429", lambda: sim.requests(outcome=429))
            # Requests already on the wire when the 429 came back are not the daemon's choice.
            pause = limited_429.at + timedelta(seconds=0.2)

            def later_checks() -> list[RequestRecord]:
                return [r for r in sim.requests(op="get", account_id=other_later) if r.at > pause]

            running.wait_for("the other token's checks going on", lambda: len(later_checks()) >= 4)
            on_paused = [r for r in sim.requests() if r.account_id in (limited, sibling) and r.at > pause]
            assert on_paused == [], [(r.method, r.account_id == sibling, r.at - pause) for r in on_paused]
            assert [r.source for r in sim.rotations(other_due)] == ["api"]
            exposition = kept(running.get("/metrics").text)
            assert (
                metric(
                    exposition,
                    "rotator_api_requests_total",
                    method=METHOD[op][0],
                    endpoint=METHOD[op][1],
                    code="429",
                )
                == 1
            )
            assert running.process.poll() is None
            sigterm = time.monotonic()
            code = running.terminate()
            took = time.monotonic() - sigterm
        finally:
            running.close()
            kept("".join(running.output) + running.stderr)

    assert code == 0
    assert events(running.logs, "shutdown")
    assert sim.rotations(limited) == []  # a 429 is not applied, and nothing was sent after it
    assert took < 2.0, f"took {took:.1f}s to exit after SIGTERM"
    if op == "rotate":  # the rotation outlives the cancelled check, and is recorded as abandoned
        assert events(running.logs, "rotation_failed", account="limited", error_type="Abandoned")
    # Nothing left for asyncio to report on its own ("Task exception was never retrieved").
    assert [e["event"] for e in running.logs if e.get("logger") == "asyncio"] == []


def test_an_absurd_retry_after_pauses_the_credential_for_max_retry_after_only(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """`retry-after: inf` froze the credential until a restart: now the pause ends at
    cloudflare.max_retry_after, and a warning names the server's value and the cap."""
    simulator = make_simulator(1, token=MAIN_TOKEN)
    sim = simulator.sim
    (account,) = sim.account_ids
    sim.add_fault(Fault(kind="status", status=429, retry_after=math.inf, op="get", times=1))
    config = write_config(tmp_path / "config.yaml", simulator, cloudflare={"max_retry_after": "1s"})
    with daemon(config, environment(MAIN_TOKEN)) as running:
        try:
            running.wait_for("a check after the pause", lambda: events(running.logs, "account_checked"))
            assert running.terminate() == 0
        finally:
            running.close()
            kept("".join(running.output) + running.stderr)

    (capped,) = events(running.logs, "retry_after_capped")
    assert (capped["retry_after"], capped["max_retry_after_seconds"]) == ("inf", 1)
    limited, retried = sim.requests(op="get", account_id=account)[:2]
    assert limited.outcome == 429
    assert 1 <= (retried.at - limited.at).total_seconds() < 3


# --------------------------------------------------------------------------- stale reads


def test_stale_reads_never_get_a_second_rotation_within_the_gap(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    # A simulated day is 0.4 s; the daemon checks every 0.1 s (a quarter of a day). Without a
    # state_file the guard is this process's memory, so one daemon has to live through the gap.
    simulator = make_simulator(0, token=MAIN_TOKEN, day_seconds=0.4)
    sim = simulator.sim
    # Due (10 days is the threshold here), with 4 s to spare before Cloudflare rotates on its own.
    stale = sim.add_account(days_until_next_rotation=10)
    healthy = sim.add_account(days_until_next_rotation=10)
    sim.add_fault(Fault(kind="stale", op="get", account_id=stale))
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        accounts=[{"name": "stale", "account_id": stale}, {"name": "healthy", "account_id": healthy}],
        cloudflare={"timeout": "1s"},
        schedule={"check_interval": "0.1s", "jitter": "0s"},
        rotation={"threshold_days": 10},
    )
    watched = timedelta(days=MIN_GAP_DAYS + 2)
    with daemon(config, environment(MAIN_TOKEN)) as running:
        try:
            (rotation,) = running.wait_for("the first rotation", lambda: sim.rotations(stale))
            running.wait_for("the gap to pass", lambda: sim.now() - rotation.at > watched)
            assert running.process.poll() is None
            assert running.terminate() == 0
        finally:
            running.close()
            kept("".join(running.output) + running.stderr)

    assert rotation.source == "api"
    assert sim.rotations(stale) == [rotation]
    assert [r.source for r in sim.rotations(healthy)] == ["api"]
    # All the while Cloudflare reported the key from before the rotation, due, and rotator read it.
    (rotated,) = events(running.logs, "key_rotated", account="stale")
    after = events(running.logs, "account_checked", account="stale")[1:]
    # Due-aware checks: read once more (the rotation to confirm); judged from the rotation, the key
    # is then weeks from due, and no read is needed until the threshold (or max_check_interval).
    assert len(after) >= 1
    assert {e["last_key_rotation_at"] for e in after} == {rotated["previous_last_key_rotation_at"]}
    assert {e["decision"] for e in after} == {"skip"}


@pytest.mark.parametrize(
    "stale_reads",
    [
        pytest.param(1, id="lagging"),  # a replica that lags for one read
        pytest.param(None, id="persistent"),  # every read stays stale: "applied" cannot be seen
    ],
)
def test_a_lost_rotate_answer_and_stale_reads_rotate_once_across_a_restart(
    make_simulator: MakeSimulator, tmp_path: Path, stale_reads: int | None
) -> None:
    """Once known only as "may have been applied", a rotation is never sent again on a read that
    shows no change: it holds the gap until reads settle it (settle_time), across a restart too."""
    simulator = make_simulator(3, token=MAIN_TOKEN)
    due = simulator.sim.account_ids[0]
    simulator.sim.add_fault(Fault(kind="apply_then_status", op="rotate", status=502, html=True, times=1))
    # No API rotation yet: the first GET is true; the reads after the 502 are stale.
    simulator.sim.add_fault(
        Fault(kind="stale", op="get", times=None if stale_reads is None else 1 + stale_reads)
    )
    config = write_config(
        tmp_path / "config.yaml",
        simulator,
        cloudflare={"timeout": "1s"},
        state_file=str(tmp_path / "state.json"),
    )

    for _ in range(2):  # a second process, as after a restart
        done = rotator("run", "--once", "-c", str(config), env=environment(MAIN_TOKEN))
        kept(done.stdout + done.stderr)

    assert len(simulator.sim.requests(op="rotate")) == 1
    assert len(simulator.sim.rotations(due)) == 1
    state = json.loads((tmp_path / "state.json").read_text())["accounts"][due]["rotation"]["state"]
    assert state == ("done" if stale_reads == 1 else "unconfirmed")


# --------------------------------------------------------------------------- secrets


def test_no_token_appears_in_any_output(matrix: Matrix) -> None:
    """Runs last: every log line, /metrics page and report printed by this module's processes."""
    assert len(OUTPUTS) >= 8
    for text in OUTPUTS:
        assert SECRET not in text
        assert "Bearer" not in text
