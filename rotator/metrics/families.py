"""Prometheus metrics: every name, in base units, on a registry the caller provides.

Every configured account's series exist from start-up (counters at 0), so dashboards and alerts see
an account before its first check, and ``absent()`` never has to stand in for "zero so far".

The per-account series live in one table (``AccountTable``), a row of numbers per account, turned
into metric families only when scraped. prometheus-client's labelled metrics keep each series as an
object of its own, with a lock: 13 series an account came to 6 kB an account (60 MB of a daemon with
10,000 accounts), a second and a half of start-up, and a label lookup on every update. What a scrape
shows is the same: names, help, types, labels, and the counters' ``_created``.

A scrape's text for those families is written here, not sample by sample by prometheus-client's
exposition (two seconds of CPU for the 210,000 samples of 10,000 accounts): each account's labels
are escaped once, and each family's text is kept and written again only when one of its numbers
changed (rotator.after.publication's per-account series use the same table). ``exposition(registry)``
gives the page ``generate_latest(registry)`` would, byte for byte (tests/component/test_metrics.py holds it
to that), and may run in a thread while the event loop updates the numbers; the server runs it
there.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from rotator import __version__
from rotator.config.model import Account
from rotator.config.reload import restart_settings
from rotator.core.keys import KeyConfig, cloudflare_rotates_at

ENDPOINTS = (("GET", "keys"), ("PUT", "keys"), ("POST", "rotate"), ("GET", "organizations"))
DAY_SECONDS = 86400.0


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # The settings' gauges are written as the key's are (they are never NaN).
        self._accounts = AccountTable(_NEW_ROW, (*_GAUGES, *_SETTING_GAUGES), _COUNTERS)
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
        self.leader = Gauge(
            "rotator_leader",
            "1 while this replica holds the leader election's Lease (and checks and rotates), else 0; "
            "always 1 without leader election.",
            registry=registry,
        )
        self.leader_transitions = Counter(
            "rotator_leader_transitions",
            "Times this replica became the leader.",
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
        self.leader.set(1)  # until a leader election says otherwise (rotator.daemon)
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
        now = time.time()  # one _created for the accounts configured together
        for account in accounts:
            row = self._accounts.row(account, created=now)
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


# (name, help, column): a gauge labelled account and account_id; NaN: no sample (yet).
GaugeSpec = tuple[str, str, int]
# (name, help, ((result, column), ...)): a counter labelled account (and account_id) and result.
CounterSpec = tuple[str, str, tuple[tuple[str, int], ...]]


@dataclass(slots=True)
class _Row:
    account: str
    account_id: str
    created: float
    # C doubles, not a list of float objects: 150 bytes less an account.
    values: array[float]
    # The row's label pairs as the text format writes them, escaped once: ``account="..."`` and
    # ``account="...",account_id="..."``.
    account_label: str = field(init=False)
    labels: str = field(init=False)

    def __post_init__(self) -> None:
        self.account_label = f'account="{_escape_label(self.account)}"'
        self.labels = f'{self.account_label},account_id="{_escape_label(self.account_id)}"'


@dataclass(frozen=True, slots=True)
class _Part:
    """A piece of a table's text: a family's samples, or a counter's _created samples, which
    prometheus-client shows after it as a gauge of their own."""

    family: int  # which family (in the order a scrape shows them) the piece belongs to
    columns: tuple[int, ...]  # the numbers it shows
    # (rows, those numbers read once per row and column, whether _created samples are shown)
    write: Callable[[tuple[_Row, ...], list[array[float]], bool], str]


@dataclass(frozen=True, slots=True)
class _Text:
    """A part's text as last written, and what it was written from."""

    rows: tuple[_Row, ...]
    created: bool
    numbers: bytes
    text: bytes


