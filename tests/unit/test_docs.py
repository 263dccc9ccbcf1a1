"""The generated reference pages (docs/reference/) say what the code says now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rotator import docs
from rotator.config.reference import DESCRIPTIONS, SECTIONS


def test_every_generated_page_is_current() -> None:
    assert docs.stale() == [], "run `make docs` (python -m rotator.docs) and commit docs/reference/"


def test_a_page_that_differs_from_the_code_is_stale_and_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert docs.main(["--root", str(tmp_path)]) == 0
    assert docs.main(["--check", "--root", str(tmp_path)]) == 0
    page = tmp_path / "docs/reference/configuration.md"
    page.write_text(page.read_text().replace("`schedule.check_interval` | duration | `1h`", "x"))
    (tmp_path / "docs/reference/cli.md").unlink()
    assert docs.main(["--check", "--root", str(tmp_path)]) == 1
    said = capsys.readouterr().err
    assert "docs/reference/configuration.md: stale" in said
    assert "docs/reference/cli.md: stale" in said


def test_every_config_key_has_a_meaning_and_every_meaning_a_key() -> None:
    keys = {
        path for path, info in docs.config_keys() if not (docs._model_of(info.annotation) and "." not in path)
    }
    assert keys - set(DESCRIPTIONS) == set(), (
        "keys of the model without a meaning in rotator/config/reference.py"
    )
    assert set(DESCRIPTIONS) - keys == set(), "meanings in rotator/config/reference.py for no key"
    sections = {
        path for path, info in docs.config_keys() if "." not in path and docs._model_of(info.annotation)
    }
    assert {s.removesuffix("[]") for s in sections} == set(SECTIONS)


def test_the_pages_say_what_the_code_says() -> None:
    pages = docs.pages()
    config = pages["docs/reference/configuration.md"]
    assert "| `schedule.check_interval` | duration | `1h` | > 0s |" in config
    assert "| `rotation.key_rotation_interval_days` | integer or null | unset | >= 21; <= 365 |" in config
    assert "| `accounts[].account_id` | string | required |" in config
    metrics = pages["docs/reference/metrics.md"]
    assert "| `rotator_checks_total` | counter | `account`, `result` |" in metrics
    assert "| `rotator_api_requests_total` | counter | `code`, `endpoint`, `method` |" in metrics
    assert "`rotator_notifications_total`" in metrics and "`rotator_jwks_keys`" in metrics
    events = pages["docs/reference/events.md"]
    assert "| `rotation_skipped` | info, warning |" in events
    assert "| `key_rotated` | `com.rotator.key_rotated` |" in events
    cli = pages["docs/reference/cli.md"]
    assert "| `--force` |" in cli and "## rotator demo" in cli


def _shown(path: str, node: object) -> bool:
    parts = path.replace("[]", "").split(".")

    def walk(value: object, rest: list[str]) -> bool:
        if not rest:
            return True
        if isinstance(value, list):
            return any(walk(item, rest) for item in value)
        return isinstance(value, dict) and rest[0] in value and walk(value[rest[0]], rest[1:])

    return walk(node, parts)


def test_config_example_shows_every_key_of_the_model() -> None:
    """config.example.yaml, the third copy of the reference, has every key (a credential or window
    key may be shown on an account instead of as the default)."""
    example = yaml.safe_load((docs.ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    missing = []
    for path, _ in docs.config_keys():
        elsewhere = re.sub(r"^(cloudflare|rotation)\.", "accounts[].", path)
        if not (_shown(path, example) or _shown(elsewhere, example)):
            missing.append(path)
    assert missing == []
