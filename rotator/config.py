"""The YAML config: parsed and validated at one boundary, refused with messages that say where.

pydantic does the typing; this module adds what pydantic cannot know: that a config which can never
be satisfied is a mistake, that secrets do not belong in a ConfigMap, and how to say each refusal in
the user's terms (file, account by index and name, field, what was expected). No message repeats a
value the user wrote, because that value might be a secret pasted into the wrong key.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rotator.credentials import CredentialSource
from rotator.durations import parse_duration
from rotator.errors import ConfigError
from rotator.followup_settings import NotifySettings, PublicationSettings, TeamDomain
from rotator.policy import PolicySettings
from rotator.windows import Window, Windows, never_opens

DEFAULT_CONFIG_PATH = Path("/etc/rotator/config.yaml")
DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_TOKEN_ENV = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - a variable name, not a secret
# Cloudflare publishes the current and the previous key, and the previous one stays valid for
# 7 days: two rotations closer than this push out a key that may still sign tokens in flight.
KEY_OVERLAP_DAYS = 7

Duration = Annotated[float, BeforeValidator(parse_duration)]
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]

# Keys a user might reach for to paste a secret inline. They are refused with an explanation
# rather than as merely "unknown", since the fix is to move the secret, not to rename the key.
_INLINE_SECRET_KEYS = ("api_token", "api_key", "token", "key", "secret", "password")
_CREDENTIAL_KEYS = ("api_token_env", "api_token_file", "api_email_env", "api_key_env")


def _refuse_inline_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        for key in _INLINE_SECRET_KEYS:
            if key in data:
                raise ValueError(
                    f"'{key}' holds a secret, and secrets are never read from the config file "
                    "(it lives in a ConfigMap): put it in an environment variable named by "
                    "api_token_env (or api_email_env/api_key_env), or in a file named by "
                    "api_token_file"
                )
    return data


class _Strict(BaseModel):
    # YAML reads .inf and .nan as floats; neither is a meaningful duration or number of days.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CredentialSettings(_Strict):
    """Where a credential comes from: exactly one of a token env var, a token file, or the
    legacy email + global key pair. The values are names, never secrets."""

    api_token_env: EnvVarName | None = None
    api_token_file: Path | None = None
    api_email_env: EnvVarName | None = None
    api_key_env: EnvVarName | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        return _refuse_inline_secrets(data)

    @model_validator(mode="after")
    def _one_kind(self) -> CredentialSettings:
        if (self.api_email_env is None) != (self.api_key_env is None):
            raise ValueError("api_email_env and api_key_env go together: set both or neither")
        kinds = sum(
            (
                self.api_token_env is not None,
                self.api_token_file is not None,
                self.api_key_env is not None,
            )
        )
        if kinds > 1:
            raise ValueError(
                "set one credential: api_token_env, api_token_file, or api_email_env with api_key_env"
            )
        return self

    def credential_source(self) -> CredentialSource | None:
        if self.api_token_env is not None:
            return CredentialSource.token_env(self.api_token_env)
        if self.api_token_file is not None:
            return CredentialSource.token_file(self.api_token_file)
        if self.api_email_env is not None and self.api_key_env is not None:
            return CredentialSource.legacy(self.api_email_env, self.api_key_env)
        return None


class RateLimit(_Strict):
    requests: int = Field(1000, ge=1)
    per: Duration = Field(300.0, gt=0)


class CloudflareSettings(CredentialSettings):
    base_url: str = DEFAULT_BASE_URL
    ca_bundle: Path | None = None
    timeout: Duration = Field(10.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=1024)
    rate_limit: RateLimit = RateLimit()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        match = re.match(r"^(https?)://(\[[^\]]+\]|[^/:\s]+)", value)
        if not match:
            raise ValueError("expected an http(s) URL such as https://api.cloudflare.com/client/v4")
        if match[1] == "http" and not _is_loopback(match[2].strip("[]")):
            # The token travels in a header: plain HTTP is for local simulators and mocks only.
            raise ValueError(
                "expected https:// for a host that is not loopback: the API token would "
                "otherwise cross the network in clear text"
            )
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("expected the path of a PEM file of CA certificates that exists")
        return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Schedule(_Strict):
    check_interval: Duration = Field(3600.0, gt=0)
    jitter: Duration = 300.0


class WindowSettings(_Strict):
    """A maintenance window: opens whenever ``cron`` matches, in ``timezone``, for ``duration``."""

    cron: str
    duration: Duration = Field(gt=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        # ValueError: a path such as "../x" or a file that is not a zone; OSError: a directory
        # such as "Europe". Both escaped as a cron error or a traceback when left to _can_open.
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError("expected an IANA time zone name such as Europe/Berlin or UTC") from None
        return value

    @model_validator(mode="after")
    def _can_open(self) -> WindowSettings:
        window = self.window()
        try:
            never = never_opens(window, datetime.now(UTC))
        except ValueError as exc:
            raise ValueError(
                f"cron: {exc}: expected five fields (minute hour day month weekday), "
                "such as '0 2 * * tue,wed'"
            ) from None
        if never:
            raise ValueError(f"cron: '{self.cron}' never matches a date, so this window can never open")
        return self

    def window(self) -> Window:
        return Window(self.cron, timedelta(seconds=self.duration), self.timezone)


class RotationSettings(_Strict):
    """The policy's knobs. Every one may be overridden per account."""

    threshold_days: float = Field(3.0, ge=0)
    min_days_between_rotations: float = Field(float(KEY_OVERLAP_DAYS), ge=0)
    key_rotation_interval_days: int | None = Field(None, ge=21, le=365)
    dry_run: bool = False
    # Empty: a due rotation happens at the first check that finds it due.
    windows: tuple[WindowSettings, ...] = ()


