"""Credentials: where they come from (a name, safe to log) and what they are (a secret, never shown).

A credential is identified by the secret itself, not by where it was read from: two accounts whose
env vars hold the same token share one rate-limit budget, as they do at Cloudflare. The identity
is a short hash, so it can be a dict key without the secret being kept in more places.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rotator.errors import CredentialError


@dataclass(frozen=True)
class Credential:
    """The secret in the form the API wants: request headers. Its repr shows only the source."""

    source: CredentialSource
    headers: Mapping[str, str] = field(repr=False)
    fingerprint: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credential({self.source.describe()})"


@dataclass(frozen=True)
class CredentialSource:
    """Where to read a credential from. Holds names only, never a secret."""

    kind: Literal["token_env", "token_file", "legacy_env"]
    location: str
    email_env: str | None = None

    @classmethod
    def token_env(cls, name: str) -> CredentialSource:
        return cls("token_env", name)

    @classmethod
    def token_file(cls, path: Path) -> CredentialSource:
        return cls("token_file", str(path))

    @classmethod
    def legacy(cls, email_env: str, key_env: str) -> CredentialSource:
        return cls("legacy_env", key_env, email_env)

    def describe(self) -> str:
        if self.kind == "token_env":
            return f"API token from environment variable {self.location}"
        if self.kind == "token_file":
            return f"API token from file {self.location}"
        return f"global API key from environment variables {self.email_env} and {self.location}"

    def load(self, environ: Mapping[str, str] | None = None) -> Credential:
        """Read the secret now; raise CredentialError naming the variable or file when absent."""
        env = os.environ if environ is None else environ
        if self.kind == "token_env":
            token = _from_env(env, self.location)
            return self._credential({"Authorization": f"Bearer {token}"}, token)
        if self.kind == "token_file":
            token = _from_file(Path(self.location))
            return self._credential({"Authorization": f"Bearer {token}"}, token)
        assert self.email_env is not None
        email = _from_env(env, self.email_env)
        key = _from_env(env, self.location)
        return self._credential({"X-Auth-Email": email, "X-Auth-Key": key}, f"{email}\0{key}")

    def _credential(self, headers: dict[str, str], secret: str) -> Credential:
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16]
        _loaded_secrets.update(v for v in headers.values() if len(v) >= MIN_REDACTED_LENGTH)
        _loaded_secrets.update(v.removeprefix("Bearer ") for v in headers.values() if v.startswith("Bearer "))
        return Credential(self, headers, fingerprint)


# Every secret this process has read, so the log pipeline can blank it out wherever it appears:
# a second line of defence behind messages that are built never to contain one.
_loaded_secrets: set[str] = set()
MIN_REDACTED_LENGTH = 8  # shorter values (a test's "x") would blank out ordinary words


def remember_secret(secret: str) -> None:
    """Blank ``secret`` out of every log line from now on (a webhook's signing secret, say)."""
    if len(secret) >= MIN_REDACTED_LENGTH:
        _loaded_secrets.add(secret)


def read_secret(env: str | None, path: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """A secret from the variable ``env`` or the file ``path``, remembered for redaction."""
    if env is not None:
        value = _from_env(os.environ if environ is None else environ, env)
    elif path is not None:
        value = _from_file(path)
    else:
        raise CredentialError("no secret source given")
    remember_secret(value)
    return value


def redact(text: str) -> str:
    for secret in _loaded_secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _from_env(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise CredentialError(f"environment variable {name} is not set or is empty")
    return value


def _from_file(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CredentialError(f"token file {path} does not exist") from None
    except OSError as exc:
        raise CredentialError(f"token file {path} cannot be read: {exc.strerror}") from None
    if not value:
        raise CredentialError(f"token file {path} is empty")
    return value
