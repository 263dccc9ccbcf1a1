"""Credentials: where they come from (a name, safe to log) and what they are (a secret, never shown).

A credential is identified by the secret itself, not by where it was read from: two accounts whose
env vars hold the same token share one rate-limit budget, as they do at Cloudflare. The identity
is a short hash, so it can be a dict key without the secret being kept in more places.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rotator.config.problems import several
from rotator.errors import CredentialError
from rotator.files import MAX_SECRET_BYTES, FileProblem, read_regular_file
from rotator.redaction import REDACTOR, could_be_secret

if TYPE_CHECKING:
    from rotator.config.model import Account, Config

CredentialMap = dict[str, "Credential | CredentialError"]


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
        """Where the secret comes from; a location that reads like a pasted secret is not repeated."""
        if self.kind == "token_env":
            return f"API token from {_variable(self.location, 'api_token_env')}"
        if self.kind == "token_file":
            return f"API token from {_file(self.location, 'api_token_file')}"
        assert self.email_env is not None
        email, key = _variable(self.email_env, "api_email_env"), _variable(self.location, "api_key_env")
        return f"global API key from {email} and {key}"

    def load(self, environ: Mapping[str, str] | None = None) -> Credential:
        """Read the secret now; raise CredentialError naming the variable or file when absent."""
        env = os.environ if environ is None else environ
        if self.kind == "token_env":
            token = _from_env(env, self.location, "api_token_env")
            return self._credential({"Authorization": f"Bearer {token}"}, token)
        if self.kind == "token_file":
            token = _from_file(Path(self.location), "api_token_file")
            return self._credential({"Authorization": f"Bearer {token}"}, token)
        assert self.email_env is not None
        email = _from_env(env, self.email_env, "api_email_env")
        key = _from_env(env, self.location, "api_key_env")
        return self._credential({"X-Auth-Email": email, "X-Auth-Key": key}, f"{email}\0{key}")

    def _credential(self, headers: dict[str, str], secret: str) -> Credential:
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16]
        for value in headers.values():  # the token, or the legacy email and key
            REDACTOR.remember(value.removeprefix("Bearer "))
        return Credential(self, headers, fingerprint)


def require_credentials(config: Config) -> dict[str, Credential]:
    """Every account's credential; CredentialError naming each one that cannot be read, and each
    name that equals a secret (refuse_secret_names)."""
    loaded = load_credentials(config.accounts)
    missing = credential_problems(config.accounts, loaded)
    if missing:
        raise CredentialError("\n".join(f"{config.path}: {m}" for m in missing))
    refuse_secret_names(config)
    return {k: v for k, v in loaded.items() if isinstance(v, Credential)}


def remember_configured_secrets(config: Config) -> None:
    """Read the secrets a command does not use (the HTTP bearer token, the webhooks' secrets) only
    so that they are redacted from what it prints too: Cloudflare may echo any of them. One that
    cannot be read is left out quietly; the daemon, which uses it, says so."""
    sources: list[tuple[str | None, Path | None]] = [(None, config.settings.http.auth_token_file)]
    sources += [(w.secret_env, w.secret_file) for w in config.settings.notify.webhooks]
    for env, path in sources:
        if env is not None or path is not None:
            with contextlib.suppress(CredentialError):
                read_secret(env, path)


def refuse_secret_names(config: Config) -> None:
    """CredentialError when an account's or a webhook's name holds a secret this process has
    loaded: a name is shown on every surface (logs, metric labels, the status page), and redacted
    there it would no longer say which account is meant. The name itself is never repeated."""
    named = [(f"accounts[{i}].name", a.name) for i, a in enumerate(config.accounts)]
    named += [
        (f"notify.webhooks[{i}].name", w.name)
        for i, w in enumerate(config.settings.notify.webhooks)
        if w.name is not None
    ]
    problems = [
        f"{config.path}: {where}: it holds a secret rotator has loaded (an API token or key, a webhook "
        "secret, the HTTP bearer token or a proxy password), and a name is shown in logs, metrics and "
        "the status page: expected a name that is not a secret"
        for where, name in named
        if REDACTOR.is_secret(name)
    ]
    if problems:
        raise CredentialError("\n".join(problems))


def credential_problems(
    accounts: Sequence[Account], loaded: Mapping[str, Credential | CredentialError]
) -> list[str]:
    """One line per credential that cannot be read, naming the accounts that need it: 300,000
    accounts without their token set are one problem, not 300,000 lines."""
    needed_by: dict[str, list[str]] = {}
    for account in accounts:
        problem = loaded.get(account.account_id)
        if isinstance(problem, CredentialError):
            what = str(problem).removeprefix(f"account {account.name}: ")
            needed_by.setdefault(what, []).append(account.name)
    return [
        f"account{'s' if len(names) > 1 else ''} {several(names)}: {what}"
        for what, names in needed_by.items()
    ]


def load_credentials(accounts: Iterable[Account]) -> CredentialMap:
    """Each account's credential, or the error that says why it cannot be read.

    Each source is read once, and the accounts that name it share what was read: 10,000 accounts
    on one token held 10,000 copies of it, 4 MB."""
    REDACTOR.remember_proxies(os.environ)
    read: dict[CredentialSource, Credential | CredentialError] = {}
    loaded: CredentialMap = {}
    for account in accounts:
        source = account.credential
        credential = read.get(source)
        if credential is None:
            try:
                credential = source.load()
            except CredentialError as exc:
                credential = exc
            read[source] = credential
        if isinstance(credential, CredentialError):
            credential = CredentialError(f"account {account.name}: {credential} ({source.describe()})")
        loaded[account.account_id] = credential
    return loaded


def remember_secret(secret: str) -> None:
    """Blank ``secret`` out of every surface from now on (a webhook's signing secret, say)."""
    REDACTOR.remember(secret)


def read_auth_token(config: Config) -> str | None:
    """The bearer token of ``http.auth_token_file``, remembered for redaction; None when unset.
    CredentialError in the words ``run`` refuses to start with (and ``validate`` repeats)."""
    path = config.settings.http.auth_token_file
    if path is None:
        return None
    try:
        return read_secret(None, path, fields=("", "auth_token_file"))
    except CredentialError as exc:
        raise CredentialError(f"{config.path}: http.auth_token_file: {exc}") from None


def read_secret(
    env: str | None,
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    fields: tuple[str, str] = ("secret_env", "secret_file"),
) -> str:
    """A secret from the variable ``env`` or the file ``path``, remembered for redaction.
    ``fields``: the config keys that name them, for a message that cannot repeat the name."""
    if env is not None:
        value = _from_env(os.environ if environ is None else environ, env, fields[0])
    elif path is not None:
        value = _from_file(path, fields[1])
    else:
        raise CredentialError("no secret source given")
    remember_secret(value)
    return value


def _from_env(environ: Mapping[str, str], name: str, field: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise CredentialError(f"{_variable(name, field)} is not set or is empty{_not_repeated(name)}")
    return value


def _from_file(path: Path, field: str) -> str:
    where = _file(str(path), field)
    try:
        raw = read_regular_file(path, MAX_SECRET_BYTES, "a file that holds only the secret")
    except FileNotFoundError:
        raise CredentialError(f"{where}: no such file{_not_repeated(str(path), path=True)}") from None
    except FileProblem as exc:
        raise CredentialError(f"{where}: {exc.what}") from None
    except OSError as exc:
        raise CredentialError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"{where}: expected UTF-8 text (a token, or a secret)") from None
    if not value:
        raise CredentialError(f"{where} is empty")
    return value


def _hidden(value: str, *, path: bool = False) -> bool:
    """Whether a message must describe ``value`` rather than repeat it: it reads like a secret
    (rotator.redaction.could_be_secret), or, for a path, it has no '/' (a file's path in a
    container is absolute; a bare word there is more likely a token pasted in its place)."""
    return could_be_secret(value) or (path and "/" not in value)


def _not_repeated(value: str, *, path: bool = False) -> str:
    if not _hidden(value, path=path):
        return ""
    what = "path" if path else "name"
    return f" (its {what} is not repeated here: it may be a secret pasted in place of a {what})"


def _variable(name: str, field: str) -> str:
    """An environment variable as a message names it: by its name, unless that may be a secret."""
    return f"the environment variable named by {field}" if _hidden(name) else f"environment variable {name}"


def _file(path: str, field: str) -> str:
    noun = "token file" if "token" in field else "secret file"
    return f"the {noun} named by {field}" if _hidden(path, path=True) else f"{noun} {path}"