class HTTPSettings(_Strict):
    listen: str = "0.0.0.0:9464"

    @field_validator("listen", mode="before")
    @classmethod
    def _host_port(cls, value: Any) -> Any:
        # Not a string: `listen: 9464`, a port alone that YAML read as a number.
        host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, such as 0.0.0.0:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


def _account_id(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            "expected 32 hexadecimal characters in quotes; YAML read this id as a number "
            'because it is not quoted: write account_id: "..."'
        )
    return value


AccountId = Annotated[
    str,
    BeforeValidator(_account_id),
    Field(pattern=r"^[0-9a-fA-F]{32}$", strict=True),
]


class AccountSettings(CredentialSettings):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    account_id: AccountId
    threshold_days: float | None = Field(None, ge=0)
    min_days_between_rotations: float | None = Field(None, ge=0)
    key_rotation_interval_days: int | None = Field(None, ge=21, le=365)
    dry_run: bool | None = None
    windows: tuple[WindowSettings, ...] | None = None
    # Where the account's certs are published; unset: read from Cloudflare (organizations).
    team_domain: TeamDomain | None = None


class Settings(_Strict):
    cloudflare: CloudflareSettings = CloudflareSettings()
    schedule: Schedule = Schedule()
    rotation: RotationSettings = RotationSettings()
    http: HTTPSettings = HTTPSettings()
    logging: LoggingSettings = LoggingSettings()
    state_file: Path | None = None
    # How long reads must keep showing an unconfirmed rotation's key unchanged before it is taken
    # as not applied (rotator.ledger). Far longer than a replica lags; at least 10 minutes.
    settle_time: Duration = Field(3600.0, ge=600.0)
    publication: PublicationSettings = PublicationSettings()
    notify: NotifySettings = NotifySettings()
    accounts: list[AccountSettings] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        return _refuse_inline_secrets(data)


@dataclass(frozen=True)
class Account:
    """One configured account with its defaults applied: what the rest of rotator works with."""

    name: str
    account_id: str
    rotation: RotationSettings
    credential: CredentialSource
    windows: Windows = field(default_factory=lambda: Windows(()), compare=False)
    # The rotation settings as the policy takes them (derived from ``rotation``).
    policy: PolicySettings = field(default_factory=PolicySettings, compare=False)
    team_domain: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    settings: Settings
    accounts: tuple[Account, ...]
    warnings: tuple[str, ...]

    @property
    def check_period(self) -> timedelta:
        """The longest time between two checks of one account."""
        schedule = self.settings.schedule
        return timedelta(seconds=schedule.check_interval + schedule.jitter)

    def account(self, name: str) -> Account | None:
        return next((a for a in self.accounts if a.name == name), None)


