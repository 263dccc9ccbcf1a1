"""The YAML config: parsed and validated at one boundary, refused with messages that say where.

pydantic does the typing; this module adds what pydantic cannot know: that a config which can never
be satisfied is a mistake, that secrets do not belong in a ConfigMap, and how to say each refusal in
the user's terms (file, account by index and name, field, what was expected). No message repeats a
value the user wrote, because that value might be a secret pasted into the wrong key.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from rotator.config.credentials import CredentialSource
from rotator.config.durations import parse_duration
from rotator.config.followup_settings import NotifySettings, PublicationSettings, TeamDomain
from rotator.config.problems import lines as problem_lines
from rotator.config.urls import checked_url
from rotator.core.policy import PolicySettings
from rotator.core.windows import Window, Windows, never_opens
from rotator.errors import ConfigError
from rotator.files import FileProblem, file_kind, read_regular_file

DEFAULT_CONFIG_PATH = Path("/etc/rotator/config.yaml")
# A config with 10,000 accounts is about 1 MB; anything much larger is not a config.
MAX_CONFIG_BYTES = 10 * 2**20
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
    # The longest one 429 pauses a credential, whatever its retry-after says.
    max_retry_after: Duration = Field(900.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        checked_url(
            value,
            example="https://api.cloudflare.com/client/v4",
            carried="the API token",
            credentials_hint=" (name them with api_token_env or api_token_file)",
        )
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("expected the path of a PEM file of CA certificates that exists")
        return value


class Schedule(_Strict):
    check_interval: Duration = Field(3600.0, gt=0)
    jitter: Duration = 300.0
    # The longest between two checks of an account whose decision cannot change before then
    # (rotator.core.policy.next_check): how late a rotation made elsewhere, or an interval changed
    # elsewhere, is noticed. A day: one read a day, and a change elsewhere is seen with the
    # threshold's days (3 by default) still left before Cloudflare's own rotation.
    max_check_interval: Duration = Field(86400.0, gt=0)

    @model_validator(mode="after")
    def _max_after_interval(self) -> Schedule:
        if self.max_check_interval < self.check_interval + self.jitter:
            raise ValueError(
                f"max_check_interval ({_seconds(self.max_check_interval)}) must be at least "
                f"check_interval plus jitter ({_seconds(self.check_interval + self.jitter)}): it bounds "
                "the time between two checks, and check_interval is the shortest"
            )
        return self


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
            raise ValueError(_unknown_zone(value)) from None
        return value

    @model_validator(mode="after")
    def _can_open(self) -> WindowSettings:
        try:
            never = never_opens(self.window(), datetime.now(UTC))
        except ValueError as exc:
            raise ValueError(f"cron: {exc}") from None
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
    # A file holding a bearer token that /metrics (and any endpoint but the probes) requires;
    # unset: open to whoever reaches the port. Read at start-up (rotator.web.server).
    auth_token_file: Path | None = None

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


# A DNS-1123 subdomain: what Kubernetes accepts as a Lease's or ConfigMap's name (<= 253 characters;
# 243 here, so that the ledger's "<lease_name>-ledger" fits too).
_KUBE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A DNS-1123 label: a namespace's name.
_KUBE_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# A rotate POST is sent only while the Lease it is sent under has at least its deadline plus this
# much left (rotator.ha.leader's fence): the margin covers the clock-rate difference between replicas.
FENCE_MARGIN_SECONDS = 1.0
# The ledger's ConfigMaps (rotator.ha.configmap): each holds about 13,000 accounts' records.
MAX_LEDGER_SHARDS = 256
ACCOUNTS_PER_LEDGER_SHARD = 12_000


class LeaderElectionSettings(_Strict):
    """Kubernetes Lease leader election (rotator.ha.leader): of the replicas, only the leader checks
    and rotates, and the rotation ledger is kept in the ConfigMap ``<lease_name>-ledger``."""

    enabled: bool = False
    # Default: the pod's own (from its service account), else the kubeconfig context's.
    namespace: str | None = Field(None, pattern=_KUBE_NAMESPACE)
    lease_name: str = Field("rotator", max_length=243, pattern=_KUBE_NAME)
    # Default: $POD_NAME (the downward API), else the hostname. Unique per replica.
    identity: str | None = Field(None, min_length=1, max_length=128)
    # client-go's defaults.
    lease_duration: Duration = Field(15.0, gt=0)
    renew_deadline: Duration = Field(10.0, gt=0)
    retry_period: Duration = Field(2.0, gt=0)
    # The ledger's ConfigMaps: <lease_name>-ledger, then -1 up to -<ledger_shards - 1>. Each holds
    # about 13,000 accounts; the RBAC Role names each one.
    ledger_shards: int = Field(16, ge=1, le=MAX_LEDGER_SHARDS)

    @property
    def ledger_name(self) -> str:
        """The ConfigMap that keeps the rotation ledger."""
        return f"{self.lease_name}-ledger"

    @model_validator(mode="after")
    def _timings(self) -> LeaderElectionSettings:
        # As client-go requires: a leader gives up (renew_deadline) before its Lease can pass to
        # another (lease_duration), and tries to renew more than once before giving up.
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({_seconds(self.lease_duration)}) must be longer than renew_deadline "
                f"({_seconds(self.renew_deadline)}): a leader must stop acting before its Lease can "
                "pass to another replica"
            )
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError(
                f"renew_deadline ({_seconds(self.renew_deadline)}) must be longer than 1.2 x retry_period "
                f"({_seconds(self.retry_period)}): a leader must be able to try renewing more than once"
            )
        return self


def _seconds(value: float) -> str:
    return f"{value:g}s"


class Settings(_Strict):
    cloudflare: CloudflareSettings = CloudflareSettings()
    schedule: Schedule = Schedule()
    rotation: RotationSettings = RotationSettings()
    http: HTTPSettings = HTTPSettings()
    logging: LoggingSettings = LoggingSettings()
    state_file: Path | None = None
    # How long reads must keep showing an unconfirmed rotation's key unchanged before it is taken
    # as not applied (rotator.ledger.ledger). Far longer than a replica lags; at least 10 minutes.
    settle_time: Duration = Field(3600.0, ge=600.0)
    publication: PublicationSettings = PublicationSettings()
    notify: NotifySettings = NotifySettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    accounts: list[AccountSettings] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        return _refuse_inline_secrets(data)

    @model_validator(mode="after")
    def _lease_outlasts_a_request(self) -> Settings:
        election = self.leader_election
        timeout = self.cloudflare.timeout
        # Renewed every retry_period, the Lease runs for lease_duration - retry_period at the least
        # while its leader is healthy: a POST must fit in that, with the fence's margin.
        needed = timeout + FENCE_MARGIN_SECONDS + election.retry_period
        if election.enabled and election.lease_duration < needed:
            raise ValueError(
                f"leader_election.lease_duration ({_seconds(election.lease_duration)}) must be at least "
                f"cloudflare.timeout ({_seconds(timeout)}) + {_seconds(FENCE_MARGIN_SECONDS)} + "
                f"retry_period ({_seconds(election.retry_period)}) = {_seconds(needed)}: a rotate POST is "
                "sent only while the Lease it is sent under outlasts the request, even just before a renewal"
            )
        return self

    @model_validator(mode="after")
    def _one_ledger(self) -> Settings:
        # Refused rather than ignored or imported: under leader election the ledger is the
        # ConfigMap every replica shares; a state_file is one pod's, so each replica would import
        # its own (a stale copy at every failover), and ignoring it would drop its open rotations.
        if self.leader_election.enabled and self.state_file is not None:
            raise ValueError(
                f"state_file ({self.state_file}) and leader_election.enabled: choose one. With leader "
                "election the ledger is the ConfigMap <lease_name>-ledger, shared by every replica; "
                "a state_file would be ignored. To move to leader election, run `rotator check` until "
                "no rotation is unconfirmed, then remove state_file"
            )
        return self

    @field_validator("state_file")
    @classmethod
    def _writable_state_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Found at load rather than at the first rotation, whose record would then be lost.
        if value is None:
            return value
        # One file however it is named: relative to the config file's directory (not the working
        # directory of whoever runs `rotator rotate`), and its symlinks resolved, so that every
        # process reaches the same file and the same `<state_file>.lock` beside it (and the
        # rename that writes it replaces the file, not the link).
        base = (info.context or {}).get("directory", Path.cwd())
        value = Path(os.path.realpath(Path(base) / value.expanduser()))
        expected = (
            "expected the path of a file in a directory that exists and that rotator can write to "
            "(it writes a temporary file there, then renames it)"
        )
        if value.is_dir():
            raise ValueError(f"{value} is a directory: {expected}")
        if value.exists() and not value.is_file():  # stat only: opening a named pipe would block
            raise ValueError(f"{value} is {file_kind(value.stat().st_mode)}, not a regular file: {expected}")
        directory = value.parent
        if not directory.exists():
            raise ValueError(f"the directory {directory} does not exist: {expected}")
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a directory: {expected}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ValueError(f"the directory {directory} is not writable by this process: {expected}")
        return value


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


# Set to true (the dry-run overlay does, in the container's environment): every account is in dry
# run whatever the file says, at start-up and at every reload, for `run`, `check` and `rotate` alike.
DRY_RUN_ENV = "ROTATOR_DRY_RUN"


def forced_dry_run(environ: Mapping[str, str] | None = None) -> bool:
    """Whether $ROTATOR_DRY_RUN puts every account in dry run; ConfigError for another value."""
    value = (os.environ if environ is None else environ).get(DRY_RUN_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"${DRY_RUN_ENV}: expected true or false, not {value!r}")


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the config at ``path``; raise ConfigError saying what is wrong.
    ``environ`` (default: the process's) is read for $ROTATOR_DRY_RUN."""
    dry_run = forced_dry_run(environ)
    try:
        raw = read_config_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give one with -c or $ROTATOR_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not valid YAML at line {line}: expected UTF-8 text") from None
    return parse_config(text, path, force_dry_run=dry_run)


