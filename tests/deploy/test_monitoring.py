"""The monitoring rotator ships: alert rules, the Grafana dashboard, and both against real tools.

- The rules pass `promtool check rules`, and `promtool test rules` runs the unit tests in
  tests/promtool/ (every alert, firing and not firing). The PrometheusRule carries the same groups.
- The dashboard is loaded by grafana-foundation-sdk's model and checked against its types, so a
  malformed panel fails; every PromQL expression in it passes promtool.
- End to end: the real `prometheus` server scrapes the real daemon running against the simulator,
  with the rules loaded, and the failing-checks alert goes pending under an injected fault.

Tests that need `prometheus` or `promtool` (Debian package `prometheus`) are skipped where it is
missing on a developer's machine, and fail in CI (`CI` set), which installs it.
"""

from __future__ import annotations

import copy
import enum
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from grafana_foundation_sdk.cog import plugins as grafana_plugins
from grafana_foundation_sdk.cog import runtime as grafana_runtime
from grafana_foundation_sdk.cog import variants as grafana_variants
from grafana_foundation_sdk.cog.encoder import JSONEncoder as GrafanaJSONEncoder
from grafana_foundation_sdk.models import dashboard as grafana_dashboard
from grafana_foundation_sdk.models import prometheus as grafana_prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rotator-rules.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "rotator-dashboard.json"
PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.test.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks"
# Absolute, so that a link in a page or a chat message leads somewhere; a placeholder to replace
# (docs/monitoring.md, "Runbook links"), set for the PrometheusRule by deploy/kubernetes/base/runbook.yaml.
RUNBOOK_BASE = "https://github.com/your-org/rotator/blob/main"

# The metrics the daemon exports (issue 2's contract), as Prometheus stores their samples.
CONTRACT_METRICS = {
    "rotator_key_last_rotation_timestamp_seconds",
    "rotator_key_next_rotation_timestamp_seconds",
    "rotator_key_rotation_interval_seconds",
    "rotator_last_successful_check_timestamp_seconds",
    "rotator_last_successful_rotation_timestamp_seconds",
    "rotator_last_failed_rotation_timestamp_seconds",
    "rotator_checks_total",
    "rotator_rotations_total",
    "rotator_api_requests_total",
    "rotator_api_request_duration_seconds_bucket",
    "rotator_api_request_duration_seconds_sum",
    "rotator_api_request_duration_seconds_count",
    "rotator_accounts",
    "rotator_build_info",
    "rotator_check_interval_seconds",
    "rotator_rotation_threshold_seconds",
    "rotator_dry_run",
    # The rotation ledger (issue 9).
    "rotator_rotation_unconfirmed",
    # The publication check (issue 11).
    "rotator_jwks_keys",
    "rotator_key_publication_late",
    "rotator_config_last_reload_successful",
    # Leader election (issue 10).
    "rotator_leader",
    "rotator_leader_transitions_total",
}
# Alerts about the whole process or the replicas together, which have no account label to name.
PROCESS_ALERTS = {
    "RotatorDown",
    "RotatorAbsent",
    "RotatorRateLimited",
    "RotatorConfigReloadRefused",
    "RotatorNoLeader",
    "RotatorMultipleLeaders",
    "RotatorLeaderFlapping",
}
# What the dashboard's Grafana variables stand for when its queries are checked outside Grafana.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$account": ".*",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"`{tool}` is not installed (Debian package prometheus: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it (.ci/run), so this test may not be skipped")
        pytest.skip(reason)
    return path


@pytest.fixture
def promtool() -> str:
    return _need("promtool")


@pytest.fixture
def prometheus() -> str:
    return _need("prometheus")


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(RULES)["groups"] for rule in group["rules"]]


