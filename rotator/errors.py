"""rotator's one exception tree.

Every error rotator raises on purpose derives from ``RotatorError``; third-party errors
(httpx, pydantic, yaml) are translated into it at one boundary each, with ``raise ... from exc``.

    RotatorError
    ├── ConfigError                  the config file cannot be used (names file, account, field)
    ├── CredentialError              a credential's env var is unset or its file is absent/empty
    ├── UnknownAccountError          a command named an account the config does not have
    └── CloudflareError              talking to Cloudflare failed
        ├── TransportError           no response arrived (timeout, connection refused/reset)
        │   └── ConnectError         the connection was never made: nothing was sent
        ├── RateLimitedError         429; carries ``retry_after`` in seconds
        ├── ServerError              5xx, often an HTML page from Cloudflare's edge
        ├── APIError                 4xx other than 429, or a 200 whose ``success`` is false
        │   ├── AuthError            401/403: the token is wrong or lacks the permission
        │   └── NotFoundError        404: no such account (or the token cannot see it)
        ├── ResponseError            a 200 whose body is not the JSON Cloudflare promises
        ├── RotationUnconfirmed      a rotate POST may have been applied and could not be confirmed
        └── Abandoned                a request was not sent: rotator is shutting down

No message built here ever contains a token or key: messages are made from the account, the
operation and Cloudflare's own error texts only.
"""

from __future__ import annotations

from dataclasses import dataclass


class RotatorError(Exception):
    """Root of every error rotator raises on purpose."""


class ConfigError(RotatorError):
    """The config file cannot be used; the message says where and what was expected."""


class CredentialError(RotatorError):
    """A configured credential cannot be read (env var unset, file absent or empty)."""


class UnknownAccountError(RotatorError):
    """A command named an account that is not in the config."""


class CloudflareError(RotatorError):
    """Talking to Cloudflare failed."""


class TransportError(CloudflareError):
    """No HTTP response arrived: a timeout, a refused or a dropped connection."""


class ConnectError(TransportError):
    """The connection was never established, so the request was never sent."""


@dataclass(frozen=True)
class CloudflareMessage:
    """One entry of Cloudflare's ``errors`` list."""

    code: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})" if self.code is not None else self.message


class HTTPStatusError(CloudflareError):
    """Cloudflare answered, and the answer is a failure."""

    def __init__(self, message: str, *, status: int, errors: tuple[CloudflareMessage, ...] = ()):
        super().__init__(message)
        self.status = status
        self.errors = errors


class RateLimitedError(HTTPStatusError):
    """429: the credential's budget is spent; ``retry_after`` seconds until it is not."""

    def __init__(self, message: str, *, retry_after: float, errors: tuple[CloudflareMessage, ...] = ()):
        super().__init__(message, status=429, errors=errors)
        self.retry_after = retry_after


class ServerError(HTTPStatusError):
    """5xx from Cloudflare or its edge."""


class APIError(HTTPStatusError):
    """A 4xx (not 429) or a 200 with ``success: false``: retrying will not help."""


class AuthError(APIError):
    """401/403: the credential is wrong or lacks the permission the operation needs."""


class NotFoundError(APIError):
    """404: no such account, or the credential cannot see it."""


class ResponseError(CloudflareError):
    """A success status whose body is not the JSON envelope Cloudflare promises."""


class RotationUnconfirmed(CloudflareError):
    """A rotate POST may have been applied, and re-reading the configuration failed.

    Nothing is sent again: the attempt is remembered as a possible rotation so the minimum
    gap holds, and the next check decides from what Cloudflare then reports.
    """


class Abandoned(CloudflareError):
    """A request waiting for its credential's budget (or a backoff) was not sent: shutdown."""
