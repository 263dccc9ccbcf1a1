"""Rotations made elsewhere: the decision as a table, then the watch fed with check results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rotator.after.elsewhere import ElsewhereWatch, OwnRotation, rotated_elsewhere
from rotator.after.events import Event
from rotator.check.checker import CheckResult
from rotator.check.rotation import Outcome
from rotator.cloudflare.client import KeyConfig
from rotator.config.credentials import CredentialSource
from rotator.config.model import Account, RotationSettings
from rotator.core.policy import Decision, Reason
from rotator.core.records import Rotation, State
from rotator.errors import TransportError
from rotator.metrics.families import Metrics

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
ACCOUNT = Account(
    "production", "023e105f4ecef8ad9ca31a8372d0c353", RotationSettings(), CredentialSource.token_env("T")
)


@pytest.mark.parametrize(
    ("previous", "current", "own", "elsewhere"),
    [
        pytest.param(None, T0, [], False, id="first observation: nothing to compare"),
        pytest.param(T0, None, [], False, id="no last_key_rotation_at in the answer"),
        pytest.param(T0, T0, [], False, id="unchanged"),
        pytest.param(T0, T0 - DAY, [], False, id="moved back (a stale read)"),
        pytest.param(T0, T0 + DAY, [], True, id="moved forward, rotator did nothing"),
        pytest.param(T0, T0 + DAY, [OwnRotation.at(T0 + DAY)], False, id="rotator's own rotation"),
        pytest.param(
            T0,
            T0 + DAY + timedelta(milliseconds=400),
            [OwnRotation.at(T0 + DAY)],
            False,
            id="within the slack",
        ),
        pytest.param(
            T0, T0 + 2 * DAY, [OwnRotation.at(T0 + DAY)], True, id="another rotation after rotator's"
        ),
        pytest.param(T0, T0 + DAY, [OwnRotation.at(T0 + 2 * DAY)], True, id="rotator's came later than this"),
        pytest.param(
            T0,
            T0 + DAY,
            [OwnRotation(T0 + DAY - timedelta(minutes=1))],
            False,
            id="a possible rotation, unsettled",
        ),
        pytest.param(
            T0,
            T0 + DAY,
            [OwnRotation(T0 + DAY - timedelta(minutes=2), T0 + DAY - timedelta(minutes=1))],
            True,
            id="a possible rotation settled before the new time",
        ),
    ],
)
def test_rotated_elsewhere(
    previous: datetime | None, current: datetime | None, own: list[OwnRotation], elsewhere: bool
) -> None:
    assert rotated_elsewhere(previous, current, own) is elsewhere


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def key(last: datetime, observed: datetime) -> KeyConfig:
    return KeyConfig(10.0, 42.0, last, observed)


def applied(at: datetime) -> Outcome:
    entry = Rotation("r", State.DONE, at - timedelta(seconds=1), None, "host:1", settled_at=at)
    return Outcome(entry, answer=key(at, at))


def unconfirmed(at: datetime) -> Outcome:
    entry = Rotation("r", State.UNCONFIRMED, at, None, "host:1", unknown_since=at)
    return Outcome(entry, error=TransportError("lost"))


def skip() -> Decision:
    return Decision(False, Reason.NOT_DUE, "not due")


def rotate() -> Decision:
    return Decision(True, Reason.DUE, "due")


def test_the_watch_reports_cloudflares_own_rotation_once_and_not_rotators() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    sink = Sink()
    watch = ElsewhereWatch(metrics, sink)
    with capture_logs() as logs:
        assert not watch.observe(CheckResult(ACCOUNT, key(T0, T0 + DAY), skip()))
        # rotator rotates at +2 days: its own, never reported.
        done = CheckResult(ACCOUNT, key(T0, T0 + 2 * DAY), rotate(), rotation=applied(T0 + 2 * DAY))
        assert not watch.observe(done)
        assert not watch.observe(CheckResult(ACCOUNT, key(T0 + 2 * DAY, T0 + 3 * DAY), skip()))
        # Cloudflare rotates on its own at +40 days.
        assert watch.observe(CheckResult(ACCOUNT, key(T0 + 40 * DAY, T0 + 41 * DAY), skip()))
        assert not watch.observe(CheckResult(ACCOUNT, key(T0 + 40 * DAY, T0 + 42 * DAY), skip()))
        # A failed check tells nothing.
        assert not watch.observe(CheckResult(ACCOUNT))
    reported = [line for line in logs if line["event"] == "key_rotated_elsewhere"]
    assert len(reported) == 1
    assert reported[0]["previous_last_key_rotation_at"] == "2030-01-03T00:00:00Z"
    assert reported[0]["last_key_rotation_at"] == "2030-02-10T00:00:00Z"
    assert reported[0]["account"] == "production" and reported[0]["log_level"] == "warning"
    assert [e.name for e in sink.events] == ["key_rotated_elsewhere"]
    assert sink.events[0].data["last_key_rotation_at"] == "2030-02-10T00:00:00Z"
    count = registry.get_sample_value(
        "rotator_rotations_total", {"account": "production", "result": "elsewhere"}
    )
    assert count == 1


def test_an_unconfirmed_rotation_explains_the_move_the_next_read_shows() -> None:
    watch = ElsewhereWatch(Metrics(CollectorRegistry()), Sink())
    watch.observe(CheckResult(ACCOUNT, key(T0, T0 + DAY), skip()))
    lost = CheckResult(ACCOUNT, key(T0, T0 + 2 * DAY), rotate(), rotation=unconfirmed(T0 + 2 * DAY))
    assert not watch.observe(lost)
    applied = T0 + 2 * DAY + timedelta(seconds=3)
    assert not watch.observe(CheckResult(ACCOUNT, key(applied, T0 + 2 * DAY + timedelta(minutes=30)), skip()))
