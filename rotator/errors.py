"""rotator's one exception tree.

Every error rotator raises on purpose derives from ``RotatorError``; third-party errors
(httpx, pydantic, yaml) are translated into it at one boundary each, with ``raise ... from exc``.

    RotatorError
    ├── ConfigError                  the config file cannot be used (names file, account, field)
    ├── CredentialError              a credential's env var is unset or its file is absent/empty
    ├── StateFileError               the state file cannot be read or written
    ├── InternalError                a check failed in a way rotator did not foresee (a bug)
    ├── ListenError                  the HTTP endpoints' address cannot be listened on (in use)
    ├── CertsError                   a team's certs endpoint gave no usable key set (publication)
    ├── KubernetesError              the Kubernetes API (the Lease, the ledger's ConfigMap) failed us
    │   ├── KubernetesConflict       409: another writer changed the object first (resourceVersion)
    │   └── KubernetesNotFound       404: the object is gone (deleted since it was read)
    ├── NotLeading                   a rotation was not sent: this replica does not hold the Lease
    └── CloudflareError              talking to Cloudflare failed
        ├── TransportError           no response arrived (timeout, connection refused/reset)
        │   └── ConnectError         the connection was never made: nothing was sent
        ├── HTTPStatusError          Cloudflare answered, and not with success
        │   ├── RateLimitedError     429; carries ``retry_after`` in seconds
        │   ├── ServerError          5xx, often an HTML page from Cloudflare's edge
        │   └── APIError             4xx other than 429, or a 200 whose ``success`` is false
        │       ├── AuthError        401/403: the token is wrong or lacks the permission
        │       └── NotFoundError    404: no such account (or the token cannot see it)
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


class StateFileError(RotatorError):
    """The state file (the rotation ledger) cannot be read or written; the message says which."""


class InternalError(RotatorError):
    """A check failed in a way rotator did not foresee: logged with its type, never raised on."""


class ListenError(RotatorError):
    """The address for /metrics, /healthz and /readyz cannot be listened on; the message names it
    and the setting it came from."""


class CertsError(RotatorError):
    """A team's certs endpoint could not be read, or its answer is not a certs document."""


class KubernetesError(RotatorError):
    """A Kubernetes API call failed (no API configured, refused, timed out); the message names the
    object and the call, never a token."""


class KubernetesConflict(KubernetesError):
    """409: the object changed since it was read (or exists already): read it again."""


class KubernetesNotFound(KubernetesError):
    """404: the object is not there (a person deleted it since it was read)."""


class NotLeading(RotatorError):
    """A rotate POST was not sent: this replica does not hold the Lease with time enough left."""


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

    Nothing is sent again: the ledger keeps the attempt open (UNCONFIRMED), which holds the
    minimum gap until a later read settles it (rotator.ledger.ledger).
    """


class Abandoned(CloudflareError):
    """A request waiting for its credential's budget (or a backoff) was not sent: shutdown."""