class AccountTable(Collector):
    """Per-account series as rows of numbers, one ``_Row`` per account name, turned into metric
    families only when scraped.

    The text a scrape shows is kept, part by part (a family, or a counter's _created samples),
    and a part is written again only when the numbers it shows, read afresh at each scrape, are
    not those it was written from, or an account came or went: a check changes two parts of
    thirteen. Writers change ``row(account).values`` in place and need not say so; rows change on
    the event loop while a scrape renders in a thread, and each number is read once, so a part's
    text and the numbers it is kept against always agree.
    """

    def __init__(
        self,
        new_row: Sequence[float],
        gauges: Sequence[GaugeSpec],
        counters: Sequence[CounterSpec],
        *,
        account_id_on_counters: bool = False,
    ) -> None:
        self.rows: dict[str, _Row] = {}
        self._new_row = tuple(new_row)
        counter_labels = (
            ("account", "account_id", "result") if account_id_on_counters else ("account", "result")
        )
        self._families = [
            *((name, help_, "gauge", ("account", "account_id")) for name, help_, _ in gauges),
            *((name, help_, "counter", counter_labels) for name, help_, _ in counters),
        ]
        self._gauges, self._counters = tuple(gauges), tuple(counters)
        self._parts: list[_Part] = [
            _Part(family, (column,), functools.partial(_write_gauge, name, help_))
            for family, (name, help_, column) in enumerate(gauges)
        ]
        for family, (name, help_, results) in enumerate(counters, len(gauges)):
            self._parts += [
                _Part(
                    family,
                    tuple(column for _, column in results),
                    functools.partial(_write_counter, name, help_, results, account_id_on_counters),
                ),
                _Part(
                    family,
                    (),
                    functools.partial(_write_created, name, help_, results, account_id_on_counters),
                ),
            ]
        self._kept: list[_Text | None] = [None] * len(self._parts)
        self._rows_seen: tuple[_Row, ...] = ()
        self._rendering = threading.Lock()  # one renderer at a time; writers never take it

    def row(self, account: Account, created: float | None = None) -> _Row:
        row = self.rows.get(account.name)
        if row is None or row.account_id != account.account_id:
            # A name now naming another account starts afresh, as a new label set would.
            when = time.time() if created is None else created
            row = self.rows[account.name] = _Row(
                account.name, account.account_id, when, array("d", self._new_row)
            )
        return row

    def describe(self) -> Iterable[Metric]:
        return self._metric_families([()] * len(self._families), (), created=False)

    def collect(self) -> Iterable[Metric]:
        created = _created_series_enabled()
        chunks: list[list[bytes]] = [[] for _ in self._families]
        with self._rendering:
            rows = tuple(self.rows.values())  # a snapshot: a reload may change the dict meanwhile
            if rows == self._rows_seen:  # the same rows (by identity): the kept texts may serve
                rows = self._rows_seen
            self._rows_seen = rows
            for index, part in enumerate(self._parts):
                columns = [array("d", [row.values[column] for row in rows]) for column in part.columns]
                numbers = b"".join(column.tobytes() for column in columns)  # NaN equals NaN here
                kept = self._kept[index]
                if kept is None or (kept.rows, kept.created, kept.numbers) != (rows, created, numbers):
                    text = part.write(rows, columns, created).encode()
                    kept = self._kept[index] = _Text(rows, created, numbers, text)
                chunks[part.family].append(kept.text)
        return self._metric_families([tuple(c) for c in chunks], rows, created=created)

    def _metric_families(
        self, chunks: list[tuple[bytes, ...]], rows: tuple[_Row, ...], *, created: bool
    ) -> list[Metric]:
        """Each family: its text, and its samples if something reads them."""
        families: list[Metric] = []
        for index, (name, help_, kind, _) in enumerate(self._families):
            family = _AccountFamily(name, help_, kind, chunks[index])
            family.fill = functools.partial(self._samples, index, rows, created)
            families.append(family)
        return families

    def _samples(self, index: int, rows: tuple[_Row, ...], created: bool) -> Metric:
        """A family as prometheus-client's own types build it, sample by sample."""
        name, help_, _, labels = self._families[index]
        if index < len(self._gauges):
            column = self._gauges[index][2]
            gauge = GaugeMetricFamily(name, help_, labels=labels)
            for row in rows:
                if not math.isnan(value := row.values[column]):
                    gauge.add_metric((row.account, row.account_id), value)
            return gauge
        results = self._counters[index - len(self._gauges)][2]
        counter = CounterMetricFamily(name, help_, labels=labels)
        with_id = len(labels) == 3
        for row in rows:
            since = row.created if created else None
            for result, column in results:
                label_values = (row.account, row.account_id, result) if with_id else (row.account, result)
                counter.add_metric(label_values, row.values[column], created=since)
        return counter


