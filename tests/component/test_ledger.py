"""The rotation ledger: how reads settle a rotation, and the state file that makes it durable."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rotator.core.keys import KeyConfig
from rotator.core.records import AccountRecord, Rotation, State, settle
from rotator.errors import StateFileError
from rotator.ledger.ledger import Ledger
from rotator.metrics.families import Metrics

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BEFORE = NOW - timedelta(days=40)  # the rotation the POST rotates away from
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER = "1" * 32
HOUR = timedelta(hours=1)


def read(last: datetime | None, at: datetime) -> KeyConfig:
    return KeyConfig(None, 42.0, last, observed_at=at)


def unconfirmed(unknown_since: datetime | None = None) -> AccountRecord:
    rotation = Rotation(
        "r1", State.UNCONFIRMED, NOW, BEFORE, owner="host:1", unknown_since=unknown_since, why="502"
    )
    return AccountRecord(observed=BEFORE, rotation=rotation)


def state_of(record: AccountRecord) -> State | None:
    return record.rotation.state if record.rotation else None


# --------------------------------------------------------------------------- settling by reads


def test_the_settle_clock_starts_at_the_first_read_after_the_answer_was_lost() -> None:
    # The read before the POST is long past (a 15-minute 429 pause, say); that is not the moment
    # the outcome became unknown. The first read after it is.
    first = settle(unconfirmed(), read(BEFORE, NOW + timedelta(minutes=15)), HOUR)
    assert first.rotation is not None
    assert first.rotation.unknown_since == NOW + timedelta(minutes=15)
    assert state_of(first) is State.UNCONFIRMED
    # 65 minutes after the POST but only 50 after the first read: still open.
    later = settle(first, read(BEFORE, NOW + timedelta(minutes=65)), HOUR)
    assert state_of(later) is State.UNCONFIRMED
    settled = settle(later, read(BEFORE, NOW + timedelta(minutes=75)), HOUR)
    assert state_of(settled) is State.NOT_APPLIED
    assert settled.rotation is not None
    assert "unchanged for 1h00m" in settled.rotation.why


def test_a_read_showing_the_rotation_settles_it_done_and_anchors_the_gap() -> None:
    applied = NOW + timedelta(seconds=2)
    record = settle(unconfirmed(NOW + timedelta(seconds=3)), read(applied, NOW + timedelta(minutes=1)), HOUR)
    assert state_of(record) is State.DONE
    assert record.last_done == applied
    assert record.anchor == applied


def test_a_rotation_cloudflare_shows_from_before_the_intent_is_judged_at_the_intent() -> None:
    # Someone rotated just before our POST; ours may have been applied too: the later time wins.
    earlier = NOW - timedelta(minutes=3)
    record = settle(unconfirmed(NOW + timedelta(seconds=3)), read(earlier, NOW + timedelta(minutes=1)), HOUR)
    assert state_of(record) is State.DONE
    assert record.last_done == NOW


def test_a_later_rotation_it_cannot_explain_settles_it_not_applied() -> None:
    elsewhere = NOW + timedelta(hours=5)
    record = settle(unconfirmed(NOW + timedelta(seconds=3)), read(elsewhere, NOW + timedelta(hours=6)), HOUR)
    assert state_of(record) is State.NOT_APPLIED
    assert record.observed == elsewhere  # Cloudflare's own record now holds the gap


@pytest.mark.parametrize(
    ("shown", "after", "state"),
    [
        # Every field is optional: reads that never show last_key_rotation_at settle by the
        # settle_time rule, judged as reads showing no rotation (they were stuck open for ever).
        ("interval only", timedelta(minutes=59), State.UNCONFIRMED),
        ("interval only", HOUR, State.NOT_APPLIED),
        ("days only", timedelta(minutes=59), State.UNCONFIRMED),
        ("days only", HOUR, State.NOT_APPLIED),
        ("days only", timedelta(days=3), State.NOT_APPLIED),
        ("nothing", HOUR, State.NOT_APPLIED),
    ],
)
def test_reads_without_a_last_rotation_settle_by_the_settle_time_rule(
    shown: str, after: timedelta, state: State
) -> None:
    fields = {
        "interval only": (None, 42.0),
        "days only": (40.0, None),
        "nothing": (None, None),
    }[shown]
    first = settle(unconfirmed(), KeyConfig(*fields, None, observed_at=NOW + timedelta(minutes=1)), HOUR)
    assert state_of(first) is State.UNCONFIRMED
    later = settle(first, KeyConfig(*fields, None, observed_at=NOW + timedelta(minutes=1) + after), HOUR)
    assert state_of(later) is state
    if state is State.NOT_APPLIED:
        assert later.rotation is not None
        assert "last_key_rotation_at not shown by any read for" in later.rotation.why


def test_a_read_that_goes_backwards_never_moves_the_record_back() -> None:
    seen = AccountRecord(last_done=NOW, observed=NOW)
    record = settle(seen, read(BEFORE, NOW + HOUR), HOUR)
    assert (record.last_done, record.observed, record.anchor) == (NOW, NOW, NOW)


@pytest.mark.parametrize("state", [State.INTENT, State.SENT, State.DONE, State.NOT_APPLIED])
def test_reads_settle_only_unconfirmed_rotations(state: State) -> None:
    rotation = Rotation("r1", state, NOW, BEFORE, owner="host:1")
    record = settle(AccountRecord(rotation=rotation), read(BEFORE, NOW + timedelta(days=2)), HOUR)
    assert record.rotation == rotation


# --------------------------------------------------------------------------- the state file


def test_an_intent_is_on_disk_before_begin_returns(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    ledger = Ledger(state)
    rotation = ledger.begin(ACCOUNT, at=NOW, rotates_from=BEFORE)

    on_disk = Ledger(state).record(ACCOUNT)  # what a process started now would read
    assert on_disk.rotation == rotation
    assert on_disk.open is not None
    assert [p.name for p in tmp_path.iterdir()] == ["state.json", "state.json.lock"]


def test_every_transition_is_written(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    ledger = Ledger(state)
    rotation = ledger.begin(ACCOUNT, at=NOW, rotates_from=BEFORE)
    rotation = ledger.sent(ACCOUNT, rotation)
    assert Ledger(state).record(ACCOUNT).rotation == rotation
    ledger.done(ACCOUNT, rotation, at=NOW + timedelta(seconds=1), why="200")
    fresh = Ledger(state).record(ACCOUNT)
    assert state_of(fresh) is State.DONE
    assert fresh.last_done == NOW + timedelta(seconds=1)


def test_a_failed_write_raises_naming_the_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = tmp_path / "volume"
    directory.mkdir()
    ledger = Ledger(directory / "state.json")
    (directory / "state.json.lock").unlink(missing_ok=True)
    directory.rmdir()  # the volume went away under a running process
    with pytest.raises(StateFileError, match=r"volume/state\.json\.lock: cannot open the lock file"):
        ledger.begin(ACCOUNT, at=NOW, rotates_from=BEFORE)
    assert list(tmp_path.iterdir()) == []


def test_every_failed_write_is_logged_and_counted(tmp_path: Path) -> None:
    """state_save_failed has a metric: the ledger calls back at each one, the daemon counts."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert registry.get_sample_value("rotator_state_save_failures_total") == 0
    directory = tmp_path / "volume"
    directory.mkdir()
    ledger = Ledger(directory / "state.json", on_save_failed=metrics.state_save_failures.inc)
    rotation = ledger.begin(ACCOUNT, at=NOW, rotates_from=BEFORE)
    (directory / "state.json").unlink()
    (directory / "state.json.lock").unlink(missing_ok=True)
    directory.rmdir()  # the volume went away under a running process
    with capture_logs() as logs:
        ledger.sent(ACCOUNT, rotation)  # kept in memory
        with pytest.raises(StateFileError):
            ledger.begin(OTHER, at=NOW, rotates_from=BEFORE)  # nothing may be sent
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["state_save_failed"] * 2
    assert registry.get_sample_value("rotator_state_save_failures_total") == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("", "the state file is empty", id="empty"),
        pytest.param("{not json", "not a rotator state file", id="torn"),
        pytest.param('{"version": 99, "accounts": {}}', "unknown version 99", id="future"),
        pytest.param("[]", "not a JSON object", id="list"),
    ],
)
def test_an_unusable_state_file_is_refused_not_forgotten(tmp_path: Path, content: str, message: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    with pytest.raises(StateFileError, match=message) as refused:
        Ledger(state)
    assert str(state) in str(refused.value)
    assert "move it aside" in str(refused.value)
    assert state.read_text() == content  # kept for a person to look at


def test_the_cli_refuses_an_empty_state_file_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(
        "cloudflare: {base_url: 'http://127.0.0.1:9'}\n"
        f"state_file: {state}\n"
        f"accounts: [{{name: a, account_id: '{ACCOUNT}'}}]\n"
    )
    env = {**os.environ, "CLOUDFLARE_API_TOKEN": "t0k3n-for-test"}
    done = subprocess.run(
        [sys.executable, "-m", "rotator", "run", "--once", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"rotator: error: {state}: the state file is empty; rotator never leaves it so. Restore it "
        "from a backup, or move it aside to start without the record of past rotations"
    ]


def test_a_version_1_file_is_read(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    other = "f" * 32
    state.write_text(
        json.dumps({"confirmed": {ACCOUNT: NOW.isoformat()}, "possible": {other: NOW.isoformat()}})
    )
    ledger = Ledger(state)
    assert ledger.record(ACCOUNT).last_done == NOW
    assert state_of(ledger.record(other)) is State.UNCONFIRMED


def test_two_ledgers_on_one_file_merge_instead_of_overwriting(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first, second = Ledger(state), Ledger(state)
    other = "f" * 32
    a = first.begin(ACCOUNT, at=NOW, rotates_from=BEFORE)
    second.begin(other, at=NOW, rotates_from=BEFORE)  # read before `first` wrote: merged, not lost
    first.done(ACCOUNT, a, at=NOW, why="200")
    fresh = Ledger(state)
    assert state_of(fresh.record(ACCOUNT)) is State.DONE
    assert state_of(fresh.record(other)) is State.INTENT


def test_an_intent_left_by_a_dead_process_is_taken_as_unconfirmed(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    script = textwrap.dedent(
        f"""
        from datetime import datetime
        from pathlib import Path
        from rotator.ledger.ledger import Ledger
        Ledger(Path({str(state)!r})).begin({ACCOUNT!r}, at=datetime.fromisoformat({NOW.isoformat()!r}),
                                            rotates_from=datetime.fromisoformat({BEFORE.isoformat()!r}))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

    ledger = Ledger(state)
    assert state_of(ledger.record(ACCOUNT)) is State.INTENT
    record = ledger.observe(ACCOUNT, read(BEFORE, NOW + timedelta(minutes=1)))
    assert state_of(record) is State.UNCONFIRMED
    assert record.rotation is not None
    assert "stopped" in record.rotation.why
    assert state_of(Ledger(state).record(ACCOUNT)) is State.UNCONFIRMED


async def test_an_account_held_by_another_process_is_not_decided_here(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from rotator.ledger.ledger import Ledger

        async def hold():
            async with Ledger(Path({str(state)!r})).deciding({ACCOUNT!r}):
                print("held", flush=True)
                sys.stdin.readline()

        asyncio.run(hold())
        """
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert (await holder.stdout.readline()).strip() == b"held"
        ledger = Ledger(state)
        with pytest.raises(TimeoutError):  # held over there: this process waits
            await asyncio.wait_for(_enter(ledger, ACCOUNT), timeout=0.5)
        await asyncio.wait_for(_enter(ledger, "f" * 32), timeout=5)  # another account is free
    finally:
        holder.stdin.write(b"\n")
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), timeout=30)
    await asyncio.wait_for(_enter(ledger, ACCOUNT), timeout=5)  # released when the holder is done


async def _enter(ledger: Ledger, account_id: str) -> None:
    async with ledger.deciding(account_id):
        pass
