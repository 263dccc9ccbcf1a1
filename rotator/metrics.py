"""Prometheus metrics: every name, in base units, on a registry the caller provides.

Every configured account's series exist from start-up (counters at 0), so dashboards and alerts see
an account before its first check, and ``absent()`` never has to stand in for "zero so far".

The per-account series live in one table (``_Accounts``), a row of numbers per account, turned into
metric families only when scraped. prometheus-client's labelled metrics keep each series as an
object of its own, with a lock: 13 series an account came to 6 kB an account (60 MB of a daemon with
10,000 accounts), a second and a half of start-up, and a label lookup on every update. What a scrape
shows is the same: names, help, types, labels, and the counters' ``_created``.

A scrape's text for those families is written here, not sample by sample by prometheus-client's
exposition (a second of CPU for the 180,000 samples of 10,000 accounts): each account's labels are
escaped once, and each family's text is kept and written again only when one of its numbers
changed. ``exposition(registry)`` gives the page ``generate_latest(registry)`` would, byte for byte
(tests/test_metrics.py holds it to that), and may run in a thread while the event loop updates
the numbers; the server runs it there.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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
        table, now = self._accounts, time.time()
        for account in accounts:
            row = table.row(account, created=now)
            table.set(row, _THRESHOLD, account.rotation.threshold_days * DAY_SECONDS)
            table.set(row, _DRY_RUN, 1.0 if account.rotation.dry_run else 0.0)
        for method, endpoint in ENDPOINTS:
            self.api_request_duration.labels(method, endpoint)

    def restart_required(self, settings: Iterable[str]) -> None:
        """The settings whose new value waits for a restart (the others back to 0)."""
        pending = set(settings)
        for setting in restart_settings():
            self.config_restart_required.labels(setting).set(1 if setting in pending else 0)

    def forget(self, account: Account) -> None:
        """Drop the series of an account that is no longer configured (after a reload)."""
        self._accounts.drop(account.name)

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
        table = self._accounts
        row = table.row(account)
        last, interval = key.last_key_rotation_at, key.key_rotation_interval_days
        if last is not None:
            table.set(row, _KEY_LAST_ROTATION, last.timestamp())
        if interval is not None:
            table.set(row, _KEY_INTERVAL, interval * DAY_SECONDS)
        rotates_at = cloudflare_rotates_at(key)
        if rotates_at is not None:
            table.set(row, _KEY_NEXT_ROTATION, rotates_at.timestamp())

    def record_check(self, account: Account, ok: bool, at: datetime) -> None:
        table = self._accounts
        row = table.row(account)
        table.add(row, _CHECKS_SUCCESS if ok else _CHECKS_ERROR)
        if ok:
            table.set(row, _LAST_CHECK, at.timestamp())

    def record_unconfirmed(self, account: Account, unconfirmed: bool) -> None:
        table = self._accounts
        table.set(table.row(account), _UNCONFIRMED, 1.0 if unconfirmed else 0.0)

    def record_rotation(self, account: Account, result: str, at: datetime) -> None:
        table = self._accounts
        row = table.row(account)
        table.add(row, _ROTATIONS[result])
        if result == "success":
            table.set(row, _LAST_ROTATION, at.timestamp())
        elif result == "error":
            table.set(row, _LAST_FAILED_ROTATION, at.timestamp())


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
    account: str
    account_id: str
    created: float
    # C doubles, not a list of float objects: 150 bytes less an account.
    values: array[float] = field(default_factory=lambda: array("d", _NEW_ROW))
    # The row's label pairs as the text format writes them, escaped once: ``account="..."`` and
    # ``account="...",account_id="..."``.
    account_label: str = field(init=False)
    labels: str = field(init=False)

    def __post_init__(self) -> None:
        self.account_label = f'account="{_escape_label(self.account)}"'
        self.labels = f'{self.account_label},account_id="{_escape_label(self.account_id)}"'


@dataclass(frozen=True, slots=True)
class _Part:
    """A piece of the per-account families' text: a family's samples, or a counter's _created
    samples, which prometheus-client shows after it as a gauge of their own."""

    family: int  # which family (in the order a scrape shows them) the piece belongs to
    columns: tuple[int, ...]  # the numbers it shows: a change to one makes it stale
    write: Callable[[list[_Row], bool], str]  # (rows, whether _created samples are shown)


@dataclass(frozen=True, slots=True)
class _Text:
    """A part's text as last written, and what it was written from."""

    generation: int
    created: bool
    text: bytes