_go_number = cast("Callable[[float], str]", floatToGoString)  # untyped in prometheus-client


def _number(value: float) -> str:
    """A number as prometheus-client's ``floatToGoString`` writes it (Go's format: 1.7e+09, +Inf),
    in a third of the time for the timestamps that make up most of a scrape."""
    if -math.inf < value < 1e6:
        return repr(value)
    if math.isfinite(value):
        text = repr(value)
        dot = text.find(".")
        if dot > 6:  # Go writes an exponent from 1e+06 on
            return f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.") + f"e+{dot - 1:02d}"
        return text
    return _go_number(value)


def _shown(values: Iterable[float]) -> dict[float, str]:
    """Each distinct number as written, once: intervals and counts repeat from row to row."""
    return {value: _number(value) for value in set(values)}


def _escape_label(value: str) -> str:
    # As prometheus-client escapes a label value in the text format.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(name: str, documentation: str, kind: str) -> str:
    escaped = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def _write_gauge(
    name: str, documentation: str, rows: tuple[_Row, ...], columns: list[array[float]], created: bool
) -> str:
    (values,) = columns
    shown = _shown(values)
    lines = [_header(name, documentation, "gauge")]
    lines += [
        f"{name}{{{row.labels}}} {shown[value]}\n"
        for row, value in zip(rows, values, strict=True)
        if not math.isnan(value)
    ]
    return "".join(lines)


def _write_counter(
    name: str,
    documentation: str,
    results: tuple[tuple[str, int], ...],
    with_id: bool,
    rows: tuple[_Row, ...],
    columns: list[array[float]],
    created: bool,
) -> str:
    shown = _shown(itertools.chain.from_iterable(columns))
    names = [result for result, _ in results]
    lines = [_header(f"{name}_total", documentation, "counter")]
    lines += [
        f'{name}_total{{{row.labels if with_id else row.account_label},result="{result}"}} '
        f"{shown[counts[index]]}\n"
        for index, row in enumerate(rows)
        for result, counts in zip(names, columns, strict=True)
    ]
    return "".join(lines)


def _write_created(
    name: str,
    documentation: str,
    results: tuple[tuple[str, int], ...],
    with_id: bool,
    rows: tuple[_Row, ...],
    columns: list[array[float]],
    created: bool,
) -> str:
    if not (created and rows):
        return ""
    shown = _shown(row.created for row in rows)
    lines = [_header(f"{name}_created", documentation, "gauge")]
    lines += [
        f'{name}_created{{{row.labels if with_id else row.account_label},result="{result}"}} '
        f"{shown[row.created]}\n"
        for row in rows
        for result, _ in results
    ]
    return "".join(lines)


class _AccountFamily(Metric):
    """A per-account family as scraped: its text for ``exposition``, and its samples for
    whatever else reads the registry (``generate_latest``, ``get_sample_value``), built when
    first read: 180,000 samples at 10,000 accounts, an object each, take a second to build."""

    def __init__(self, name: str, documentation: str, kind: str, chunks: tuple[bytes, ...]) -> None:
        super().__init__(name, documentation, kind)  # sets `samples = []` through the setter below
        self.chunks = chunks
        self.fill: Callable[[], Metric] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self.fill is not None:
            self._samples, self.fill = self.fill().samples, None
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return (self._family,)


def _created_series_enabled() -> bool:
    """prometheus-client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES, ``disable_created_metrics``)
    applies here too: asked of a counter of its own, since the library offers no getter."""
    (family,) = Counter("rotator_probe", "", registry=None).collect()
    return any(sample.name.endswith("_created") for sample in family.samples)


def exposition(registry: Collector) -> bytes:
    """The registry in Prometheus' text format: what prometheus-client's ``generate_latest``
    writes, byte for byte, with the per-account families' kept text in place of writing each of
    their samples again. Safe to call from a thread other than the event loop's."""
    return b"".join(exposition_chunks(registry))


def exposition_chunks(registry: Collector) -> list[bytes]:
    """``exposition`` in pieces, to be sent one after the other: none is bigger than one family."""
    chunks: list[bytes] = []
    for family in registry.collect():
        if isinstance(family, _AccountFamily):
            chunks += family.chunks
        else:
            chunks.append(generate_latest(_One(family)))
    return chunks
