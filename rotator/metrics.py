"""Prometheus metrics: every name, in base units, on a registry the caller provides.

Every configured account's series exist from start-up (counters at 0), so dashboards and alerts see
an account before its first check, and ``absent()`` never has to stand in for "zero so far".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rotator import __version__
from rotator.cloudflare import KeyConfig
from rotator.config import Account

ENDPOINTS = (("GET", "keys"), ("PUT", "keys"), ("POST", "rotate"))
DAY_SECONDS = 86400.0


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        per_account = ["account", "account_id"]
        self.key_last_rotation = Gauge(
            "rotator_key_last_rotation_timestamp_seconds",
            "When Cloudflare last rotated the account's signing key (last_key_rotation_at).",
            per_account,
            registry=registry,
        )
        self.key_next_rotation = Gauge(
            "rotator_key_next_rotation_timestamp_seconds",
            "When Cloudflare would rotate the key on its own: last rotation plus interval.",
            per_account,
            registry=registry,
        )
        self.key_rotation_interval = Gauge(
            "rotator_key_rotation_interval_seconds",
            "Cloudflare's automatic key rotation interval for the account.",
            per_account,
            registry=registry,
        )
        self.last_successful_check = Gauge(
            "rotator_last_successful_check_timestamp_seconds",
            "When the account's key configuration was last read successfully (0: never).",
            per_account,
            registry=registry,
        )
        self.last_successful_rotation = Gauge(
            "rotator_last_successful_rotation_timestamp_seconds",
            "When this process last rotated the account's key (0: never).",
            per_account,
            registry=registry,
        )
        self.last_failed_rotation = Gauge(
            "rotator_last_failed_rotation_timestamp_seconds",
            "When a rotation of the account's key by this process last failed (0: never).",
            per_account,
            registry=registry,
        )
        self.checks = Counter(
            "rotator_checks",
            "Checks of an account's key configuration, by result (success, error).",
            ["account", "result"],
            registry=registry,
        )
        self.rotations = Counter(
            "rotator_rotations",
            "Key rotations decided by rotator, by result (success, error, dry_run).",
            ["account", "result"],
            registry=registry,
        )
        self.api_requests = Counter(
            "rotator_api_requests",
            "Requests to Cloudflare's API by method, endpoint and HTTP status (error: no answer).",
            ["method", "endpoint", "code"],
            registry=registry,
        )
        self.api_request_duration = Histogram(
            "rotator_api_request_duration_seconds",
            "Time from sending a request to Cloudflare to its answer.",
            ["method", "endpoint"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.accounts = Gauge("rotator_accounts", "Accounts configured.", registry=registry)
        self.build_info = Gauge(
            "rotator_build_info", "rotator's version; always 1.", ["version"], registry=registry
        )
        self.check_interval = Gauge(
            "rotator_check_interval_seconds",
            "Configured time between two checks of one account (before jitter).",
            registry=registry,
        )
        self.rotation_threshold = Gauge(
            "rotator_rotation_threshold_seconds",
            "rotator rotates when Cloudflare's own rotation is this close (threshold_days).",
            ["account"],
            registry=registry,
        )
        self.dry_run = Gauge(
            "rotator_dry_run",
            "1 when the account is in dry run (rotator changes nothing), else 0.",
            ["account"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "rotator_config_reloads",
            "Config reloads (SIGHUP or a changed file), by result (success, error).",
            ["result"],
            registry=registry,
        )
        self.config_last_reload_successful = Gauge(
            "rotator_config_last_reload_successful",
            "1 when the last config reload was applied (or none was tried), 0 when it was refused.",
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
        for result in ("success", "error"):
            self.config_reloads.labels(result)
        self.config_last_reload_successful.set(1)

    def configure(self, accounts: Iterable[Account], check_interval: float) -> None:
        """Create every account's series, so they exist before the first check."""
        accounts = list(accounts)
        self.accounts.set(len(accounts))
        self.check_interval.set(check_interval)
        for account in accounts:
            ids = (account.name, account.account_id)
            for gauge in (
                self.last_successful_check,
                self.last_successful_rotation,
                self.last_failed_rotation,
            ):
                gauge.labels(*ids)
            for result in ("success", "error"):
                self.checks.labels(account.name, result)
            for result in ("success", "error", "dry_run"):
                self.rotations.labels(account.name, result)
            self.rotation_threshold.labels(account.name).set(account.rotation.threshold_days * DAY_SECONDS)
            self.dry_run.labels(account.name).set(1 if account.rotation.dry_run else 0)
        for method, endpoint in ENDPOINTS:
            self.api_request_duration.labels(method, endpoint)

    def forget(self, account: Account) -> None:
        """Drop the series of an account that is no longer configured (after a reload)."""
        ids = (account.name, account.account_id)
        for gauge in (
            self.key_last_rotation,
            self.key_next_rotation,
            self.key_rotation_interval,
            self.last_successful_check,
            self.last_successful_rotation,
            self.last_failed_rotation,
        ):
            _remove(gauge, *ids)
        for result in ("success", "error"):
            _remove(self.checks, account.name, result)
        for result in ("success", "error", "dry_run"):
            _remove(self.rotations, account.name, result)
        _remove(self.rotation_threshold, account.name)
        _remove(self.dry_run, account.name)

    def observe_request(self, method: str, endpoint: str, code: str, seconds: float) -> None:
        self.api_requests.labels(method, endpoint, code).inc()
        self.api_request_duration.labels(method, endpoint).observe(seconds)

    def record_key(self, account: Account, key: KeyConfig) -> None:
        ids = (account.name, account.account_id)
        last, interval = key.last_key_rotation_at, key.key_rotation_interval_days
        if last is not None:
            self.key_last_rotation.labels(*ids).set(last.timestamp())
        if interval is not None:
            self.key_rotation_interval.labels(*ids).set(interval * DAY_SECONDS)
        if last is not None and interval is not None:
            self.key_next_rotation.labels(*ids).set(last.timestamp() + interval * DAY_SECONDS)
        elif key.days_until_next_rotation is not None:
            self.key_next_rotation.labels(*ids).set(
                key.observed_at.timestamp() + key.days_until_next_rotation * DAY_SECONDS
            )

    def record_check(self, account: Account, ok: bool, at: datetime) -> None:
        self.checks.labels(account.name, "success" if ok else "error").inc()
        if ok:
            self.last_successful_check.labels(account.name, account.account_id).set(at.timestamp())

    def record_rotation(self, account: Account, result: str, at: datetime) -> None:
        self.rotations.labels(account.name, result).inc()
        ids = (account.name, account.account_id)
        if result == "success":
            self.last_successful_rotation.labels(*ids).set(at.timestamp())
        elif result == "error":
            self.last_failed_rotation.labels(*ids).set(at.timestamp())


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
