"""The redactor (rotator.redaction): what it removes, what it leaves, and the rule for values that
may be secrets pasted in place of a name. A fresh Redactor each test: the process's own keeps every
secret it has seen."""

from __future__ import annotations

import html
import json

import pytest

from rotator.redaction import INDEXED_FROM, Redactor, could_be_secret

TOKEN = "Zq8vN3xK7mP2rT9wL4yB6cD1fG5hJ0kS-aE_uQ2"


@pytest.fixture
def redactor() -> Redactor:
    fresh = Redactor()
    fresh.remember(TOKEN)
    return fresh


def test_a_loaded_secret_is_removed_in_every_escaped_form() -> None:
    secret = 'pa"ss&<word>%2F'
    redactor = Redactor()
    redactor.remember(secret)
    for text in (secret, json.dumps(secret), html.escape(secret), 'pa"ss&<word>/'):
        assert "pa" not in redactor.text(f"x {text} y"), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("via http://bob:s3cret@proxy:3128 failed", "via http://[REDACTED]@proxy:3128 failed"),
        ("url='https://token@host/x'", "url='https://[REDACTED]@host/x'"),
        ("Authorization: Bearer abcdefghijklmnop0123", "Authorization: Bearer [REDACTED]"),
        ("X-Auth-Key: 0123456789abcdef", "X-Auth-Key: [REDACTED]"),
        ('{"api_token": "abcdefgh12345678"}', '{"api_token": "[REDACTED]"}'),
        ("?token=abcdefgh12345678&x=1", "?token=[REDACTED]&x=1"),
        # What must stay: words, short values, a mail address, rotator's own field names.
        ("a bearer token is required (http.auth_token_file)", None),
        ("api_token_env: not an environment variable name", None),
        ("mail user@example.com, see https://example.com/x", None),
        ("key_rotation_interval_days: 42, token: short", None),
    ],
)
def test_credential_looking_text_is_removed_and_nothing_else(
    redactor: Redactor, text: str, expected: str | None
) -> None:
    assert redactor.text(text) == (text if expected is None else expected)


def test_every_value_is_redacted_not_only_strings(redactor: Redactor) -> None:
    redactor.remember("987654321")
    value = {"added": [TOKEN, "production"], "count": 987654321, TOKEN: (1, f"x{TOKEN}")}
    assert redactor.value(value) == {
        "added": ["[REDACTED]", "production"],
        "count": "[REDACTED]",
        "[REDACTED]": [1, "x[REDACTED]"],
    }


def test_a_proxy_variables_password_is_known(redactor: Redactor) -> None:
    redactor.remember_proxies({"HTTPS_PROXY": "http://bob:pr0xy-pass@proxy:3128", "no_proxy": "x"})
    assert redactor.text("proxy said pr0xy-pass") == "proxy said [REDACTED]"
    assert redactor.is_secret("bob:pr0xy-pass")


def test_bytes_come_back_unchanged_when_nothing_is_redacted(redactor: Redactor) -> None:
    body = b'{"accounts": []}'
    assert redactor.data(body) is body
    assert redactor.loaded_secrets(f"x {TOKEN}".encode()) == b"x [REDACTED]"


@pytest.mark.parametrize(
    "value",
    [
        "CLOUDFLARE_API_TOKEN",
        "cloudflare_token",
        "/var/run/secrets/cloudflare/token",
        "/etc/rotator/Token.txt",
        "HOOK_SECRET_2",
    ],
)
def test_a_name_or_path_reads_as_one(value: str) -> None:
    assert not could_be_secret(value)


@pytest.mark.parametrize(
    "value",
    [
        TOKEN,
        "Zq8vN3xK7mP2rT9wL4yB6cD1fG5hJ0kSaEuQ2xY7",  # letters and digits only: a valid variable name
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9",  # hex, one case
        "with space",
        "",
    ],
)
def test_a_secret_reads_as_one(value: str) -> None:
    assert could_be_secret(value)


def test_many_secrets_are_found_through_the_index_wherever_they_stand() -> None:
    """With INDEXED_FROM secrets or more, those of token characters are found by an index of their
    first characters: inside a longer word too, the longest first, and in bytes as in text."""
    many = [f"tok{i:05d}-{'x' * 30}" for i in range(INDEXED_FROM * 4)]
    redactor = Redactor()
    redactor.remember_all([*many, "pass word!", "abc"])
    assert redactor.text(f"a{many[7]}b, Bearer {many[-1]}") == "a[REDACTED]b, Bearer [REDACTED]"
    assert redactor.text("the pass word! and abc") == "the [REDACTED] and [REDACTED]"
    assert redactor.loaded_secrets(f"{many[3]}|pass word!".encode()) == b"[REDACTED]|[REDACTED]"
    assert redactor.text(many[3][:-1]) == many[3][:-1]  # a secret's beginning is not the secret


def test_a_traceback_is_printed_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """rotator's sys.excepthook (installed by rotator.cli.main): a bug's traceback may quote a URL."""
    from rotator.cli import _redacted_traceback

    try:
        raise RuntimeError("proxy http://bob:pw-in-a-traceback@proxy failed")
    except RuntimeError as exc:
        _redacted_traceback(RuntimeError, exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "RuntimeError: proxy http://[REDACTED]@proxy failed" in err and "pw-in" not in err
