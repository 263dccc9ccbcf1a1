"""Log lines as an operator reads them: every credential blanked out, and nothing else.

Redaction is a second line of defence behind messages built never to hold a secret, so it must
not cost the logs their meaning: a credential too short to be a real Cloudflare token (a test's or
a placeholder's) is blanked out only where it stands alone, never inside other words.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from cloudflare_sim import SimulatorThread
from rotator.config.credentials import CredentialSource
from rotator.logs import configure_logging
from tests.support.processes import environment, events, log_lines, rotator, write_config

MakeSimulator = Callable[..., SimulatorThread]
# Each test loads its own secrets: what a process has loaded stays loaded (and redacted) for good.
SHORT = "q7z"  # three characters: no real token is this short
LONG = "zq7LONGsecret-9f3e"


def test_a_short_token_leaves_the_words_around_it_alone(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """The real process with a three-letter token, "rot": once, rotation_started, key_rotated
    and every decision to rotate had it blanked out ("key_[REDACTED]ated")."""
    simulator = make_simulator(1, token="rot")  # its one account is due
    config = write_config(tmp_path / "config.yaml", simulator)
    result = rotator("run", "--once", "-c", str(config), env=environment("rot"))
    assert result.returncode == 0, result.stderr
    assert "[REDACTED]" not in result.stdout
    lines = log_lines(result.stdout)
    assert events(lines, "rotation_started")
    assert events(lines, "key_rotated")


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The daemon's log pipeline (JSON) into a buffer; the previous configuration restored after."""
    root = logging.getLogger()
    saved, handlers, level = structlog.get_config(), root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_short_credential_is_redacted_where_it_stands_alone_only(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    CredentialSource.token_env("SHORT").load({"SHORT": SHORT})
    log = structlog.get_logger("rotator")
    log.info("request_sent", header=f"Bearer {SHORT}", token=SHORT, query=f"token={SHORT}&x=1")
    log.info("words_around_it", message=f"{SHORT}ebra, ab{SHORT}, {SHORT}-suffix, prefix_{SHORT}")
    sent, words = json_logs()
    assert sent["header"] == "Bearer [REDACTED]"
    assert sent["token"] == "[REDACTED]"
    assert sent["query"] == "token=[REDACTED]&x=1"
    assert words["message"] == f"{SHORT}ebra, ab{SHORT}, {SHORT}-suffix, prefix_{SHORT}"


def test_a_long_credential_is_redacted_wherever_it_appears(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    CredentialSource.token_env("LONG").load({"LONG": LONG})
    structlog.get_logger("rotator").info("request_sent", message=f"x{LONG}y and Bearer {LONG}")
    (line,) = json_logs()
    assert line["message"] == "x[REDACTED]y and Bearer [REDACTED]"


def test_a_library_logging_through_the_standard_library_is_redacted_too(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    CredentialSource.token_env("SHORT").load({"SHORT": SHORT})
    logging.getLogger("aiohttp.client").warning("sent Authorization: Bearer %s to %sebra", SHORT, SHORT)
    (line,) = json_logs()
    assert line["event"] == f"sent Authorization: Bearer [REDACTED] to {SHORT}ebra"


def test_every_value_is_redacted_not_only_strings(json_logs: Callable[[], list[dict[str, Any]]]) -> None:
    """config_reloaded's ``added`` is a list; a secret made of digits renders as a number."""
    CredentialSource.token_env("LONG").load({"LONG": LONG})
    CredentialSource.token_env("DIGITS").load({"DIGITS": "987654321"})
    structlog.get_logger("rotator").info(
        "config_reloaded", added=[LONG, "production"], count=987654321, nested={"why": f"x {LONG}"}
    )
    (line,) = json_logs()
    assert line["added"] == ["[REDACTED]", "production"]
    assert line["count"] == "[REDACTED]"
    assert line["nested"] == {"why": "x [REDACTED]"}
