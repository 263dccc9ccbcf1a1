"""Can a credential's budget check all its accounts within check_interval? The arithmetic, as a table,
and the warning ``rotator check`` prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rotator.config.capacity import (
    Shortfall,
    capacity_warnings,
    certs_capacity_warnings,
    shortest_interval,
    shortfalls,
    verification_reserve,
)
from rotator.config.credentials import Credential
from rotator.config.durations import parse_duration
from rotator.config.model import Config, parse_config


@pytest.mark.parametrize(
    ("accounts", "requests", "per", "expected"),
    [
        (1000, 1000, 300.0, 300.0),  # Cloudflare-like budget: 1000 accounts need 5 minutes
        (12_000, 1000, 300.0, 3600.0),  # ... and 12,000 need the default hour exactly
        (12_001, 1000, 300.0, 3660.0),  # one more: rounded up to the next whole minute
        (10, 300, 10.0, 1.0),  # a third of a second: rounded up to a whole second
        (1801, 300, 10.0, 61.0),
        (3000, 300, 10.0, 100.0),  # below ten minutes, whole seconds: 100s
    ],
)
def test_shortest_interval(accounts: int, requests: int, per: float, expected: float) -> None:
    assert shortest_interval(accounts, requests, per) == expected


def test_only_credentials_whose_cycle_cannot_finish_fall_short() -> None:
    found = shortfalls({"big": 12_001, "exact": 12_000, "small": 5}, 3600.0, 1000, 300.0)
    assert found == [Shortfall("big", 12_001, 3600.0, 3660.0)]


def test_the_shortest_interval_can_be_written_in_the_config_as_said() -> None:
    shortfall = shortfalls({"token": 12_001}, 3600.0, 1000, 300.0)[0]
    message = shortfall.message(1000, 300.0)
    assert "schedule.check_interval is 1h" in message
    assert "Set schedule.check_interval to at least 61m" in message
    assert parse_duration("61m") == shortfall.shortest_interval


def _config(accounts: int, token_envs: list[str]) -> str:
    lines = [
        "cloudflare: {rate_limit: {requests: 100, per: 1m}}",
        "schedule: {check_interval: 10m, jitter: 0s}",
        "accounts:",
    ]
    for i in range(accounts):
        env = token_envs[i % len(token_envs)]
        lines.append(f'  - {{name: a{i}, account_id: "{i:032x}", api_token_env: {env}}}')
    return "\n".join(lines) + "\n"


def _credentials(text: str, tmp_path: Path, env: dict[str, str]) -> tuple[Config, dict[str, Credential]]:
    config = parse_config(text, tmp_path / "config.yaml")
    return config, {a.account_id: a.credential.load(env) for a in config.accounts}


def test_accounts_whose_variables_hold_the_same_token_share_one_budget(tmp_path: Path) -> None:
    """1,200 accounts at 100 per minute need 12 minutes; split over two tokens, 6 each."""
    text = _config(1200, ["TOKEN_A", "TOKEN_B"])
    config, same = _credentials(text, tmp_path, {"TOKEN_A": "secret-one", "TOKEN_B": "secret-one"})
    (warning,) = capacity_warnings(config, same)
    assert warning.startswith("1200 accounts share one credential (API token from environment variable")
    assert "TOKEN_A" in warning
    assert "TOKEN_B" in warning
    assert "schedule.check_interval is 10m" in warning
    assert "at least 12m" in warning

    config, apart = _credentials(text, tmp_path, {"TOKEN_A": "secret-one", "TOKEN_B": "secret-two"})
    assert capacity_warnings(config, apart) == []


@pytest.mark.parametrize(("requests", "reserve"), [(1, 0), (2, 1), (5, 1), (10, 2), (300, 60), (1200, 240)])
def test_a_fifth_of_the_certs_budget_is_kept_for_verification(requests: int, reserve: int) -> None:
    assert verification_reserve(requests) == reserve


def _certs_config(accounts: int, check_interval: str, requests: int = 300) -> Config:
    lines = [
        f"publication: {{rate_limit: {{requests: {requests}, per: 5m}}}}",
        f"schedule: {{check_interval: {check_interval}, jitter: 0s}}",
        "accounts:",
        *(f'  - {{name: a{i}, account_id: "{i:032x}"}}' for i in range(accounts)),
    ]
    return parse_config("\n".join(lines) + "\n", Path("config.yaml"))


def test_checks_whose_certs_reads_cannot_fit_the_budget_are_warned_about() -> None:
    """300 per 5m keeps 60 for verification: 240 routine reads, one a check. 240 accounts every 5m
    fit; 241 do not, nor 20 accounts every 5s (the default hour fits 3,600 accounts at most)."""
    assert certs_capacity_warnings(_certs_config(240, "5m")) == []
    (warning,) = certs_capacity_warnings(_certs_config(241, "5m"))
    assert warning.startswith("publication.rate_limit is 300 reads per 5m, 60 of them kept for verifying")
    assert "241 accounts checked every 5m need 241 reads" in warning
    shortest = warning.split("schedule.check_interval to at least ")[1].split(",")[0]
    requests = int(warning.split("publication.rate_limit.requests to at least ")[1].split(" ")[0])
    # What it says to write is enough, and no more than needed.
    assert certs_capacity_warnings(_certs_config(241, shortest)) == []
    assert certs_capacity_warnings(_certs_config(241, "5m", requests)) == []
    assert certs_capacity_warnings(_certs_config(241, "5m", requests - 1))
    assert certs_capacity_warnings(_certs_config(20, "5s"))
    config = _certs_config(241, "5m")
    off = config.settings.publication.model_copy(update={"enabled": False})
    disabled = dataclasses.replace(config, settings=config.settings.model_copy(update={"publication": off}))
    assert certs_capacity_warnings(disabled) == []
