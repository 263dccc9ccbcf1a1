"""The one redaction boundary: every surface rotator writes passes through ``REDACTOR``.

rotator's messages are built never to hold a secret; this is the second line of defence, for what
comes from elsewhere (Cloudflare echoing the bearer token in ``errors[].message``, a library
printing a proxy URL with its password). It is applied where data leaves the process, once per
surface:

- log lines (``rotator.logs``: every value, strings, numbers, lists and mappings alike);
- every body the HTTP server sends (``/``, ``/status``, ``/readyz``, ``/healthz``, errors) and the
  ``/metrics`` page (``rotator.web.server``);
- what the commands print (``rotator.cli``: ``check``, ``check --json``, ``rotate``, errors);
- the ledger as written to its state file or ConfigMap (``rotator.ledger.ledger.encode``);
- every webhook body (``rotator.after.notify.encode``).

It removes:

- every secret this process has loaded: API tokens, legacy emails and keys, webhook secrets, the
  HTTP bearer token (``remember``, called where each is read, at start-up and at every reload; a
  secret once loaded stays redacted for the life of the process, since records made before a
  reload may still carry it), and the password of a proxy variable (``remember_proxies``);
- the userinfo of any URL (``scheme://user:password@host`` becomes ``scheme://[REDACTED]@host``);
- what reads as a credential echoed back: ``Bearer <16 or more token characters>``, and
  ``X-Auth-Key``, ``api_token``, ``api_key``, ``password``, ``secret``, ``token`` followed by ``:``
  or ``=`` and a value of 8 or more characters.

A secret is blanked out wherever it appears inside other text, but one shorter than
MIN_REDACTED_LENGTH only where it stands alone: not inside a longer run of letters, digits, '-' and
'_' (the characters of Cloudflare's tokens). Cloudflare's tokens and keys are 37 to 40 characters,
so a short one is a test's or a placeholder's; blanked out inside words it mangled every log line
("rot" made key_rotated "key_[REDACTED]ated"). Where a short one appears as itself ("Bearer abc",
a field that is exactly it), it still is.

Each secret is also known in the forms the surfaces escape it into (JSON's ``\\u`` and ``\\"``,
HTML's entities, a URL's percent-encoding), so that redacting the text of a JSON or HTML body finds
it. Redacting text that holds none of these costs a few substring searches: the patterns run only
when a cheap test (an ``@``, the word ``bearer``, ...) says they may match.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "[REDACTED]"
# Secrets shorter than this are blanked out only where they stand alone (see the module docstring).
MIN_REDACTED_LENGTH = 8
# The environment variables httpx (and most HTTP libraries) take a proxy from; any may carry
# ``user:password@``.
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")

# scheme://userinfo@ : the userinfo ends at the first character a URL's authority cannot hold.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://)[^\s/?#@\"'<>\[\]]+@")
# A bearer token echoed back: 16 or more token characters (shorter is a word: "a bearer token is").
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[A-Za-z0-9._~+/=-]{16,}")
# key: value or key=value for the keys a credential travels under.
_KEYED = re.compile(
    r"(?i)\b(x-auth-key|x-auth-email|api[_-]?token|api[_-]?key|password|passwd|secret|token)"
    r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\s\"'\\,;&<>]{8,}"
)
# Words _KEYED may match, searched for first (the page at 10,000 accounts is megabytes: the pattern
# is run only on a text that holds one).
_KEYED_HINTS = ("x-auth-", "token", "api_key", "api-key", "apikey", "pass", "secret")


@dataclass(frozen=True)
class _Known:
    """What the redactor knows at one moment; replaced whole, never changed, so readers in any
    thread see a consistent set without taking a lock."""

    anywhere: tuple[str, ...] = ()  # every secret of MIN_REDACTED_LENGTH or more, longest first
    alone: frozenset[str] = frozenset()
    alone_pattern: re.Pattern[str] | None = None
    # With many secrets (INDEXED_FROM), those made of token characters are found through an index
    # of their first MIN_REDACTED_LENGTH characters instead of one search each (``_Index``).
    searched: tuple[str, ...] = ()
    index: _Index | None = None


@dataclass(frozen=True)
class _Index:
    """Secrets made of token characters, by their first MIN_REDACTED_LENGTH characters. Such a
    secret lies inside a run of token characters at least as long as the shortest of them: only
    those runs are looked into, a window at a time. A search a secret costs ~1 ms a MB: with 10,000
    accounts on their own tokens that was 2 ms a log line and a minute for /status."""

    by_prefix: dict[str, tuple[str, ...]]
    runs: re.Pattern[str]

    @classmethod
    def of(cls, secrets: Iterable[str]) -> _Index:
        by_prefix: dict[str, list[str]] = {}
        for secret in secrets:
            by_prefix.setdefault(secret[:MIN_REDACTED_LENGTH], []).append(secret)
        shortest = min(len(s) for group in by_prefix.values() for s in group)
        return cls(
            {k: tuple(sorted(v, key=len, reverse=True)) for k, v in by_prefix.items()},
            re.compile(rf"[A-Za-z0-9_-]{{{shortest},}}"),
        )

    def found(self, text: str) -> set[str]:
        found: set[str] = set()
        width = MIN_REDACTED_LENGTH
        # finditer, not findall: a match at a time, so a thread doing this on a page of megabytes
        # lets the event loop's thread run between two.
        for match in self.runs.finditer(text):
            run = match.group()
            for i in range(len(run) - width + 1):
                group = self.by_prefix.get(run[i : i + width])
                if group is not None:
                    found.update(s for s in group if run.startswith(s, i))
        return found


# Below this many secrets, each is searched for on its own (faster for a few).
INDEXED_FROM = 16
_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+")


class Redactor:
    """Every secret this process has loaded, and the patterns of credential-looking text."""

    def __init__(self) -> None:
        self._known = _Known()
        self._lock = threading.Lock()

    def remember(self, secret: str) -> None:
        """Blank ``secret`` out of every surface from now on (each of its escaped forms too)."""
        self.remember_all((secret,))

    def remember_all(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in _forms(secret)}
        with self._lock:
            known = self._known
            anywhere = set(known.anywhere) | {f for f in forms if len(f) >= MIN_REDACTED_LENGTH}
            alone = known.alone | {f for f in forms if len(f) < MIN_REDACTED_LENGTH}
            if anywhere == set(known.anywhere) and alone == known.alone:
                return
            pattern = known.alone_pattern
            if alone != known.alone:
                # Longest first: of two secrets where one begins the other, the longer one matches.
                either = "|".join(re.escape(s) for s in sorted(alone, key=len, reverse=True))
                pattern = re.compile(rf"(?<![\w-])(?:{either})(?![\w-])")
            # Longest first here too, so a secret inside another is not replaced before it.
            ordered = tuple(sorted(anywhere, key=len, reverse=True))
            indexed = [f for f in ordered if _TOKEN_CHARACTERS.fullmatch(f)]
            if len(indexed) >= INDEXED_FROM:
                searched = tuple(f for f in ordered if not _TOKEN_CHARACTERS.fullmatch(f))
                index: _Index | None = _Index.of(indexed)
            else:
                searched, index = ordered, None
            self._known = _Known(ordered, frozenset(alone), pattern, searched, index)

    def remember_proxies(self, environ: Mapping[str, str]) -> None:
        """The password (and ``user:password``) of each proxy variable set in ``environ``."""
        secrets = []
        for name in PROXY_VARIABLES:
            value = environ.get(name, "").strip()
            if "@" not in value:
                continue
            try:
                parts = urlsplit(value if "://" in value else f"http://{value}")
            except ValueError:
                continue
            userinfo = parts.netloc.rpartition("@")[0]
            secrets.append(userinfo)
            user, _, password = userinfo.partition(":")
            if password:
                secrets.append(password)
            elif user:
                secrets.append(user)  # a token given as the user name alone
        self.remember_all(secrets)

    def is_secret(self, value: str) -> bool:
        """Whether ``value`` holds a loaded secret (an account's name must not: it is shown everywhere)."""
        return self.text(value) != value

    def text(self, text: str) -> str:
        """``text`` with every secret and credential-looking echo replaced by [REDACTED]."""
        known = self._known
        for secret in known.searched:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if known.index is not None:
            for secret in sorted(known.index.found(text), key=len, reverse=True):
                text = text.replace(secret, REDACTED)
        if known.alone_pattern is not None and any(s in text for s in known.alone):
            text = known.alone_pattern.sub(REDACTED, text)
        if "://" in text and "@" in text:
            text = _USERINFO.sub(rf"\g<1>{REDACTED}@", text)
        lowered = text.lower()
        if "bearer" in lowered:
            text = _BEARER.sub(rf"\g<1> {REDACTED}", text)
            lowered = text.lower()
        if any(hint in lowered for hint in _KEYED_HINTS):
            text = _KEYED.sub(rf"\g<1>\g<2>{REDACTED}", text)
        return text

    def data(self, data: bytes) -> bytes:
        """``data`` (UTF-8) redacted as text; unchanged when nothing in it needed redacting."""
        text = data.decode("utf-8", errors="surrogateescape")
        redacted = self.text(text)
        return data if redacted == text else redacted.encode("utf-8", errors="surrogateescape")

    def loaded_secrets(self, data: bytes) -> bytes:
        """``data`` with every loaded secret blanked out, and nothing else: for the /metrics page,
        19 MB at 10,000 accounts, whose text only rotator writes (the patterns would cost the loop
        a tenth of a second there; a search for each secret costs milliseconds). Its one outside
        text, the names, cannot hold a secret (rotator.config.credentials.refuse_secret_names)."""
        known = self._known
        secrets: Iterable[str] = known.searched
        if known.index is not None:  # many secrets: those of token characters found through the index
            found = known.index.found(data.decode("utf-8", errors="surrogateescape"))
            secrets = (*known.searched, *sorted(found, key=len, reverse=True))
        for secret in secrets:
            raw = secret.encode("utf-8", errors="surrogateescape")
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
        if known.alone_pattern is not None and any(s.encode() in data for s in known.alone):
            data = self.data(data)
        return data

    def value(self, value: Any) -> Any:
        """``value`` with every string inside it redacted: mappings (keys too), lists, tuples and
        sets are walked; any other value that would render with a secret (a number equal to one,
        an object whose ``str`` holds one) becomes its redacted text."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, bytes):
            return self.data(value)
        rendered = str(value)
        redacted = self.text(rendered)
        return value if redacted == rendered else redacted


def _forms(secret: str) -> set[str]:
    """The secret, and how the surfaces may escape it: JSON, HTML, a URL's percent-encoding."""
    forms = {secret, secret.strip()}
    forms.add(json.dumps(secret)[1:-1])  # ensure_ascii, as json.dumps and aiohttp write
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms.add(html.escape(secret))
    forms.add(unquote(secret))
    return {f for f in forms if f}


_RUN = re.compile(r"[A-Za-z0-9]+")
_NAME_LIKE_RUN = re.compile(r"[a-z0-9]+|[A-Z0-9]+|[A-Z][a-z0-9]+")
# A run of letters and digits this long, with both, reads as a key rather than a word.
_KEY_LIKE_RUN = 16


def could_be_secret(value: str) -> bool:
    """Whether ``value``, given where a name or path belongs (``api_token_env``, ``api_token_file``,
    a webhook's ``secret_env``), may be a secret pasted there instead: then a message describes it
    and never repeats it. A name or path reads as words: between its separators (``/ . _ -``) each
    run of letters and digits is lower-case, upper-case or capitalised, and none is a long mix of
    letters and digits. Cloudflare's tokens (40 random characters of both cases) and hex or base64
    secrets fail that; CLOUDFLARE_API_TOKEN and /var/run/secrets/cloudflare/token pass it."""
    if not value or len(value) > 4096 or any(c.isspace() or not c.isprintable() for c in value):
        return True
    for run in _RUN.findall(value):
        if not _NAME_LIKE_RUN.fullmatch(run):
            return True
        if len(run) >= _KEY_LIKE_RUN and any(c.isdigit() for c in run) and any(c.isalpha() for c in run):
            return True
    return not _RUN.search(value)


# The process's one redactor: every reader of a secret tells it, every surface asks it. The proxy
# variables are read at once, so a line logged before any credential is loaded is covered too.
REDACTOR = Redactor()
REDACTOR.remember_proxies(os.environ)


def redact(text: str) -> str:
    """``text`` with every credential this process has read replaced by [REDACTED]."""
    return REDACTOR.text(text)