class _Accounts(Collector):
    """Every account's series, as rows of numbers; metric families are built when scraped.

    The text a scrape shows is kept, part by part, and a part is written again only when one of
    its numbers changed or an account came or went: a check changes two parts (the time of the
    last check and the checks counter) of thirteen. Rows change on the event loop while a scrape
    renders in a thread: a writer changes a number, then marks its column stale; the renderer
    clears the marks, then reads the numbers. A change that lands during a rendering is in the
    text or marked for the next one, never lost.
    """

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self._generation = 0  # bumped when a row is added, replaced or dropped
        self._stale = [True] * len(_NEW_ROW)
        self._texts: list[_Text | None] = [None] * len(_PARTS)
        self._rendering = threading.Lock()  # one renderer at a time; writers never take it

    def row(self, account: Account, created: float | None = None) -> _Row:
        row = self.rows.get(account.name)
        if row is None or row.account_id != account.account_id:
            # A name now naming another account starts afresh, as a new label set would.
            row = _Row(account.name, account.account_id, time.time() if created is None else created)
            self.rows[account.name] = row
            self._generation += 1
        return row

    def drop(self, name: str) -> None:
        if self.rows.pop(name, None) is not None:
            self._generation += 1

    def set(self, row: _Row, column: int, value: float) -> None:
        if row.values[column] != value:
            row.values[column] = value
            self._stale[column] = True

    def add(self, row: _Row, column: int) -> None:
        row.values[column] += 1
        self._stale[column] = True

    def describe(self) -> Iterable[Metric]:
        return _families([()] * len(_FAMILIES), [], created=False)

    def collect(self) -> Iterable[Metric]:
        # prometheus-client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES) applies here too.
        created = prometheus_client.metrics._use_created
        chunks: list[list[bytes]] = [[] for _ in _FAMILIES]
        with self._rendering:
            generation = self._generation  # read before the rows: a row added later bumps it
            rows = list(self.rows.values())  # a snapshot: a reload may change the dict meanwhile
            for index, part in enumerate(_PARTS):
                kept = self._texts[index]
                if (
                    kept is None
                    or (kept.generation, kept.created) != (generation, created)
                    or any([self._stale[column] for column in part.columns])
                ):
                    for column in part.columns:
                        self._stale[column] = False
                    kept = _Text(generation, created, part.write(rows, created).encode())
                    self._texts[index] = kept
                chunks[part.family].append(kept.text)
        return _families([tuple(c) for c in chunks], rows, created=created)


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


# The writers read each number once, into a column: the event loop may change a row meanwhile.


def _write_key_gauge(name: str, documentation: str, column: int, rows: list[_Row], created: bool) -> str:
    values = [row.values[column] for row in rows]
    shown = _shown(values)
    lines = [_header(name, documentation, "gauge")]
    lines += [
        f"{name}{{{row.labels}}} {shown[value]}\n"
        for row, value in zip(rows, values, strict=True)
        if not math.isnan(value)
    ]
    return "".join(lines)


def _write_counter(
    name: str, documentation: str, results: tuple[tuple[str, int], ...], rows: list[_Row], created: bool
) -> str:
    counts = [[row.values[column] for row in rows] for _, column in results]
    shown = _shown(itertools.chain.from_iterable(counts))
    names = [result for result, _ in results]
    lines = [_header(f"{name}_total", documentation, "counter")]
    lines += [
        f'{name}_total{{{row.account_label},result="{result}"}} {shown[count[index]]}\n'
        for index, row in enumerate(rows)
        for result, count in zip(names, counts, strict=True)
    ]
    return "".join(lines)


def _write_created(
    name: str, documentation: str, results: tuple[tuple[str, int], ...], rows: list[_Row], created: bool
) -> str:
    if not (created and rows):
        return ""
    shown = _shown(row.created for row in rows)
    lines = [_header(f"{name}_created", documentation, "gauge")]
    lines += [
        f'{name}_created{{{row.account_label},result="{result}"}} {shown[row.created]}\n'
        for row in rows
        for result, _ in results
    ]
    return "".join(lines)


# The per-account families, in the order a scrape shows them (name, help, type, label names), and
# the parts of their text. The settings' gauges are written as the key's are (they are never NaN).
_ACCOUNT_GAUGES = (*_GAUGES, *_SETTING_GAUGES)
_FAMILIES = (
    *((name, help_, "gauge", ("account", "account_id")) for name, help_, _ in _ACCOUNT_GAUGES),
    *((name, help_, "counter", ("account", "result")) for name, help_, _ in _COUNTERS),
)
_PARTS = (
    *(
        _Part(family, (column,), functools.partial(_write_key_gauge, name, documentation, column))
        for family, (name, documentation, column) in enumerate(_ACCOUNT_GAUGES)
    ),
    *(
        part
        for family, (name, documentation, results) in enumerate(_COUNTERS, len(_ACCOUNT_GAUGES))
        for part in (
            _Part(
                family,
                tuple(column for _, column in results),
                functools.partial(_write_counter, name, documentation, results),
            ),
            _Part(family, (), functools.partial(_write_created, name, documentation, results)),
        )
    ),
)


def _families(chunks: list[tuple[bytes, ...]], rows: list[_Row], *, created: bool) -> list[Metric]:
    """The per-account families: each its text, and its samples if something reads them."""
    families: list[Metric] = []
    for index, (name, documentation, kind, _) in enumerate(_FAMILIES):
        family = _AccountFamily(name, documentation, kind, chunks[index])
        family.fill = functools.partial(_samples, index, rows, created)
        families.append(family)
    return families


def _samples(index: int, rows: list[_Row], created: bool) -> Metric:
    """A family as prometheus-client's own types build it, sample by sample."""
    name, documentation, _, labels = _FAMILIES[index]
    if index < len(_ACCOUNT_GAUGES):
        column = _ACCOUNT_GAUGES[index][2]
        gauge = GaugeMetricFamily(name, documentation, labels=labels)
        for row in rows:
            if not math.isnan(value := row.values[column]):
                gauge.add_metric((row.account, row.account_id), value)
        return gauge
    results = _COUNTERS[index - len(_ACCOUNT_GAUGES)][2]
    counter = CounterMetricFamily(name, documentation, labels=labels)
    for row in rows:
        for result, column in results:
            counter.add_metric(
                (row.account, result), row.values[column], created=row.created if created else None
            )
    return counter


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