def _alert_names() -> list[str]:
    return [rule["alert"] for rule in _alerts()]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable, variables substituted."""
    found = [
        (f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert match, f"variable {variable['name']}: unexpected query {query!r}"
            found.append((f"variable {variable['name']}", match.group(1)))
    return [(where, _substitute(expr)) for where, expr in found]


def _substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\brotator_[a-z_]+", expr))


# --- Alert rules ---------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert PROMTOOL_TESTS, "no promtool unit tests in tests/promtool/"
    result = _run(promtool, "test", "rules", *map(str, PROMTOOL_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_unit_tests_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in PROMTOOL_TESTS:
        spec = _load_yaml(path)
        assert [(path.parent / f).resolve() for f in spec["rule_files"]] == [RULES.resolve()]
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(_alert_names()) - firing == set(), "alerts without a firing test"
    assert set(_alert_names()) - silent == set(), "alerts without a not-firing test"


def test_required_alerts_exist() -> None:
    assert set(_alert_names()) >= {
        "RotatorDown",
        "RotatorAbsent",
        "RotatorChecksFailing",
        "RotatorRotationFailed",
        "RotatorCloudflareWillRotateFirst",
        "RotatorKeyOverdue",
        "RotatorRateLimited",
        "RotatorKeyNotPublished",
        "RotatorJWKSKeyCount",
        "RotatorKeyRotatedElsewhere",
        "RotatorRotationUnconfirmed",
        "RotatorConfigReloadRefused",
        "RotatorNoLeader",
        "RotatorMultipleLeaders",
        "RotatorLeaderFlapping",
    }


@pytest.mark.parametrize("alert", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_says_what_and_where_and_links_its_runbook(alert: dict[str, Any]) -> None:
    annotations = alert["annotations"]
    assert alert["labels"]["severity"] in {"warning", "critical"}
    assert annotations["summary"]
    assert annotations["description"]
    if alert["alert"] not in PROCESS_ALERTS:
        assert "{{ $labels.account }}" in annotations["description"]
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}/docs/runbooks/{alert['alert']}.md"
    assert _metric_names(alert["expr"]) <= CONTRACT_METRICS


def test_every_alert_has_a_runbook_page_and_every_page_an_alert() -> None:
    pages = {p.stem: p.read_text() for p in RUNBOOKS.glob("*.md")}
    assert set(pages) == set(_alert_names()), "docs/runbooks/<alert>.md, one per alert"
    for alert, text in pages.items():
        assert text.startswith(f"# {alert}\n"), alert
        assert "What to do" in text or "what to do" in text.lower(), alert


def test_prometheus_rule_carries_the_same_groups() -> None:
    rule = _load_yaml(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == "rotator"
    assert rule["spec"]["groups"] == _load_yaml(RULES)["groups"]


# --- Grafana dashboard ---------------------------------------------------------------------------


def _check_types(value: Any, hint: Any, where: str, errors: list[str]) -> None:
    """Check a value decoded by grafana-foundation-sdk against the model's type hints."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return
    if origin in (typing.Union, types.UnionType):
        attempts = []
        for option in typing.get_args(hint):
            attempt: list[str] = []
            _check_types(value, option, where, attempt)
            if not attempt:
                return
            if option is not type(None):
                attempts.append(attempt)
        # Report the option that came closest (fewest complaints), not a bare "none of".
        errors.extend(min(attempts, key=len))
    elif origin is typing.Literal:
        if value not in typing.get_args(hint):
            errors.append(f"{where}: {value!r} is not one of {typing.get_args(hint)}")
    elif origin is list:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {value!r}")
            return
        (item,) = typing.get_args(hint)
        for index, element in enumerate(value):
            _check_types(element, item, f"{where}[{index}]", errors)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {value!r}")
    elif hint is type(None):
        if value is not None:
            errors.append(f"{where}: expected null, got {value!r}")
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value not in {member.value for member in hint}:
            errors.append(f"{where}: {value!r} is not one of {[m.value for m in hint]}")
    elif hint is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean, got {value!r}")
    elif hint in (int, float):
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong or (hint is int and isinstance(value, float) and not value.is_integer()):
            errors.append(f"{where}: expected a number, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {value!r}")
    elif hint is grafana_variants.Dataquery:
        if not isinstance(value, grafana_prometheus.Dataquery):
            errors.append(f"{where}: not a Prometheus query (datasource type?): {value!r}")
        else:
            _check_types(value, grafana_prometheus.Dataquery, where, errors)
    elif isinstance(hint, type) and hasattr(hint, "to_json"):
        if isinstance(value, dict):  # from_json leaves some nested objects (transformations) raw
            try:
                value = hint.from_json(value)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                errors.append(f"{where}: not a {hint.__name__}: {exc!r}")
                return
        if not isinstance(value, hint):
            errors.append(f"{where}: expected {hint.__name__}, got {value!r}")
            return
        for name, field_hint in typing.get_type_hints(hint).items():
            _check_types(getattr(value, name), field_hint, f"{where}.{name}", errors)
    else:
        errors.append(f"{where}: no check for type {hint}")


