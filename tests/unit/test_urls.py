"""The one URL rule, for base_url, the certs URL and webhooks alike."""

from __future__ import annotations

import pytest

from rotator.config.urls import checked_url


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://api.cloudflare.com/client/v4", None),
        ("http://127.0.0.1:8787/client/v4", None),
        ("http://[::1]:8787/hook", None),
        ("http://localhost/hook", None),
        ("http://example.com/hook", "expected https:// for a host that is not loopback: the body"),
        ("http://localhost:80@evil.example/hook", "without a 'user:password@' part"),
        ("https://user:secret@hooks.example.com/", "without a 'user:password@' part"),
        ("ftp://example.com/", "expected an http(s) URL such as https://x.example"),
        ("not a url", "expected an http(s) URL"),
    ],
)
def test_http_only_to_loopback_and_never_a_user_or_password(url: str, refusal: str | None) -> None:
    if refusal is None:
        assert checked_url(url, example="https://x.example", carried="the body") == url
    else:
        with pytest.raises(ValueError, match=refusal.replace("(", r"\(").replace(")", r"\)")) as refused:
            checked_url(url, example="https://x.example", carried="the body")
        assert "secret" not in str(refused.value)  # the value itself is never repeated
