"""Start-up: each command loads only what it needs, so the quick ones answer at once; and what
``rotator run`` builds at start-up is kept out of the garbage collector's way.

Timing a process start in a test would be flaky on a shared CI machine; what a command imports is
exact, and it is where the time goes (``python -X importtime``): pydantic and the config's models
about 150 ms, httpx, aiohttp, apscheduler and prometheus-client another 300 ms. bench/run.py
times the commands themselves (section 5 of bench/RESULTS.md).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator import cli
from rotator.config import model as config
from rotator.core.policy import Reason

# Loaded by the daemon and by the commands that talk to Cloudflare, and by nothing else. (Not httpx:
# rotator.config.model parses cloudflare.base_url with it, as the client will.)
NETWORK_AND_DAEMON = {
    "aiohttp",
    "apscheduler.schedulers",
    "prometheus_client",
    "rotator.check.checker",
    "rotator.cloudflare.client",
    "rotator.daemon",
    "rotator.metrics.families",
    "rotator.web.server",
}
# Loaded with the config (which parses base_url with httpx and imports the policy's settings).
CONFIG = {
    "pydantic",
    "yaml",
    "rotator.config.model",
    "structlog",
    "httpx",
    "rotator.core.policy",
    "rotator.ledger.ledger",
}


def _imported(*argv: str) -> set[str]:
    """The modules a `rotator ARGV` process has loaded when the command is done."""
    program = (
        "import json, sys\n"
        "from rotator.cli import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def _loaded(modules: set[str], wanted: set[str]) -> set[str]:
    return {name for name in wanted if name in modules or any(m.startswith(name + ".") for m in modules)}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"]])
def test_version_and_help_load_neither_the_config_nor_the_network(argv: list[str]) -> None:
    assert _loaded(_imported(*argv), NETWORK_AND_DAEMON | CONFIG) == set()


def test_validate_loads_the_config_and_not_the_network(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    # A webhook whose secret validate reads, as run would: still without the network's modules.
    path.write_text(
        "notify:\n  webhooks:\n    - {url: 'https://hooks.example.com/x', secret_env: HOOK_SECRET}\n"
        'accounts:\n  - name: production\n    account_id: "' + "0" * 32 + '"\n'
    )
    modules = _imported("validate", "-c", str(path))
    assert "rotator.config.model" in modules
    assert _loaded(modules, NETWORK_AND_DAEMON) == set()


def test_the_cli_default_config_path_is_the_configs() -> None:
    assert cli.DEFAULT_CONFIG_PATH == config.DEFAULT_CONFIG_PATH


def test_the_reasons_force_overrides_are_the_policys() -> None:
    assert set(cli._GAP) == {Reason.TOO_SOON, Reason.UNSETTLED}


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Returns what a test froze to the collector's care (gc.freeze is process-wide)."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_what_start_up_builds_is_frozen_out_of_the_collectors_sight() -> None:
    frozen = gc.get_freeze_count()
    with cli.long_lived():
        assert not gc.isenabled()  # no collection walks start-up's objects while they are made
        built = [[index] for index in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(built)
    assert not any(obj is built for obj in gc.get_objects())  # no later collection walks them


@pytest.mark.usefixtures("unfrozen")
def test_a_start_up_that_fails_leaves_the_collector_on(tmp_path: Path) -> None:
    assert cli.main(["run", "-c", str(tmp_path / "missing.yaml")]) == cli.EXIT_USAGE
    assert gc.isenabled()


def test_importing_rotator_leaves_the_processs_signals_alone() -> None:
    """A library import installs no handler: only the command line takes SIGHUP over early."""
    code = "import signal, rotator, rotator.daemon; print(signal.getsignal(signal.SIGHUP) == signal.SIG_DFL)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
