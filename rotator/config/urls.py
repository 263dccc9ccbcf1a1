"""The one rule for every URL rotator sends to: http(s), no ``user:password@``, and ``http://`` only
to a loopback host (a local simulator or mock), since what travels there would cross the network in
clear text.

Parsed with httpx, the parser of the clients that send there, so the host judged here is the host
connected to (a pattern took ``http://localhost:80@evil.example/`` for localhost; it is evil.example).
"""

from __future__ import annotations

import ipaddress

import httpx


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(value: str, *, example: str, carried: str, credentials_hint: str = "") -> str:
    """``value`` if it follows the rule; else ValueError saying what was expected.

    ``carried``: what would cross the network in clear text over ``http://`` ("the API token").
    """
    try:
        url: httpx.URL | None = httpx.URL(value)
    except (httpx.InvalidURL, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"expected an http(s) URL such as {example}")
    if url.userinfo:
        raise ValueError(
            "expected a URL without a 'user:password@' part: the host is what follows the '@', "
            "and credentials are never read from the config file" + credentials_hint
        )
    if url.scheme == "http" and not is_loopback(url.host):
        raise ValueError(
            f"expected https:// for a host that is not loopback: {carried} would otherwise cross the "
            "network in clear text"
        )
    return value
