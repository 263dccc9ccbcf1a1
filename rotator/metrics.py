"""Prometheus metrics: every name, in base units, on a registry the caller provides.

Every configured account's series exist from start-up (counters at 0), so dashboards and alerts see
an account before its first check, and ``absent()`` never has to stand in for "zero so far".

The per-account series live in one table (``_Accounts``), a row of numbers per account, turned into
metric families only when scraped. prometheus-client's labelled metrics keep each series as an
object of its own, with a lock: 13 series an account came to 6 kB an account (60 MB of a daemon with
10,000 accounts), a second and a half of start-up, and a label lookup on every update. What a scrape
shows is the same: names, help, types, labels, and the counters' ``_created``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rotator import __version__
from rotator.config import Account
from rotator.keys import KeyConfig, cloudflare_rotates_at
from rotator.reload import restart_settings

ENDPOINTS = (("GET", "keys"), ("PUT", "keys"), ("POST", "rotate"), ("GET", "organizations"))
DAY_SECONDS = 86400.0


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._accounts = _Accounts()
        registry.register(self._accounts)
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
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
        self.state_save_failures = Counter(
            "rotator_state_save_failures",
            "Writes of state_file that failed (state_save_failed): before a POST nothing was sent; "
            "after one, the outcome is kept in memory only.",
            registry=registry,
        )
        self.config_restart_required = Gauge(
            "rotator_config_restart_required",
            "1 while a reloaded setting keeps its old value until a restart, else 0; one series per "
            "such setting.",
            ["setting"],
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
        for setting in restart_settings():
            self.config_restart_required.labels(setting).set(0)
        for result in ("success", "error"):
            self.config_reloads.labels(result)
        self.config_last_reload_successful.set(1)

    def configure(self, accounts: Iterable[Account], check_interval: float) -> None:
        """Create every account's series, so they exist before the first check."""
        accounts = list(accounts)
        self.accounts.set(len(accounts))
        self.check_interval.set(check_interval)
        for account in accounts:
            row = self._accounts.row(account)
            row.values[_THRESHOLD] = account.rotation.threshold_days * DAY_SECONDS
            row.values[_DRY_RUN] = 1.0 if account.rotation.dry_run else 0.0
        for method, endpoint in ENDPOINTS:
            self.api_request_duration.labels(method, endpoint)

    def restart_required(self, settings: Iterable[str]) -> None:
        """The settings whose new value waits for a restart (the others back to 0)."""
        pending = set(settings)
        for setting in restart_settings():
            self.config_restart_required.labels(setting).set(1 if setting in pending else 0)

    def forget(self, account: Account) -> None:
        """Drop the series of an account that is no longer configured (after a reload)."""
        self._accounts.rows.pop(account.name, None)

    def observe_request(self, method: str, endpoint: str, code: str, seconds: float) -> None:
        # The labelled children, looked up once: this runs on every request.
        key = (method, endpoint, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.api_requests.labels(method, endpoint, code),
                self.api_request_duration.labels(method, endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def record_key(self, account: Account, key: KeyConfig) -> None:
        values = self._accounts.row(account).values
        last, interval = key.last_key_rotation_at, key.key_rotation_interval_days
        if last is not None:
            values[_KEY_LAST_ROTATION] = last.timestamp()
        if interval is not None:
            values[_KEY_INTERVAL] = interval * DAY_SECONDS
        rotates_at = cloudflare_rotates_at(key)
        if rotates_at is not None:
            values[_KEY_NEXT_ROTATION] = rotates_at.timestamp()

    def record_check(self, account: Account, ok: bool, at: datetime) -> None:
        values = self._accounts.row(account).values
        values[_CHECKS_SUCCESS if ok else _CHECKS_ERROR] += 1
        if ok:
            values[_LAST_CHECK] = at.timestamp()

    def record_unconfirmed(self, account: Account, unconfirmed: bool) -> None:
        self._accounts.row(account).values[_UNCONFIRMED] = 1.0 if unconfirmed else 0.0

    def record_rotation(self, account: Account, result: str, at: datetime) -> None:
        values = self._accounts.row(account).values
        values[_ROTATIONS[result]] += 1
        if result == "success":
            values[_LAST_ROTATION] = at.timestamp()
        elif result == "error":
            values[_LAST_FAILED_ROTATION] = at.timestamp()


# The columns of an account's row. NaN: the series does not exist yet (the key gauges, until the
# first successful read).
(
    _KEY_LAST_ROTATION,
    _KEY_NEXT_ROTATION,
    _KEY_INTERVAL,
    _LAST_CHECK,
    _LAST_ROTATION,
    _LAST_FAILED_ROTATION,
    _THRESHOLD,
    _DRY_RUN,
    _CHECKS_SUCCESS,
    _CHECKS_ERROR,
    _ROTATIONS_SUCCESS,
    _ROTATIONS_ERROR,
    _ROTATIONS_DRY_RUN,
    _UNCONFIRMED,
    _ROTATIONS_ELSEWHERE,
) = range(15)
_ROTATIONS = {
    "success": _ROTATIONS_SUCCESS,
    "error": _ROTATIONS_ERROR,
    "dry_run": _ROTATIONS_DRY_RUN,
    "elsewhere": _ROTATIONS_ELSEWHERE,
}
_ABSENT = math.nan
_NEW_ROW = (_ABSENT, _ABSENT, _ABSENT) + (0.0,) * 12

# name, help, label names, column; labels are (account, account_id) unless named otherwise.
_GAUGES = (
    (
        "rotator_key_last_rotation_timestamp_seconds",
        "When Cloudflare last rotated the account's signing key (last_key_rotation_at).",
        _KEY_LAST_ROTATION,
    ),
    (
        "rotator_key_next_rotation_timestamp_seconds",
        "When Cloudflare would rotate the key on its own: last rotation plus interval.",
        _KEY_NEXT_ROTATION,
    ),
    (
        "rotator_key_rotation_interval_seconds",
        "Cloudflare's automatic key rotation interval for the account.",
        _KEY_INTERVAL,
    ),
    (
        "rotator_last_successful_check_timestamp_seconds",
        "When the account's key configuration was last read successfully (0: never).",
        _LAST_CHECK,
    ),
    (
        "rotator_last_successful_rotation_timestamp_seconds",
        "When this process last rotated the account's key (0: never).",
        _LAST_ROTATION,
    ),
    (
        "rotator_last_failed_rotation_timestamp_seconds",
        "When a rotation of the account's key by this process last failed (0: never).",
        _LAST_FAILED_ROTATION,
    ),
    (
        "rotator_rotation_unconfirmed",
        "1 while a rotation of the account may have been applied and is not settled yet, else 0.",
        _UNCONFIRMED,
    ),
)
# The account's settings: every account has them from start-up (no NaN).
_SETTING_GAUGES = (
    (
        "rotator_rotation_threshold_seconds",
        "rotator rotates when Cloudflare's own rotation is this close (threshold_days).",
        _THRESHOLD,
    ),
    ("rotator_dry_run", "1 when the account is in dry run (rotator changes nothing), else 0.", _DRY_RUN),
)
_COUNTERS = (
    (
        "rotator_checks",
        "Checks of an account's key configuration, by result (success, error).",
        (("success", _CHECKS_SUCCESS), ("error", _CHECKS_ERROR)),
    ),
    (
        "rotator_rotations",
        "Key rotations decided by rotator, by result (success, error, dry_run: each rotation a dry "
        "run held back, once per key however many checks found it due); elsewhere: rotations "
        "rotator did not make (Cloudflare on its own, the dashboard, another tool).",
        (
            ("success", _ROTATIONS_SUCCESS),
            ("error", _ROTATIONS_ERROR),
            ("dry_run", _ROTATIONS_DRY_RUN),
            ("elsewhere", _ROTATIONS_ELSEWHERE),
        ),
    ),
)


@dataclass(slots=True)
class _Row:
    account_id: str
    created: float = field(default_factory=time.time)
    values: list[float] = field(default_factory=lambda: list(_NEW_ROW))


class _Accounts(Collector):
    """Every account's series, as rows of numbers; metric families are built when scraped."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}

    def row(self, account: Account) -> _Row:
        row = self.rows.get(account.name)
        if row is None or row.account_id != account.account_id:
            # A name now naming another account starts afresh, as a new label set would.
            row = self.rows[account.name] = _Row(account.account_id)
        return row

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        return self._families(dict(self.rows))

    def _families(self, rows: dict[str, _Row]) -> Iterator[Metric]:
        # prometheus-client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES) applies here too.
        created = prometheus_client.metrics._use_created
        for name, documentation, column in _GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=("account", "account_id"))
            for account, row in rows.items():
                value = row.values[column]
                if not math.isnan(value):
                    gauge.add_metric((account, row.account_id), value)
            yield gauge
        for name, documentation, column in _SETTING_GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=("account", "account_id"))
            for account, row in rows.items():
                gauge.add_metric((account, row.account_id), row.values[column])
            yield gauge
        for name, documentation, results in _COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=("account", "result"))
            for account, row in rows.items():
                for result, column in results:
                    counter.add_metric(
                        (account, result), row.values[column], created=row.created if created else None
                    )
            yield counter