def read_config_file(path: Path) -> bytes:
    """The bytes of the config file; ConfigError when it is not a regular file or is larger than
    MAX_CONFIG_BYTES (``-c /dev/zero`` would otherwise be read until memory runs out, and a FIFO
    would block: rotator.files), OSError when it cannot be read."""
    try:
        return read_regular_file(path, MAX_CONFIG_BYTES, "a YAML file")
    except FileProblem as exc:
        if exc.too_large:
            raise ConfigError(
                f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MB, which is more than a config needs "
                "(10,000 accounts take about 1 MB): expected a YAML config file"
            ) from None
        raise ConfigError(f"{path}: {exc.what}") from None


def parse_config(text: str, path: Path, *, force_dry_run: bool = False) -> Config:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = ""
        if mark := getattr(exc, "problem_mark", None):
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"{path}: not valid YAML{where}: {_yaml_problem(exc, text)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with at least an 'accounts' list")
    if force_dry_run:
        _dry_run_everywhere(data)
    try:
        settings = Settings.model_validate(data, context={"directory": Path(os.path.abspath(path)).parent})
    except ValidationError as exc:
        raise ConfigError(_describe(path, data, exc)) from None
    accounts = tuple(_resolve(settings, a) for a in settings.accounts)
    problems = _unsatisfiable(settings, accounts)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    warnings = _warnings(settings, accounts)
    if force_dry_run:
        warnings = (f"${DRY_RUN_ENV} is set: every account is in dry run, whatever the file says", *warnings)
    return Config(path, settings, accounts, warnings)