def _dropped_keys(original: Any, decoded: Any, where: str) -> list[str]:
    """Keys of the JSON that the model does not know (a typo, or a field in the wrong place)."""
    if isinstance(original, dict) and isinstance(decoded, dict):
        dropped = [f"{where}.{key}" for key in original if key not in decoded]
        for key in original.keys() & decoded.keys():
            dropped += _dropped_keys(original[key], decoded[key], f"{where}.{key}")
        return dropped
    if isinstance(original, list) and isinstance(decoded, list):
        return [
            key
            for index, (a, b) in enumerate(zip(original, decoded, strict=True))
            for key in _dropped_keys(a, b, f"{where}[{index}]")
        ]
    return []


def _grafana_model_errors(data: dict[str, Any]) -> list[str]:
    """Load a dashboard with grafana-foundation-sdk and list everything its model rejects."""
    grafana_plugins.register_default_plugins()
    try:
        model = grafana_dashboard.Dashboard.from_json(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return [f"the model cannot load the dashboard: {exc!r}"]
    errors: list[str] = []
    _check_types(model, grafana_dashboard.Dashboard, "dashboard", errors)
    panels = [
        panel
        for top in model.panels or []
        for panel in ([top] if isinstance(top, grafana_dashboard.Panel) else top.panels or [])
    ]
    for panel in panels:
        where = f"panel {panel.id_val} ({panel.title!r})"
        if grafana_runtime.panelcfg_config(panel.type_val) is None:
            errors.append(f"{where}: unknown panel type {panel.type_val!r}")
            continue
        # Options and custom field config are typed per panel type, and held as `object`.
        custom = panel.field_config.defaults.custom if panel.field_config else None
        for name, value in (("options", panel.options), ("fieldConfig.defaults.custom", custom)):
            if isinstance(value, dict):
                errors.append(f"{where}: {name} were not decoded for {panel.type_val!r}")
            elif value is not None:
                _check_types(value, type(value), f"{where}.{name}", errors)
    # The datasource variable and Grafana's export bookkeeping are not part of the model.
    data = {key: value for key, value in data.items() if key not in {"__inputs", "__requires"}}
    encoded = json.loads(json.dumps(model, cls=GrafanaJSONEncoder))
    errors += [f"{key}: not a field of the model" for key in _dropped_keys(data, encoded, "")]
    return errors


def test_dashboard_loads_in_the_grafana_model_without_errors() -> None:
    assert _grafana_model_errors(_dashboard()) == []


def _panel(data: dict[str, Any], title: str) -> dict[str, Any]:
    return next(panel for panel in _panels(data) if panel["title"] == title)


def _break_grid(data: dict[str, Any]) -> None:
    _panel(data, "Accounts by urgency")["gridPos"]["w"] = "full"


def _break_type(data: dict[str, Any]) -> None:
    _panel(data, "Rotation interval")["type"] = "bargauges"


def _break_legend(data: dict[str, Any]) -> None:
    _panel(data, "Check freshness")["options"]["legend"]["displayMode"] = "sideways"


def _break_key(data: dict[str, Any]) -> None:
    panel = _panel(data, "API requests by code")
    panel["fieldconfig"] = panel.pop("fieldConfig")


def _break_datasource(data: dict[str, Any]) -> None:
    _panel(data, "Rotations by result")["datasource"]["type"] = "loki"


def _break_missing_type(data: dict[str, Any]) -> None:
    del _panel(data, "Accounts")["type"]


@pytest.mark.parametrize(
    "damage",
    [_break_grid, _break_type, _break_legend, _break_key, _break_datasource, _break_missing_type],
)
def test_a_malformed_panel_is_rejected(damage: Callable[[dict[str, Any]], None]) -> None:
    data = copy.deepcopy(_dashboard())
    damage(data)
    assert _grafana_model_errors(data) != []


def test_dashboard_is_importable_with_a_prometheus_datasource_variable() -> None:
    data = _dashboard()
    assert data["uid"] and data["title"] and isinstance(data["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _panels(data)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in _panels(data):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, panel["title"]
                assert target["expr"].strip() and target["refId"], panel["title"]


def test_dashboard_has_the_panels_operators_need() -> None:
    exprs = {
        panel["title"]: " ".join(target["expr"] for target in panel["targets"])
        for panel in _panels(_dashboard())
        if panel["type"] != "row"
    }
    wanted = {
        "Days until Cloudflare rotates on its own": "rotator_key_next_rotation_timestamp_seconds",
        "Time since last rotation": "rotator_key_last_rotation_timestamp_seconds",
        "Rotation interval": "rotator_key_rotation_interval_seconds",
        "Rotations by result": "rotator_rotations_total",
        "Checks by result": "rotator_checks_total",
        "API requests by code": "rotator_api_requests_total",
        "API latency percentiles": "rotator_api_request_duration_seconds_bucket",
        "Check freshness": "rotator_last_successful_check_timestamp_seconds",
        "Accounts by urgency": "rotator_key_next_rotation_timestamp_seconds",
        "Leader": "rotator_leader",
        "Leadership changes": "rotator_leader_transitions_total",
    }
    for title, metric in wanted.items():
        assert metric in exprs.get(title, ""), f"no panel {title!r} showing {metric}"
    table = _panel(_dashboard(), "Accounts by urgency")
    assert table["options"]["sortBy"] == [{"displayName": "Days until Cloudflare rotates", "desc": False}]
    renamed = table["transformations"][1]["options"]["renameByName"].values()
    assert "Days until Cloudflare rotates" in renamed


# The per-account gauges: under leader election only the leader's are current, a follower keeps
# what it saw while it led. Counters are left alone: a follower's do not move.
PER_ACCOUNT_GAUGES = {
    "rotator_key_next_rotation_timestamp_seconds",
    "rotator_key_last_rotation_timestamp_seconds",
    "rotator_key_rotation_interval_seconds",
    "rotator_last_successful_check_timestamp_seconds",
    "rotator_last_successful_rotation_timestamp_seconds",
    "rotator_last_failed_rotation_timestamp_seconds",
    "rotator_rotation_threshold_seconds",
    "rotator_rotation_unconfirmed",
    "rotator_jwks_keys",
    "rotator_key_publication_late",
}
FOLLOWERS_LEFT_OUT = "unless on (job, instance) (rotator_leader == 0)"


def test_alerts_and_panels_on_account_figures_leave_followers_out() -> None:
    """A follower's figures are as old as its last leadership: an alert on them would fire for a key
    the leader rotated long ago, and a panel would show the account twice, once out of date."""
    exprs = [(rule["alert"], rule["expr"]) for rule in _alerts()]
    exprs += [(where, expr) for where, expr in _dashboard_queries(_dashboard())]
    using = [(where, expr) for where, expr in exprs if _metric_names(expr) & PER_ACCOUNT_GAUGES]
    assert len(using) >= 10, using
    missing = [where for where, expr in using if FOLLOWERS_LEFT_OUT not in " ".join(expr.split())]
    assert missing == [], f"these read a follower's stale figures: {missing}"


def test_dashboard_counts_each_account_once_whatever_the_replicas() -> None:
    # Every replica exports the config's per-account series: a plain sum would count each twice.
    for title in ("Accounts", "Accounts in dry run"):
        (target,) = _panel(_dashboard(), title)["targets"]
        assert re.match(r"sum\(max by \(namespace, job(, account)?\) \(rotator_", target["expr"]), target[
            "expr"
        ]


def test_dashboard_uses_only_exported_metrics() -> None:
    for where, expr in _dashboard_queries(_dashboard()):
        unknown = _metric_names(expr) - CONTRACT_METRICS
        assert not unknown, f"{where} uses metrics rotator does not export: {unknown}"


def test_every_dashboard_query_passes_promtool(promtool: str, tmp_path: Path) -> None:
    queries = _dashboard_queries(_dashboard())
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


# --- End to end: the real Prometheus scraping the real daemon --------------------------------------

TOKEN = "e2e-monitoring-token"  # the simulator's, not a secret
DEADLINE = 90.0  # seconds for each wait below; every wait polls and returns as soon as it can


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process:
    """A child process whose output goes to a file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log_file, env=env, cwd=ROOT)
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
            self._log_file.write(line)
            self._log_file.flush()

    def first_line(self, timeout: float) -> bytes:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.proc.args} printed nothing in {timeout} s: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._reader.join(timeout=15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._log_file.close()


def _wait_for(what: str, probe: Callable[[], Any], processes: list[_Process]) -> Any:
    """Poll `probe` until it returns something truthy, or fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for process in processes:
            if process.proc.poll() is not None:
                pytest.fail(f"{process.proc.args} exited while waiting for {what}: {process.tail()}")
        try:
            result = probe()
        except httpx.HTTPError as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(0.25)  # polling interval, not a wait for time to pass
    logs = "\n".join(f"--- {p.proc.args[:3]}\n{p.tail()}" for p in processes)
    pytest.fail(f"timed out waiting for {what} (last error: {last_error!r})\n{logs}")


def test_prometheus_scrapes_the_daemon_and_the_failing_checks_alert_goes_pending(
    prometheus: str, tmp_path: Path
) -> None:
    processes: list[_Process] = []
    http = httpx.Client(timeout=10, trust_env=False)  # loopback only: no proxy from the env
    try:
        simulator = _Process(
            [
                sys.executable,
                "-m",
                "cloudflare_sim",
                "--listen",
                "127.0.0.1:0",
                "--accounts",
                "3",
                "--token",
                TOKEN,
                "--day-seconds",
                "86400",
            ],
            tmp_path / "simulator.log",
        )
        processes.append(simulator)
        sim = json.loads(simulator.first_line(timeout=30))
        names = [f"e2e-{index}" for index in range(len(sim["accounts"]))]

        # The simulator makes account 0 due within 2 days: below the default threshold of 3 days,
        # so the daemon rotates it at its first check (and, 7 days apart at least, only then).
        accounts = [
            {"name": name, "account_id": account["account_id"]}
            for name, account in zip(names, sim["accounts"], strict=True)
        ]
        metrics_port = _free_port()
        config = {
            "cloudflare": {"base_url": sim["base_url"]},
            "schedule": {"check_interval": "1s", "jitter": "0s"},
            "http": {"listen": f"127.0.0.1:{metrics_port}"},
            "logging": {"format": "json"},
            # The simulator's certs endpoints on loopback: the publication alerts' series come from them.
            "publication": {"certs_url": sim["certs_url"]},
            "accounts": accounts,
        }
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "CLOUDFLARE_API_TOKEN": TOKEN}
        daemon = _Process(
            [sys.executable, "-m", "rotator", "run", "-c", str(config_path)],
            tmp_path / "rotator.log",
            env=env,
        )
        processes.append(daemon)

        prom_port = _free_port()
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "rotator",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        prom_config_path = tmp_path / "prometheus.yml"
        prom_config_path.write_text(yaml.safe_dump(prom_config))
        server = _Process(
            [
                prometheus,
                f"--config.file={prom_config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            tmp_path / "prometheus.log",
        )
        processes.append(server)
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def query(expr: str) -> list[dict[str, Any]]:
            body = http.get(f"{api}/query", params={"query": expr}).raise_for_status().json()
            assert body["status"] == "success", body
            return list(body["data"]["result"])

        def accounts_of(expr: str) -> set[str]:
            return {sample["metric"].get("account", "") for sample in query(expr)}

        def checks_failing() -> list[dict[str, Any]]:
            alerts = http.get(f"{api}/alerts").raise_for_status().json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "RotatorChecksFailing"]

        # The per-account series arrive, with a successful check of every account.
        _wait_for(
            "a successful check of every account in Prometheus",
            lambda: (
                accounts_of('rotator_last_successful_check_timestamp_seconds{job="rotator"} > 0')
                == set(names)
            ),
            processes,
        )
        for metric in ("rotator_key_next_rotation_timestamp_seconds", "rotator_dry_run"):
            assert accounts_of(f'{metric}{{job="rotator"}}') == set(names), metric
        assert accounts_of('rotator_checks_total{job="rotator", result="error"}') == set(names)
        assert query('up{job="rotator"} == 1'), "Prometheus does not see rotator up"

        # A rotation shows up in rotator_rotations_total.
        _wait_for(
            "a rotation of e2e-0 in rotator_rotations_total",
            lambda: query('rotator_rotations_total{account="e2e-0", result="success"} > 0'),
            processes,
        )

        # Every metric the rules and the dashboard use is one the real daemon exports, and every
        # dashboard query runs against the real data.
        exported = set(http.get(f"{api}/label/__name__/values").raise_for_status().json()["data"])
        used = {name for rule in _alerts() for name in _metric_names(rule["expr"])}
        queries = _dashboard_queries(_dashboard())
        used |= {name for _, expr in queries for name in _metric_names(expr)}
        assert used - exported == set(), "used but not exported by the running daemon"
        for _, expr in queries:
            query(expr)  # asserts status success
        for title in ("Days until Cloudflare rotates on its own", "Rotation interval"):
            panel = _panel(_dashboard(), title)
            assert accounts_of(_substitute(panel["targets"][0]["expr"])) == set(names), title

        assert checks_failing() == [], "RotatorChecksFailing active before any fault"

        # A persistent failure of every GET makes the failing-checks alert go pending: the last
        # successful check gets older than 3 check intervals (3 s); `for: 5m` keeps it pending.
        fault = {"op": "get", "kind": "status", "status": 500}
        http.post(f"{sim['admin_url']}/faults", json=fault).raise_for_status()
        pending = _wait_for(
            "RotatorChecksFailing to go pending",
            lambda: [a for a in checks_failing() if a["state"] in {"pending", "firing"}],
            processes,
        )
        assert {alert["labels"]["account"] for alert in pending} <= set(names)
        assert pending[0]["labels"]["severity"] == "warning"
        assert pending[0]["annotations"]["summary"].startswith("Checks of account e2e-")
    finally:
        http.close()
        for process in reversed(processes):
            process.stop()


def test_the_monitoring_page_lists_every_runbook_with_its_alerts_severity() -> None:
    text = (ROOT / "docs" / "monitoring.md").read_text()
    rows = re.findall(r"^\| \[(\w+)\]\(runbooks/(\w+)\.md\) \| (\w+) \|", text, flags=re.MULTILINE)
    alerts = _alerts()
    assert [(a, a) for a in _alert_names()] == [(name, page) for name, page, _ in rows]
    assert [a["labels"]["severity"] for a in alerts] == [severity for _, _, severity in rows]
