"""The real ``rotator run`` with the publication check and a webhook, against the simulator.

The simulator serves each team's certs on loopback (``publication.certs_url`` points there) and the
organization read names each account's team domain. A webhook receiver on loopback collects what
the daemon sends. Certs faults make publication lag, stick, fail or serve garbage: checks and
rotations go on, and the events and metrics the alerts use say what happened.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook as StandardWebhook

from cloudflare_sim import CertsFault, SimulatorThread
from tests.support.processes import daemon, environment, events, log_lines, rotator, write_config
from tests.support.webhooks import Hooks

MakeSimulator = Callable[..., SimulatorThread]
SECRET = "hook-secret-5d1e-not-real"


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.close()


def config(
    tmp_path: Path, sim: SimulatorThread, hooks: Hooks | None = None, *, deadline: str = "5m", **sections: Any
) -> Path:
    notify = {"webhooks": [{"name": "ops", "url": hooks.url, "secret_env": "HOOK_SECRET"}]} if hooks else {}
    return write_config(
        tmp_path / "config.yaml",
        sim,
        publication={"enabled": True, "certs_url": sim.sim.certs_url_template, "deadline": deadline},
        notify=notify,
        **sections,
    )


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_rotation_is_published_and_notified(
    simulator: SimulatorThread, hooks: Hooks, tmp_path: Path
) -> None:
    due = simulator.sim.account_ids[0]
    with daemon(config(tmp_path, simulator, hooks), environment(HOOK_SECRET=SECRET)) as running:
        published = running.wait_for(
            "key_published", lambda: events(running.logs, "key_published", account="account-0")
        )[0]
        assert published["kid"] == simulator.sim.current_kid(due)
        assert published["late"] is False and published["publication_seconds"] < 300
        running.wait_for("both notifications", lambda: len(hooks.received) >= 2)
        text = running.wait_for(
            "every account's key count",
            lambda: (
                (t := running.get("/metrics").text)
                and "rotator_jwks_keys" in t
                and t.count("rotator_jwks_keys{") == 3
                and t
            ),
        )
        assert running.terminate() == 0

    for i in range(3):
        assert metric(text, "rotator_jwks_keys", account=f"account-{i}") == 2
    assert metric(text, "rotator_key_publication_seconds_count") == 1
    assert metric(text, "rotator_key_publication_late", account="account-0") == 0
    first_seen = metric(text, "rotator_jwks_current_kid_first_seen_timestamp_seconds", account="account-0")
    assert first_seen is not None and first_seen >= simulator.sim.rotations(due)[0].at.timestamp() - 1
    # The team domain is read once per account, from the organization; the certs cost no API budget.
    assert len(simulator.sim.requests(op="organizations")) == 3
    assert metric(text, "rotator_api_requests_total", method="GET", endpoint="organizations", code="200") == 3
    assert not events(running.logs, "key_rotated_elsewhere")

    documents = hooks.documents()
    assert [d["type"] for d in documents][:2] == ["com.rotator.key_rotated", "com.rotator.key_published"]
    assert {d["subject"] for d in documents} == {"account-0"}
    assert documents[1]["data"]["kid"] == published["kid"]
    receiver = StandardWebhook(SECRET.encode())  # a plain secret: its UTF-8 bytes are the key
    for headers, body in hooks.received:
        assert receiver.verify(body, headers)["id"] == headers["webhook-id"]
        assert SECRET not in body.decode() and "test-token" not in body.decode()
    assert len({headers["webhook-id"] for headers, _ in hooks.received}) == len(hooks.received)


def test_late_stuck_down_and_garbage_certs_do_not_stop_checks_or_rotations(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    stuck, down, garbage = simulator.sim.account_ids
    simulator.sim.add_certs_fault(CertsFault("stuck", account_id=stuck))
    simulator.sim.add_certs_fault(CertsFault("down", account_id=down))
    simulator.sim.add_certs_fault(CertsFault("garbage", account_id=garbage))
    path = config(tmp_path, simulator, deadline="2s", schedule={"check_interval": "1s"})

    with daemon(path) as running:
        late = running.wait_for(
            "key_publication_late", lambda: events(running.logs, "key_publication_late", account="account-0")
        )[0]
        assert "no new key is served" in late["reason"] and late["level"] == "error"
        assert metric(running.get("/metrics").text, "rotator_key_publication_late", account="account-0") == 1
        assert simulator.sim.rotations(stuck)[0].source == "api"  # the rotation itself happened
        # Checks go on for every account, the broken certs are said and counted.
        running.wait_for(
            "three more checks of each account",
            lambda: all(
                len(events(running.logs, "account_checked", account=f"account-{i}")) >= 3 for i in range(3)
            ),
        )
        failed = {e["account"] for e in events(running.logs, "certs_read_failed")}
        assert failed == {"account-1", "account-2"}
        text = running.get("/metrics").text
        assert metric(text, "rotator_jwks_reads_total", account="account-1", result="error") >= 2  # type: ignore[operator]
        assert metric(text, "rotator_jwks_keys", account="account-1") is None  # never read

        # The endpoint recovers: the next check's read finds the key, late.
        simulator.sim.clear_certs_faults()
        published = running.wait_for(
            "key_published after all", lambda: events(running.logs, "key_published", account="account-0")
        )[0]
        assert published["late"] is True and published["kid"] == simulator.sim.current_kid(stuck)
        running.wait_for(
            "the late gauge back to 0",
            lambda: (
                metric(running.get("/metrics").text, "rotator_key_publication_late", account="account-0") == 0
            ),
        )
        assert running.terminate() == 0
    assert not events(running.logs, "check_failed")


def test_cloudflares_own_rotation_is_noticed(make_simulator: MakeSimulator, tmp_path: Path) -> None:
    simulator = make_simulator(3)
    path = write_config(
        tmp_path / "config.yaml",
        simulator,
        accounts=[
            {"name": f"account-{i}", "account_id": a, "dry_run": i == 1}
            for i, a in enumerate(simulator.sim.account_ids)
        ],
        schedule={"check_interval": "1s"},
    )
    with daemon(path) as running:
        running.wait_for(
            "account-0 rotated", lambda: events(running.logs, "key_rotated", account="account-0")
        )
        running.wait_for("two checks of each", lambda: len(events(running.logs, "account_checked")) >= 6)
        assert not events(running.logs, "key_rotated_elsewhere")  # rotator's own rotation is not one
        simulator.sim.advance(30)  # account-1 (dry run) and account-2 fall due; Cloudflare rotates both
        elsewhere = running.wait_for(
            "key_rotated_elsewhere",
            lambda: (found := events(running.logs, "key_rotated_elsewhere")) and len(found) >= 2 and found,
        )
        text = running.get("/metrics").text
        assert running.terminate() == 0
    assert {e["account"] for e in elsewhere} == {"account-1", "account-2"}
    for event in elsewhere:
        assert event["last_key_rotation_at"] > event["previous_last_key_rotation_at"]
    assert metric(text, "rotator_rotations_total", account="account-1", result="elsewhere") == 1
    assert metric(text, "rotator_rotations_total", account="account-0", result="elsewhere") == 0


def test_a_certs_endpoint_that_never_answers_holds_no_check_up(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """The first certs read of each account (the baseline) waits a moment at most: a certs endpoint
    that accepts connections and never answers (or does not resolve) once stalled every check."""
    sim = make_simulator(40)  # account 0 is due; 40 baseline reads against 4 certs reads in flight
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts, never answers
    try:
        port = silent.getsockname()[1]
        path = write_config(
            tmp_path / "config.yaml",
            sim,
            publication={"enabled": True, "certs_url": f"http://127.0.0.1:{port}/{{team_domain}}/certs"},
        )
        with daemon(path) as running:
            started = time.monotonic()
            # account_checked is logged when the check decides, before its rotation is sent: wait for both.
            running.wait_for(
                "every account checked and account-0 rotated",
                lambda: (
                    len(events(running.logs, "account_checked")) >= 40
                    and events(running.logs, "key_rotated", account="account-0")
                ),
            )
            took = time.monotonic() - started
            assert running.terminate() == 0
    finally:
        silent.close()
    # 40 baselines at 4 in flight and a 5 s timeout would take 50 s and more; each check waits 2 s.
    assert took < 15, f"the first pass took {took:.1f} s"


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (CertsFault("nested"), "nested deeper than"),
        (CertsFault("gzip_bomb"), "larger than"),
        (CertsFault("trickle", seconds=0.5), "no answer within the timeout (1s)"),
    ],
    ids=["nested", "gzip_bomb", "trickle"],
)
def test_a_hostile_certs_answer_is_a_failed_read_and_the_late_alert_still_fires(
    simulator: SimulatorThread, tmp_path: Path, fault: CertsFault, said: str
) -> None:
    """A certs answer nested 100,000 deep (Python's parser raises RecursionError), a gzip bomb
    of 1 GiB (1 MB sent) or one trickling a byte every half second (httpx's per-read timeout never
    fires): each is one failed read, bounded in time and memory, and the watcher goes on to its
    verdict: key_publication_late, the alert's event, within the deadline and one read."""
    simulator.sim.add_certs_fault(fault)
    path = write_config(
        tmp_path / "config.yaml",
        simulator,
        publication={
            "enabled": True,
            "certs_url": simulator.sim.certs_url_template,
            "deadline": "3s",
            "timeout": "1s",
        },
        schedule={"check_interval": "1s"},
    )
    with daemon(path) as running:
        late = running.wait_for(
            "key_publication_late",
            lambda: events(running.logs, "key_publication_late", account="account-0"),
            timeout=45,
        )[0]
        assert late["reason"] == "the certs endpoint could not be read"
        failed = events(running.logs, "certs_read_failed", account="account-0")
        # Each failed read is the fault's, or (a loaded machine serving a megabyte) the timeout's.
        assert any(said in e["error"] for e in failed), failed
        assert all(said in e["error"] or "no answer within the timeout" in e["error"] for e in failed)
        assert metric(running.get("/metrics").text, "rotator_key_publication_late", account="account-0") == 1
        # Checks go on; the body never grew the process by anything like the bomb's gigabyte.
        running.wait_for(
            "another check of each account",
            lambda: all(
                len(events(running.logs, "account_checked", account=f"account-{i}")) >= 2 for i in range(3)
            ),
            timeout=45,
        )
        assert _peak_rss_mb(running.process.pid) < 300
        assert running.terminate() == 0
    assert not events(running.logs, "check_failed")


def test_verification_is_never_starved_by_routine_reads_and_a_read_too_late_is_late(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """A certs budget far too small for the checks (5 reads a minute, 8 accounts checked every
    second) and 8 rotations at once: every rotation gets its verdict by its deadline (published,
    or late: the alert's gauge at 1), and the routine reads the budget cut are counted and said.
    Before, every read queued for the budget, first come first served: the rotations' reads
    waited behind the checks' for a minute, and no verdict came (nor any alert)."""
    sim = make_simulator(8, interval_days=21)  # all 8 within 20 days of Cloudflare's rotation
    path = config(
        tmp_path,
        sim,
        deadline="3s",
        schedule={"check_interval": "1s"},
        rotation={"threshold_days": 20, "min_days_between_rotations": 1},
    )
    text = path.read_text(encoding="utf-8").replace(
        "publication:\n", "publication:\n  rate_limit: {requests: 5, per: 1m}\n"
    )
    path.write_text(text, encoding="utf-8")
    names = [f"account-{i}" for i in range(8)]
    with daemon(path) as running:
        running.wait_for(
            "every account rotated",
            lambda: all(events(running.logs, "key_rotated", account=n) for n in names),
        )
        verdicts = running.wait_for(
            "a verdict on every rotation",
            lambda: (
                (
                    found := {
                        e["account"]: e["event"]
                        for name in ("key_published", "key_publication_late")
                        for e in events(running.logs, name)
                    }
                )
                and len(found) == 8
                and found
            ),
            timeout=30,
        )
        metrics_text = running.get("/metrics").text
        assert running.terminate() == 0
    late = [n for n, verdict in verdicts.items() if verdict == "key_publication_late"]
    assert late, verdicts  # 5 reads a minute cannot verify 8 rotations within 3 s
    for name in late:
        (event,) = events(running.logs, "key_publication_late", account=name)
        assert "publication.rate_limit" in event["reason"]
        assert metric(metrics_text, "rotator_key_publication_late", account=name) == 1
    skipped = metric(metrics_text, "rotator_publication_reads_skipped_total")
    assert skipped is not None and skipped >= 1
    (said,) = events(running.logs, "certs_reads_skipped")[:1]
    assert said["level"] == "warning" and "publication.rate_limit" in said["message"]
    # The warning at load said it would come to this.
    assert any("publication.rate_limit" in e["message"] for e in events(running.logs, "config_warning"))
    # Never more than the budget: 5 reads in the test's first minute.
    assert len(sim.sim.requests(op="certs")) <= 5


# --- rotator rotate: the daemon's follow-up (issue 18, item 2) -----------------------------------


def _types(hooks: Hooks) -> list[str]:
    return [d["type"].removeprefix("com.rotator.") for d in hooks.documents()]


def test_rotate_by_hand_is_notified_and_verified_as_the_daemons_rotations_are(
    simulator: SimulatorThread, hooks: Hooks, tmp_path: Path
) -> None:
    account_id = simulator.sim.account_ids[1]  # not due: rotated only because a person asks
    path = config(tmp_path, simulator, hooks)
    done = rotator("rotate", "account-1", "-c", str(path), env=environment(HOOK_SECRET=SECRET))

    assert done.returncode == 0, done.stdout + done.stderr
    rotated, verified = done.stdout.splitlines()
    assert rotated.startswith("account-1: rotated (last_key_rotation_at is now ")
    assert verified == "account-1: the new key is served at the team's certs endpoint"
    logs = log_lines(done.stderr)
    (published,) = events(logs, "key_published", account="account-1")
    assert published["kid"] == simulator.sim.current_kid(account_id)
    # The webhook heard of it, as of a rotation of the daemon's, signed with its secret.
    assert _types(hooks) == ["key_rotated", "key_published"]
    assert {d["subject"] for d in hooks.documents()} == {"account-1"}
    assert hooks.documents()[0]["data"]["reason"] == "requested"
    receiver = StandardWebhook(SECRET.encode())  # a plain secret: its UTF-8 bytes are the key
    for headers, body in hooks.received:
        assert receiver.verify(body, headers)["id"] == headers["webhook-id"]


def test_rotate_says_a_key_not_served_by_the_deadline_is_late(
    simulator: SimulatorThread, hooks: Hooks, tmp_path: Path
) -> None:
    account_id = simulator.sim.account_ids[1]
    simulator.sim.add_certs_fault(CertsFault("stuck", account_id=account_id))
    path = config(tmp_path, simulator, hooks, deadline="2s")
    started = time.monotonic()
    done = rotator("rotate", "account-1", "-c", str(path), env=environment(HOOK_SECRET=SECRET))
    took = time.monotonic() - started

    assert done.returncode == 0, done.stdout + done.stderr  # rotated: the key itself changed
    assert done.stdout.splitlines()[1] == (
        "account-1: the new key is not served at the team's certs endpoint within "
        "publication.deadline (2s): see key_publication_late"
    )
    (late,) = events(log_lines(done.stderr), "key_publication_late", account="account-1")
    assert late["level"] == "error" and "no new key is served" in late["reason"]
    assert _types(hooks) == ["key_rotated", "key_publication_late"]
    assert len(simulator.sim.rotations(account_id)) == 1
    assert took < 30, f"rotate took {took:.1f} s with a 2 s deadline"


def test_rotate_no_wait_notifies_and_does_not_wait_for_publication(
    simulator: SimulatorThread, hooks: Hooks, tmp_path: Path
) -> None:
    account_id = simulator.sim.account_ids[1]
    simulator.sim.add_certs_fault(CertsFault("stuck", account_id=account_id))
    path = config(tmp_path, simulator, hooks, deadline="1h")  # waiting would take an hour
    done = rotator(
        "rotate", "account-1", "--no-wait", "-c", str(path), env=environment(HOOK_SECRET=SECRET), timeout=60
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[1] == "account-1: publication not verified (--no-wait)"
    assert _types(hooks) == ["key_rotated"]


def test_rotate_with_a_webhook_secret_unset_is_refused_before_anything_is_sent(
    simulator: SimulatorThread, hooks: Hooks, tmp_path: Path
) -> None:
    path = config(tmp_path, simulator, hooks)
    done = rotator("rotate", "account-1", "--force", "--yes", "-c", str(path), env=environment())

    assert done.returncode == 2
    assert done.stderr == (
        f"rotator: error: {path}: notify webhook ops: its signing secret cannot be read: environment "
        "variable HOOK_SECRET is not set or is empty\n"
    )
    assert simulator.sim.requests(op="rotate") == [] and hooks.received == []
