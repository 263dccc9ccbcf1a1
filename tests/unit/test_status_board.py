"""The status board's own judgement: one clock, the rotations and verdicts it hears, the words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from rotator.after.events import Event
from rotator.check.checker import CheckResult
from rotator.config.model import parse_config
from rotator.web.status import StatusBoard, relative, schema

SERVER = datetime(2026, 12, 20, 6, 0, tzinfo=UTC)  # Cloudflare's clock (the demo's: simulated)
LOCAL = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)  # this machine's
ACCOUNT = parse_config(
    'accounts: [{name: prod, account_id: "0123456789abcdef0123456789abcdef"}]\n', Path("c.yaml")
).accounts[0]


def board(**kwargs: object) -> StatusBoard:
    return StatusBoard(
        [ACCOUNT],
        next_check=lambda _: LOCAL + timedelta(seconds=90),
        clock=lambda: SERVER,
        local_clock=lambda: LOCAL,
        **kwargs,  # type: ignore[arg-type]
    )


def test_every_time_is_on_one_clock_the_schedulers_moved_onto_it() -> None:
    shown = board()
    shown.record(CheckResult(ACCOUNT))

    (account,) = shown.as_json()["accounts"]
    assert shown.as_json()["generated_at"] == "2026-12-20T06:00:00Z"
    assert account["checked_at"] == "2026-12-20T06:00:00Z"
    assert account["next_check_at"] == "2026-12-20T06:01:30Z"  # 90 s after, on the same clock
    assert "in 1 minute (Sun 2026-12-20 06:01:30 UTC)" in shown.html().replace(
        "<span class='abs'>", ""
    ).replace("</span>", "")


def test_the_rotations_and_verdicts_it_hears_become_history_and_state() -> None:
    shown = board()
    shown.record(CheckResult(ACCOUNT))
    at = "2026-12-19T06:00:00Z"
    ours = Event("key_rotated", "prod", ACCOUNT.account_id, SERVER, {"last_key_rotation_at": at})
    shown.emit(ours)
    assert shown.as_json()["accounts"][0]["publication"]["verdict"] == "pending"
    shown.emit(Event("key_publication_late", "prod", ACCOUNT.account_id, SERVER, {}))
    late = shown.as_json()
    assert late["accounts"][0]["state"] == "unpublished"
    assert late["summary"]["states"]["unpublished"] == 1
    assert "key NOT published before publication.deadline" in shown.html()
    published = {"late": True, "kid": "k2", "publication_seconds": 400.0}
    shown.emit(Event("key_published", "prod", ACCOUNT.account_id, SERVER, published))
    elsewhere = {"last_key_rotation_at": "2026-12-01T00:00:00Z"}
    shown.emit(Event("key_rotated_elsewhere", "prod", ACCOUNT.account_id, SERVER, elsewhere))
    shown.emit(Event("key_rotated", "other", "f" * 32, SERVER, {"last_key_rotation_at": at}))  # not ours

    data = shown.as_json()
    jsonschema.validate(data, schema(), cls=jsonschema.Draft202012Validator)
    (account,) = data["accounts"]
    assert account["history"] == [
        {"at": "2026-12-01T00:00:00Z", "by": "cloudflare"},
        {"at": "2026-12-19T06:00:00Z", "by": "rotator"},
    ]
    assert account["publication"]["verdict"] == "late" and account["state"] == "healthy"
    page = shown.html()
    assert '<polygon class="cloudflare"' in page and '<circle class="rotator"' in page
    assert "key published late, 7 min after the rotation" in page


def test_publication_not_checked_says_so_and_never_counts_as_late() -> None:
    shown = board(publication=False)
    shown.record(CheckResult(ACCOUNT))
    shown.emit(
        Event(
            "key_rotated",
            "prod",
            ACCOUNT.account_id,
            SERVER,
            {"last_key_rotation_at": "2026-12-19T06:00:00Z"},
        )
    )
    shown.emit(Event("key_publication_late", "prod", ACCOUNT.account_id, SERVER, {}))
    assert shown.as_json()["accounts"][0]["state"] == "healthy"
    assert "publication not checked (publication.enabled: false)" in shown.html()


def test_the_summary_carries_readiness_and_the_configs_warnings() -> None:
    shown = board(ready=lambda: "Cloudflare's API has not answered a check yet", warnings=["<a> warning"])
    summary = shown.as_json()["summary"]
    assert summary["ready"] is False and summary["not_ready_because"].startswith("Cloudflare's API")
    assert summary["states"]["pending"] == 1 and summary["next_rotation"] is None
    page = shown.html()
    assert "not ready" in page and "&lt;a&gt; warning" in page and "<a> warning" not in page


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "now"), (59, "now"), (60, "in 1 minute"), (-7200, "2 hours ago"), (2 * 86400 + 5, "in 2 days")],
)
def test_relative_times(seconds: float, words: str) -> None:
    assert relative(SERVER + timedelta(seconds=seconds), SERVER) == words