def _dry_run_everywhere(data: dict[str, Any]) -> None:
    """``dry_run: true`` in the file's defaults and on every account, before validation (so that
    every check that depends on dry run, interval enforcement included, sees it). Shapes that are
    not mappings are left for validation to name."""
    rotation = data.get("rotation")
    if rotation is None:
        rotation = data["rotation"] = {}
    if isinstance(rotation, dict):
        rotation["dry_run"] = True
    for account in data.get("accounts") or []:
        if isinstance(account, dict) and "dry_run" in account:
            account["dry_run"] = True


# libyaml's C loader where present: ten times faster on large account lists.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader that refuses a key given twice in one mapping (YAML keeps the last one
    silently, so a forgotten duplicate would override what the user reads first), and a key that
    is not a string: every key of the config is a name, and a list or mapping as key (YAML's
    ``? [a, b]``) cannot even be held in a dict (it escaped as a TypeError)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # A list or mapping is refused before it is built: building it is what failed.
            scalar = isinstance(key_node, yaml.ScalarNode)
            key = self.construct_object(key_node, deep=deep) if scalar else None
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "expected a string as mapping key (a name such as accounts or base_url), "
                    f"found {_kind_of_key(key_node, key)}",
                    key_node.start_mark,
                )
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' is given twice in the same mapping", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _kind_of_key(node: yaml.Node, key: Any) -> str:
    """What a non-string key is, in YAML's words (never its value: it could be a pasted secret)."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true or false"
    if isinstance(key, int | float):
        return "a number"
    return "a value that is not a string"


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
                    (
                        _where(index, account),
                        f"{kind}: '{value}' is already used by accounts[{first_seen[value]}]; each "
                        f"account needs a unique {kind}",
                    )
                )
            first_seen.setdefault(value, index)

    def unsatisfiable_interval(account: Account) -> str | None:
        policy = account.rotation
        interval = policy.key_rotation_interval_days
        if interval is None:
            return None
        # After a rotation Cloudflare reports `interval` days left; rotator acts at `threshold`.
        # If that moment comes before the minimum gap has passed, the guard always skips, and
        # Cloudflare rotates on its own: the policy can never be carried out.
        cycle = interval - policy.threshold_days
        if cycle > 0 and cycle >= policy.min_days_between_rotations:
            return None
        return (
            f"key_rotation_interval_days: an interval of {interval} days minus threshold_days "
            f"{policy.threshold_days:g} leaves {cycle:g} days between rotations, fewer than "
            f"min_days_between_rotations {policy.min_days_between_rotations:g}: expected "
            "key_rotation_interval_days - threshold_days to be more than 0 and at least "
            "min_days_between_rotations"
        )

    gap_fields = ("key_rotation_interval_days", "threshold_days", "min_days_between_rotations")
    problems += _rotation_problems(settings, accounts, gap_fields, unsatisfiable_interval)
    return problem_lines(problems)


def _rotation_problems(
    settings: Settings,
    accounts: tuple[Account, ...],
    fields: tuple[str, ...],
    problem: Callable[[Account], str | None],
) -> list[tuple[str, str]]:
    """``problem`` of each account's rotation settings as ``(where, what)``: said once, at
    ``rotation.``, for the accounts that take all of ``fields`` from the defaults (a mistake there
    is one mistake, however many accounts inherit it), and at the account for the others."""
    found: list[tuple[str, str]] = []
    inherited: dict[str, int] = {}
    for index, account in enumerate(accounts):
        what = problem(account)
        if what is None:
            continue
        if all(getattr(settings.accounts[index], field) is None for field in fields):
            inherited[what] = inherited.get(what, 0) + 1
        else:
            found.append((_where(index, account), what))
    defaults = [
        ("", f"rotation.{what} (inherited by {count:,} account{'' if count == 1 else 's'})")
        for what, count in inherited.items()
    ]
    return defaults + found


def _warnings(settings: Settings, accounts: tuple[Account, ...]) -> tuple[str, ...]:
    schedule = settings.schedule
    slowest_check = schedule.check_interval + schedule.jitter

    def short_gap(account: Account) -> str | None:
        if account.rotation.min_days_between_rotations >= KEY_OVERLAP_DAYS:
            return None
        return (
            f"min_days_between_rotations is {account.rotation.min_days_between_rotations:g}: "
            f"Cloudflare keeps the previous key valid for {KEY_OVERLAP_DAYS} days, so rotating sooner "
            "pushes out a key that may still sign tokens in flight and can log users out"
        )

    def short_window(account: Account) -> str | None:
        if not any(w.duration < slowest_check for w in account.rotation.windows):
            return None
        return (
            "windows: a maintenance window is shorter than schedule.check_interval plus jitter, so a "
            "check may never fall inside it; due rotations would then wait for the deadline before "
            "Cloudflare's own rotation"
        )

    def short_threshold(account: Account) -> str | None:
        if slowest_check < account.rotation.threshold_days * 86400:
            return None
        return (
            f"threshold_days {account.rotation.threshold_days:g} is shorter than "
            "schedule.check_interval plus jitter: Cloudflare may rotate on its own between two checks"
        )

    warnings = []
    for name, problem in (
        ("min_days_between_rotations", short_gap),
        ("windows", short_window),
        ("threshold_days", short_threshold),
    ):
        warnings += _rotation_problems(settings, accounts, (name,), problem)
    election = settings.leader_election
    if election.enabled and len(accounts) > election.ledger_shards * ACCOUNTS_PER_LEDGER_SHARD:
        shards, wanted = election.ledger_shards, -(-len(accounts) // ACCOUNTS_PER_LEDGER_SHARD)
        warnings.append(
            (
                "leader_election.ledger_shards",
                f"{shards} shard{'s' * (shards != 1)} can hold the records of about "
                f"{shards * ACCOUNTS_PER_LEDGER_SHARD:,} accounts, and there are {len(accounts):,}: "
                f"set it to {wanted} or more (and name each shard in the RBAC Role)",
            )
        )
    return tuple(problem_lines(warnings))


def _unknown_zone(value: str) -> str:
    """The refusal of a time zone name (never a secret: quoted), with the closest known names."""
    shown = value if len(value) <= 60 else value[:57] + "..."
    message = f"expected an IANA time zone name such as Europe/Berlin or UTC, got '{shown}'"
    zones = available_timezones()
    close = difflib.get_close_matches(value, zones, n=1, cutoff=0.75)
    if not close:  # a region alone ("Europe"), or a city without its region ("Berln")
        by_city = {zone.rsplit("/", 1)[-1].lower(): zone for zone in zones}
        close = [by_city[c] for c in difflib.get_close_matches(value.lower(), by_city, n=1, cutoff=0.75)]
    region = value.strip("/")
    inside = sorted(zone for zone in zones if zone.startswith(f"{region}/"))
    if not close and inside:
        return f"{message}: that is a region; name a zone in it, such as {inside[0]}"
    return f"{message}: did you mean {close[0]}?" if close else message


def _describe(path: Path, data: dict[str, Any], exc: ValidationError) -> str:
    """One line per problem: file, account by index and name, field, what was expected; the same
    problem in several accounts is one line naming them."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "accounts" and isinstance(loc[1], int):
            index = loc[1]
            raw = data.get("accounts") or []
            name = raw[index].get("name") if index < len(raw) and isinstance(raw[index], dict) else None
            where = f"accounts[{index}]" + (f" ({name})" if isinstance(name, str) else "")
            loc = loc[2:]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        problems.append((where, f"{field + ': ' if field else ''}{_explain(error)}"))
    return "\n".join(f"{path}: {line}" for line in problem_lines(problems))