def load_config(path: Path) -> Config:
    """Read, validate and resolve the config at ``path``; raise ConfigError saying what is wrong."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give one with -c or $ROTATOR_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not valid YAML at line {line}: expected UTF-8 text") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = ""
        if mark := getattr(exc, "problem_mark", None):
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with at least an 'accounts' list")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, data, exc)) from None
    accounts = tuple(_resolve(settings, a) for a in settings.accounts)
    problems = _unsatisfiable(settings, accounts)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return Config(path, settings, accounts, _warnings(settings, accounts))


# libyaml's C loader where present: ten times faster on large account lists.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader that refuses a key given twice in one mapping (YAML keeps the last one
    silently, so a forgotten duplicate would override what the user reads first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' is given twice in the same mapping", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _resolve(settings: Settings, account: AccountSettings) -> Account:
    overrides = {
        field: getattr(account, field)
        for field in RotationSettings.model_fields
        if getattr(account, field) is not None
    }
    # Accounts that override nothing share the defaults' objects: with thousands of accounts, a
    # copy each was a third of the config's memory.
    rotation = settings.rotation.model_copy(update=overrides) if overrides else settings.rotation
    return Account(
        name=account.name,
        account_id=account.account_id.lower(),
        rotation=rotation,
        credential=account.credential_source() or _default_source(settings.cloudflare),
        windows=_windows(rotation.windows),
        policy=_policy(rotation),
        team_domain=account.team_domain,
    )


@functools.lru_cache(maxsize=64)
def _policy(rotation: RotationSettings) -> PolicySettings:
    return PolicySettings(
        threshold_days=rotation.threshold_days,
        min_days_between_rotations=rotation.min_days_between_rotations,
        key_rotation_interval_days=rotation.key_rotation_interval_days,
        dry_run=rotation.dry_run,
    )


@functools.lru_cache(maxsize=16)
def _default_source(cloudflare: CloudflareSettings) -> CredentialSource:
    return cloudflare.credential_source() or CredentialSource.token_env(DEFAULT_TOKEN_ENV)


@functools.lru_cache(maxsize=64)
def _windows(windows: tuple[WindowSettings, ...]) -> Windows:
    return Windows([w.window() for w in windows])


def _where(index: int, account: Account | AccountSettings | None) -> str:
    return f"accounts[{index}]" + (f" ({account.name})" if account is not None else "")


def _unsatisfiable(settings: Settings, accounts: tuple[Account, ...]) -> list[str]:
    problems = []
    for kind, attr in (("name", "name"), ("account_id", "account_id")):
        first_seen: dict[str, int] = {}
        for index, account in enumerate(accounts):
            value = getattr(account, attr)
            if value in first_seen:
                problems.append(
                    f"{_where(index, account)}: {kind}: '{value}' is already used by "
                    f"accounts[{first_seen[value]}]; each account needs a unique {kind}"
                )
            first_seen.setdefault(value, index)
    for index, account in enumerate(accounts):
        policy = account.rotation
        interval = policy.key_rotation_interval_days
        if interval is None:
            continue
        # After a rotation Cloudflare reports `interval` days left; rotator acts at `threshold`.
        # If that moment comes before the minimum gap has passed, the guard always skips, and
        # Cloudflare rotates on its own: the policy can never be carried out.
        cycle = interval - policy.threshold_days
        if cycle <= 0 or cycle < policy.min_days_between_rotations:
            problems.append(
                f"{_where(index, account)}: key_rotation_interval_days: an interval of "
                f"{interval} days minus threshold_days {policy.threshold_days:g} leaves "
                f"{cycle:g} days between rotations, fewer than min_days_between_rotations "
                f"{policy.min_days_between_rotations:g}: expected key_rotation_interval_days - "
                "threshold_days to be more than 0 and at least min_days_between_rotations"
            )
    return problems


def _warnings(settings: Settings, accounts: tuple[Account, ...]) -> tuple[str, ...]:
    warnings = []
    for index, account in enumerate(accounts):
        if account.rotation.min_days_between_rotations < KEY_OVERLAP_DAYS:
            warnings.append(
                f"{_where(index, account)}: min_days_between_rotations is "
                f"{account.rotation.min_days_between_rotations:g}: Cloudflare keeps the previous key "
                f"valid for {KEY_OVERLAP_DAYS} days, so rotating sooner pushes out a key that may "
                "still sign tokens in flight and can log users out"
            )
    schedule = settings.schedule
    slowest_check = schedule.check_interval + schedule.jitter
    for index, account in enumerate(accounts):
        if any(w.duration < slowest_check for w in account.rotation.windows):
            warnings.append(
                f"{_where(index, account)}: a maintenance window is shorter than "
                "schedule.check_interval plus jitter, so a check may never fall inside it; due "
                "rotations would then wait for the deadline before Cloudflare's own rotation"
            )
    for index, account in enumerate(accounts):
        if slowest_check >= account.rotation.threshold_days * 86400:
            warnings.append(
                f"{_where(index, account)}: threshold_days {account.rotation.threshold_days:g} is "
                "shorter than schedule.check_interval plus jitter: Cloudflare may rotate on its own "
                "between two checks"
            )
            break
    return tuple(warnings)


def _describe(path: Path, data: dict[str, Any], exc: ValidationError) -> str:
    """One line per problem: file, account by index and name, field, what was expected."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "accounts" and isinstance(loc[1], int):
            index = loc[1]
            raw = data.get("accounts") or []
            name = raw[index].get("name") if index < len(raw) and isinstance(raw[index], dict) else None
            where = f"accounts[{index}]" + (f" ({name})" if isinstance(name, str) else "") + ": "
            loc = loc[2:]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        lines.append(f"{path}: {where}{field + ': ' if field else ''}{_explain(error)}")
    return "\n".join(lines)


def _explain(error: Any) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling and its level of indentation)"
    if kind == "missing":
        return "required, and missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):  # pydantic names its class here
        return "expected a mapping (indented key: value lines)"
    if kind in ("list_type", "tuple_type"):  # "tuple" is Python's word; YAML has lists
        return "expected a list (one '- ' item a line)"
    if kind == "value_error":
        return str(message).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and error["loc"][-1] == "account_id":
        return "expected 32 hexadecimal characters"
    if kind == "string_pattern_mismatch" and error["loc"][-1] == "name":
        return "expected letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)"
    if kind == "string_pattern_mismatch":
        return "expected the name of an environment variable (letters, digits and '_')"
    return f"expected: {str(message)[0].lower()}{str(message)[1:]}"
