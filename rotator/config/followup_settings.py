"""The config sections of what follows a check: ``publication``, ``notify``, and ``team_domain``.

Kept apart from ``rotator.config.model`` so that module stays about the rotation policy; it includes these
models in ``Settings`` and ``AccountSettings``. The rules match the rest of the config: unknown keys
refused, no secret inline (a webhook's secret comes from ``secret_env`` or ``secret_file``), and
``http://`` only for a loopback host, as for ``cloudflare.base_url``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from rotator.config.durations import parse_duration
from rotator.config.urls import checked_url

Duration = Annotated[float, BeforeValidator(parse_duration)]
EventName = Literal[
    "key_rotated",
    "rotation_failed",
    "rotation_unconfirmed",
    "key_published",
    "key_publication_late",
    "key_rotated_elsewhere",
]
EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)
DEFAULT_CERTS_URL = "https://{team_domain}/cdn-cgi/access/certs"
_TEAM_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def team_domain_problem(value: str) -> str | None:
    """What keeps ``value`` from being a team domain, None when it is one: a host name (dot-separated
    labels of letters, digits and '-', each a valid IDNA label), with no scheme, port, path, query or
    userinfo. The one rule for ``accounts[].team_domain`` and for the ``auth_domain`` Cloudflare's
    organization read gives (rotator.after.teams): either becomes the host of the certs URL."""
    parts = [
        part
        for marks, part in (
            ("@", "a user:password@ part"),
            (":", "a port"),
            ("/", "a path"),
            ("?#", "a query"),
        )
        if any(mark in value for mark in marks)
    ]
    if parts:
        return "not a host name: it has " + ", ".join(parts)
    if _TEAM_DOMAIN.match(value.lower()):
        try:
            httpx.URL(f"https://{value}/").host  # noqa: B018 - IDNA: "xn--zz" passes the pattern
        except (httpx.InvalidURL, ValueError):  # idna's IDNAError is a UnicodeError, a ValueError
            pass
        else:
            return None
    return "not a host name (dot-separated labels of letters, digits and '-')"


def _team_domain(value: Any) -> Any:
    if isinstance(value, str) and team_domain_problem(value) is not None:
        raise ValueError("expected a host name such as example.cloudflareaccess.com (no scheme, no path)")
    return value.lower() if isinstance(value, str) else value


TeamDomain = Annotated[str, BeforeValidator(_team_domain)]


class CertsRateLimit(_Strict):
    requests: int = Field(300, ge=1)
    per: Duration = Field(300.0, gt=0)


class PublicationSettings(_Strict):
    """Reading each team's certs endpoint, after every rotation and at every check."""

    enabled: bool = True
    # {team_domain} is replaced by the account's team domain (team_domain, or the organization read).
    certs_url: str = DEFAULT_CERTS_URL
    deadline: Duration = Field(300.0, gt=0)
    timeout: Duration = Field(5.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=256)
    # The endpoint's own budget, never counted against Cloudflare's API budget.
    rate_limit: CertsRateLimit = CertsRateLimit()
    # A week: a team renamed in the dashboard is rare, and each read is an API request per account
    # (at a day, as many as the due-aware checks themselves: issue 20).
    team_domain_refresh: Duration = Field(7 * 86400.0, gt=0)

    @field_validator("certs_url")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{team_domain}" not in value:
            raise ValueError("expected a URL containing {team_domain}, such as " + DEFAULT_CERTS_URL)
        try:
            sample = value.format(team_domain="team.cloudflareaccess.com")
        except (IndexError, KeyError, ValueError):
            raise ValueError("expected {team_domain} as the only placeholder in the URL") from None
        checked_url(sample, example=DEFAULT_CERTS_URL, carried="the certs read")
        return value


class WebhookSettings(_Strict):
    """One receiver of CloudEvents: where, which events, and how the body is signed."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    url: str
    events: tuple[EventName, ...] = EVENT_NAMES
    secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    secret_file: Path | None = None
    timeout: Duration = Field(5.0, gt=0)
    attempts: int = Field(5, ge=1, le=20)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("secret", "token", "password", "key"):
                if key in data:
                    raise ValueError(
                        f"'{key}' holds a secret, and secrets are never read from the config file: "
                        "name an environment variable with secret_env, or a file with secret_file"
                    )
        return data

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if self.secret_env is not None and self.secret_file is not None:
            raise ValueError("set secret_env or secret_file, not both")
        if not self.events:
            raise ValueError("events: expected at least one event name (leave it out for all)")
        return self

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        return checked_url(value, example="https://hooks.example.com/rotator", carried="every notification")


class NotifySettings(_Strict):
    webhooks: tuple[WebhookSettings, ...] = ()
    # Notifications waiting per webhook; past it the newest is dropped (logged and counted).
    queue_size: int = Field(1000, ge=1, le=100_000)
    # The CloudEvents `source` of every notification.
    source: str = Field("rotator", min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> NotifySettings:
        names = [w.name or f"webhook-{i}" for i, w in enumerate(self.webhooks)]
        if len(set(names)) != len(names):
            raise ValueError("webhooks: each webhook needs a unique name")
        return self

    def named(self) -> tuple[tuple[str, WebhookSettings], ...]:
        """Each webhook with its name (``webhook-<index>`` when none is given): logs and metrics use it."""
        return tuple((w.name or f"webhook-{i}", w) for i, w in enumerate(self.webhooks))