# YAML's own words for the mistakes people make, and what to do about each. libyaml and PyYAML
# word some of them differently: matched on a part both share.
_YAML_PROBLEMS = (
    (
        "mapping values are not allowed",
        "a ':' followed by a space inside a value: put the value in quotes, or check this line's "
        "indentation against the lines above",
    ),
    ("could not find expected ':'", "expected 'key: value': a ':' is missing, or a quote is not closed"),
    (
        "did not find expected key",
        "expected a 'key: value' line at this indentation: check it against the lines above",
    ),
    (
        "did not find expected '-' indicator",
        "expected a '- ' list item at this indentation: check it against the lines above",
    ),
    ("expected <block end>", "unexpected indentation: check this line against the lines above"),
    ("did not find expected ','", "a '[' or '{' is not closed, or two items lack a ',' between them"),
    ("end of stream", "the file ends inside a quoted value or a bracket: close it"),
    ("undefined alias", "'*' starts an alias here, and no '&' anchor defines it: put the value in quotes"),
    (
        "unknown escape character",
        "a backslash in a double-quoted value starts an unknown escape: use single quotes, or write \\\\",
    ),
    ("cannot start any token", "a value cannot start with this character: put the value in quotes"),
)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """What is wrong at the error's mark, in rotator's words rather than the YAML scanner's."""
    problem = str(getattr(exc, "problem", None) or "")
    if "given twice" in problem or "expected a string as mapping key" in problem:  # _Loader's own words
        return problem
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        lines = text.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        if "\t" in line[: mark.column + 1] or "tab" in problem:
            return "a tab character: YAML indents with spaces only (replace the tab with spaces)"
    for words, explanation in _YAML_PROBLEMS:
        if words in problem:
            return explanation
    return f"the YAML parser says: {problem}" if problem else "expected YAML"


def _explain(error: Any) -> str:
    kind, message, loc = error["type"], str(error["msg"]), tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "required, and missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):  # pydantic names its class here
        return "expected a mapping (indented key: value lines)"
    if kind in ("list_type", "tuple_type"):  # "tuple" is Python's word; YAML has lists
        return "expected a list (one '- ' item a line)"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and loc[-1] == "account_id":
        return "expected 32 hexadecimal characters"
    if kind == "string_pattern_mismatch" and loc[-1] == "name":
        return "expected letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)"
    if kind == "string_pattern_mismatch" and loc[-1] == "lease_name":
        return (
            "expected a Kubernetes object name: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    if kind == "string_pattern_mismatch" and loc[-1] == "namespace":
        return (
            "expected a Kubernetes namespace: at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if kind == "string_pattern_mismatch":
        # Never repeated: a value here that is not a name is most likely the secret itself.
        return (
            "not an environment variable name: expected the name of an environment variable "
            "(letters, digits and '_', such as CLOUDFLARE_API_TOKEN), not its value"
        )
    if kind == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _expected_range(loc) + _given(error.get("input"))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected a whole number"
    if kind in ("float_type", "float_parsing"):
        return "expected a number"
    if kind == "finite_number":
        return "expected a finite number (.inf and .nan are not)"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind == "string_type":
        return "expected text (in quotes if YAML would read it as something else)"
    if kind == "too_short" and loc == ("accounts",):
        return "expected at least one account"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length', 1)} item(s)"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}"
    if message.startswith("Input should be "):  # the rest of pydantic's wording reads as expected
        return "expected " + message.removeprefix("Input should be ")
    return f"expected: {message[0].lower()}{message[1:]}"


def _fields_at(loc: tuple[Any, ...]) -> dict[str, FieldInfo]:
    """The keys a mapping at ``loc`` may have (empty when ``loc`` is not a known mapping)."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: the list's own model
        info = model.model_fields.get(part)
        inner = _model_in(info.annotation) if info is not None else None
        if inner is None:
            return {}
        model = inner
    return dict(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None``, ``tuple[X, ...]`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def _all_keys(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, str]:
    """Every key's name and its full dotted path, sections first (for a key at the wrong level)."""
    keys: dict[str, str] = {}
    for name, info in model.model_fields.items():
        inner = _model_in(info.annotation)
        if inner is not None and name != "accounts":
            keys.update(_all_keys(inner, f"{prefix}{name}."))
        keys.setdefault(name, prefix + name)
    return keys


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """An unknown key, with the key the user probably meant (misspelled, or at another level)."""
    key, here = loc[-1], _fields_at(loc[:-1])
    if isinstance(key, str):
        close = difflib.get_close_matches(key, list(here), n=1)
        if close:
            return f"unknown key: did you mean {close[0]}?"
        elsewhere = _all_keys().get(key)
        if elsewhere is not None and elsewhere != key:
            return f"unknown key here: did you mean {elsewhere}? (check its level of indentation)"
    return "unknown key (check its spelling and its level of indentation)"


def _given(value: Any) -> str:
    """``, got VALUE`` for a number or a duration out of range (never a secret), else nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float | str) or len(str(value)) > 40:
        return ""
    if isinstance(value, str):
        return f", got '{value}'"
    return f", got {value:g}" if isinstance(value, float) else f", got {value}"


def _expected_range(loc: tuple[Any, ...]) -> str:
    """The whole range a number may take, from the field's bounds (pydantic names only one)."""
    info = _fields_at(loc[:-1]).get(loc[-1]) if isinstance(loc[-1], str) else None
    metadata = info.metadata if info is not None else []
    low = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    above = next((m.gt for m in metadata if isinstance(m, annotated_types.Gt)), None)
    high = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    if any(getattr(m, "func", None) is parse_duration for m in metadata):
        what = "a duration"
    elif info is not None and (info.annotation is int or int in get_args(info.annotation)):
        what = "a whole number"
    else:
        what = "a number"
    if low is not None and high is not None:
        return f"expected {what} from {low} to {high}"
    if above is not None:
        return f"expected {what} {'longer than' if what == 'a duration' else 'above'} {above}"
    if low is not None:
        return f"expected {what} of at least {low}"
    if high is not None:
        return f"expected {what} of at most {high}"
    return f"expected {what} within the allowed range"
