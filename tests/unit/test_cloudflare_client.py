"""The Cloudflare client against ``httpx.MockTransport``: what goes on the wire, what comes back.

Every test drives the real ``CloudflareClient`` through a scripted fake of Cloudflare's API and
a fake clock (``tests.unit.test_ratelimit.FakeClock``): retries and retry-after pauses take no real
time: the backoff between attempts is a pause on that clock.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from rotator import __version__
from rotator.cloudflare.client import (
    DEFAULT_RETRY_AFTER,
    READ_ATTEMPTS,
    CloudflareClient,
)
from rotator.config.credentials import Credential, CredentialSource
from rotator.core.keys import KeyConfig
from rotator.errors import (
    Abandoned,
    APIError,
    AuthError,
    CloudflareError,
    CloudflareMessage,
    ConnectError,
    NotFoundError,
    RateLimitedError,
    ResponseError,
    ServerError,
    TransportError,
)
from tests.support.clock import FakeClock, settle

BASE_URL = "https://api.cloudflare.test/client/v4"
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
KEYS_PATH = f"/client/v4/accounts/{ACCOUNT}/access/keys"
TOKEN = "secret-token"
LEGACY_KEY = "legacy-global-key-0123456789"
DATE = "Wed, 01 May 2024 12:00:00 GMT"
DATE_AS_DATETIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LOCAL_NOW = datetime(2030, 1, 1, tzinfo=UTC)  # the injected clock: visibly not Cloudflare's
BEFORE = "2024-04-01T09:30:00Z"
AFTER = "2024-05-01T12:00:00Z"
FIFTEEN_MINUTES = 900.0  # the documented default of cloudflare.max_retry_after
READ_PERMISSION = "Access: Organizations, Identity Providers, and Groups Read"
WRITE_PERMISSION = "Access: Organizations, Identity Providers, and Groups Write"


def token(name: str = "X", value: str = TOKEN) -> Credential:
    return CredentialSource.token_env(name).load({name: value})


def keys(last: str | None = BEFORE, days: float = 3, interval: float = 42) -> dict[str, Any]:
    return {
        "days_until_next_rotation": days,
        "key_rotation_interval_days": interval,
        "last_key_rotation_at": last,
    }


def ok(result: Any = None, *, date: str | None = DATE, **top_level: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "success": True,
        "errors": [],
        "messages": [],
        "result": keys() if result is None else result,
    }
    return httpx.Response(200, json=body | top_level, headers={"date": date} if date else {})


def failure(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}
    return httpx.Response(status, json=body, headers=headers)


def rate_limited(retry_after: str | None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return failure(429, 10000, "Rate limited. Please wait and try again.", headers)


def html(status: int) -> httpx.Response:
    page = f"<html><head><title>{status}</title></head><body>cloudflare</body></html>"
    return httpx.Response(status, text=page, headers={"content-type": "text/html"})


def before_rotation(last: str | None = BEFORE) -> KeyConfig:
    return KeyConfig(3.0, 42.0, None if last is None else datetime.fromisoformat(last), DATE_AS_DATETIME)


Reply = httpx.Response | Exception


class FakeCloudflare:
    """Answers each method from its own script, in order (the last reply repeats), and records
    every request that reached it and when, by the fake clock."""

    def __init__(self, clock: FakeClock, scripts: dict[str, list[Reply]]) -> None:
        self.clock = clock
        self.scripts = scripts
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.clock.now)
        script = self.scripts.get(request.method)
        assert script, f"unexpected {request.method} {request.url}"
        reply = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(reply, Exception):
            raise reply
        # A fresh response each time: one scripted reply may answer many requests.
        return httpx.Response(reply.status_code, headers=reply.headers, content=reply.read())

    def sent(self, method: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method]

    def times_of(self, method: str) -> list[float]:
        return [t for r, t in zip(self.requests, self.times, strict=True) if r.method == method]


@dataclass
class Api:
    client: CloudflareClient
    cloudflare: FakeCloudflare
    clock: FakeClock


@pytest.fixture
async def api() -> AsyncIterator[Callable[..., Api]]:
    """Factory: ``api(GET=[...], PUT=[...], POST=[...], auto=True, **client_kwargs)``."""
    clients: list[CloudflareClient] = []

    def make(*, auto: bool = True, GET: Any = (), PUT: Any = (), POST: Any = (), **kwargs: Any) -> Api:
        clock = FakeClock(auto=auto, start=1000.0)
        cloudflare = FakeCloudflare(clock, {"GET": list(GET), "PUT": list(PUT), "POST": list(POST)})
        client = CloudflareClient(
            BASE_URL,
            transport=httpx.MockTransport(cloudflare.handler),
            clock=lambda: LOCAL_NOW,
            monotonic=clock.monotonic,
            sleep=clock.sleep,
            **kwargs,
        )
        clients.append(client)
        return Api(client, cloudflare, clock)

    yield make
    for client in clients:
        await client.aclose()


def operation(client: CloudflareClient, method: str, credential: Credential) -> Awaitable[KeyConfig]:
    """The client operation that sends ``method``."""
    if method == "GET":
        return client.get_keys(ACCOUNT, credential)
    if method == "PUT":
        return client.set_interval(ACCOUNT, credential, 30)
    return client.rotate(ACCOUNT, credential)


def text_of(exc: BaseException) -> str:
    """Everything an operator could see of an error: message and repr, down the whole chain."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# --- the envelope -------------------------------------------------------------------------------


async def test_reads_the_key_configuration_from_result(api: Callable[..., Api]) -> None:
    a = api(GET=[ok(keys(last="2024-04-01T09:30:00Z", days=2.5, interval=30))])
    config = await a.client.get_keys(ACCOUNT, token())
    assert config == KeyConfig(
        days_until_next_rotation=2.5,
        key_rotation_interval_days=30.0,
        last_key_rotation_at=datetime(2024, 4, 1, 9, 30, tzinfo=UTC),
        observed_at=DATE_AS_DATETIME,
    )
    assert a.cloudflare.requests[0].url.path == KEYS_PATH


async def test_reads_the_2024_shape_with_the_fields_at_the_top_level(api: Callable[..., Api]) -> None:
    body = {"success": True, "errors": [], "messages": [], **keys(days=7, interval=21)}
    a = api(GET=[httpx.Response(200, json=body, headers={"date": DATE})])
    config = await a.client.get_keys(ACCOUNT, token())
    assert (config.days_until_next_rotation, config.key_rotation_interval_days) == (7.0, 21.0)
    assert config.last_key_rotation_at == datetime(2024, 4, 1, 9, 30, tzinfo=UTC)


async def test_result_wins_over_the_top_level_and_the_top_level_fills_gaps(api: Callable[..., Api]) -> None:
    a = api(
        GET=[ok({"days_until_next_rotation": 5}, days_until_next_rotation=99, key_rotation_interval_days=60)]
    )
    config = await a.client.get_keys(ACCOUNT, token())
    assert (config.days_until_next_rotation, config.key_rotation_interval_days) == (5.0, 60.0)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"success": True, "errors": [], "messages": []}, id="result-missing"),
        pytest.param({"success": True, "errors": [], "messages": [], "result": None}, id="result-null"),
        pytest.param({"success": True, "errors": [], "messages": [], "result": {}}, id="result-empty"),
        pytest.param({"success": True, "errors": [], "messages": [], "result": []}, id="result-a-list"),
    ],
)
async def test_get_without_any_key_configuration_is_a_response_error(
    api: Callable[..., Api], body: dict[str, Any]
) -> None:
    a = api(GET=[httpx.Response(200, json=body)])
    with pytest.raises(ResponseError, match="no key configuration"):
        await a.client.get_keys(ACCOUNT, token())
    assert len(a.cloudflare.requests) == 1  # a well-formed answer: asking again will not help


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("days_until_next_rotation", "3"),
        ("days_until_next_rotation", True),
        ("key_rotation_interval_days", "42"),
        ("key_rotation_interval_days", [42]),
        ("last_key_rotation_at", 1714564800),
        ("last_key_rotation_at", "last Tuesday"),
        ("last_key_rotation_at", {"at": "2024-05-01T12:00:00Z"}),
        ("last_key_rotation_at", "2024-05-01T12:00:00"),  # ISO 8601, not RFC 3339: no offset
        ("last_key_rotation_at", "2024-05-01"),
    ],
)
async def test_a_field_of_the_wrong_type_is_a_response_error_naming_it(
    api: Callable[..., Api], field: str, value: Any
) -> None:
    a = api(GET=[ok(keys() | {field: value})])
    with pytest.raises(ResponseError, match=field):
        await a.client.get_keys(ACCOUNT, token())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.12345Z", datetime(2024, 5, 1, 12, 0, 0, 123450, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T14:00:00.5+02:00", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        # The whole of RFC 3339: lower-case t and z, a leap second, any offset, any fraction.
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, 0, 0, tzinfo=UTC)),
        ("2024-05-01T02:15:00-09:45", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
async def test_last_rotation_times_are_read_as_utc(
    api: Callable[..., Api], value: str, expected: datetime
) -> None:
    a = api(GET=[ok(keys(last=value))])
    config = await a.client.get_keys(ACCOUNT, token())
    assert config.last_key_rotation_at == expected
    assert config.last_key_rotation_at is not None
    assert config.last_key_rotation_at.utcoffset() is not None


async def test_cloudflares_date_header_is_when_the_configuration_was_observed(
    api: Callable[..., Api],
) -> None:
    a = api(GET=[ok(date="Thu, 02 May 2024 08:15:30 GMT"), ok(date=None)])
    first = await a.client.get_keys(ACCOUNT, token())
    assert first.observed_at == datetime(2024, 5, 2, 8, 15, 30, tzinfo=UTC)
    # Without a Date header, the client's own (injected) clock.
    second = await a.client.get_keys(ACCOUNT, token())
    assert second.observed_at == LOCAL_NOW


# --- what goes on the wire ----------------------------------------------------------------------


async def test_an_api_token_is_sent_as_a_bearer_token(api: Callable[..., Api]) -> None:
    a = api(GET=[ok()])
    await a.client.get_keys(ACCOUNT, token())
    sent = a.cloudflare.requests[0]
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-auth-key" not in sent.headers
    assert "x-auth-email" not in sent.headers


async def test_a_legacy_global_key_is_sent_as_email_and_key(api: Callable[..., Api]) -> None:
    legacy = CredentialSource.legacy("CF_EMAIL", "CF_KEY").load(
        {"CF_EMAIL": "ops@example.com", "CF_KEY": LEGACY_KEY}
    )
    a = api(GET=[ok()])
    await a.client.get_keys(ACCOUNT, legacy)
    sent = a.cloudflare.requests[0]
    assert sent.headers["x-auth-email"] == "ops@example.com"
    assert sent.headers["x-auth-key"] == LEGACY_KEY
    assert "authorization" not in sent.headers


async def test_every_request_names_rotator_and_its_version(api: Callable[..., Api]) -> None:
    a = api(GET=[ok()], PUT=[ok()], POST=[ok(keys(last=AFTER))])
    await a.client.get_keys(ACCOUNT, token())
    await a.client.set_interval(ACCOUNT, token(), 30)
    await a.client.rotate(ACCOUNT, token())
    agents = {r.headers["user-agent"] for r in a.cloudflare.requests}
    assert len(agents) == 1
    assert agents.pop().startswith(f"rotator/{__version__} ")


async def test_put_sends_exactly_the_interval(api: Callable[..., Api]) -> None:
    a = api(PUT=[ok(keys(interval=30))])
    config = await a.client.set_interval(ACCOUNT, token(), 30)
    sent = a.cloudflare.requests[0]
    assert (sent.method, sent.url.path) == ("PUT", KEYS_PATH)
    assert sent.headers["content-type"] == "application/json"
    assert httpx.Response(200, content=sent.content).json() == {"key_rotation_interval_days": 30}
    assert config.key_rotation_interval_days == 30.0


async def test_get_and_rotate_send_no_body(api: Callable[..., Api]) -> None:
    a = api(GET=[ok()], POST=[ok(keys(last=AFTER))])
    await a.client.get_keys(ACCOUNT, token())
    await a.client.rotate(ACCOUNT, token())
    get, post = a.cloudflare.requests
    assert (get.method, get.url.path, get.content) == ("GET", KEYS_PATH, b"")
    assert (post.method, post.url.path, post.content) == ("POST", f"{KEYS_PATH}/rotate", b"")
    assert "content-type" not in post.headers


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "permission"),
    [("GET", READ_PERMISSION), ("PUT", WRITE_PERMISSION), ("POST", WRITE_PERMISSION)],
)
async def test_a_403_is_an_auth_error_naming_the_missing_permission(
    api: Callable[..., Api], method: str, permission: str
) -> None:
    a = api(**{method: [failure(403, 10000, "Authentication error")]})
    with pytest.raises(AuthError) as caught:
        await operation(a.client, method, token())
    assert f"it lacks the permission '{permission}' on this account" in str(caught.value)
    assert "Authentication error (code 10000)" in str(caught.value)
    assert caught.value.status == 403
    assert len(a.cloudflare.requests) == 1  # refused at once: no retry, no re-read


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
async def test_a_401_says_the_credential_is_invalid_not_that_a_permission_is_missing(
    api: Callable[..., Api], method: str
) -> None:
    a = api(**{method: [failure(401, 10000, "Authentication error")]})
    with pytest.raises(AuthError) as caught:
        await operation(a.client, method, token())
    message = str(caught.value)
    assert "is invalid, expired or revoked" in message
    assert "permission" not in message  # no permission makes an unknown token work
    assert "Authentication error (code 10000)" in message
    assert caught.value.status == 401
    assert len(a.cloudflare.requests) == 1


async def test_an_unknown_account_is_not_found(api: Callable[..., Api]) -> None:
    a = api(
        GET=[
            failure(404, 7003, "Could not route to /accounts/..., perhaps your object identifier is invalid?")
        ]
    )
    with pytest.raises(
        NotFoundError, match=r"404.*perhaps your object identifier is invalid\? \(code 7003\)"
    ):
        await a.client.get_keys(ACCOUNT, token())
    assert len(a.cloudflare.requests) == 1


async def test_a_refused_request_carries_cloudflares_message_and_code(api: Callable[..., Api]) -> None:
    a = api(PUT=[failure(400, 12130, "key_rotation_interval_days must be between 21 and 365")])
    with pytest.raises(APIError) as caught:
        await a.client.set_interval(ACCOUNT, token(), 5)
    assert type(caught.value) is APIError
    assert caught.value.status == 400
    assert caught.value.errors == (
        CloudflareMessage(12130, "key_rotation_interval_days must be between 21 and 365"),
    )
    assert "key_rotation_interval_days must be between 21 and 365 (code 12130)" in str(caught.value)


async def test_a_200_saying_success_false_is_an_api_error(api: Callable[..., Api]) -> None:
    body = {
        "success": False,
        "errors": [{"code": 9109, "message": "Unauthorized to access requested resource"}],
    }
    a = api(GET=[httpx.Response(200, json=body | {"messages": [], "result": None})])
    with pytest.raises(
        APIError, match=r"success: false \(Unauthorized to access requested resource \(code 9109\)\)"
    ):
        await a.client.get_keys(ACCOUNT, token())
    assert len(a.cloudflare.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(httpx.Response(200, text="<html><body>Just a moment...</body></html>"), id="html"),
        pytest.param(httpx.Response(200, content=b""), id="empty"),
        pytest.param(httpx.Response(200, json=[keys()]), id="json-array"),
        pytest.param(httpx.Response(200, content=b"\xff\xfe{not utf-8"), id="not-utf8"),
    ],
)
async def test_a_200_that_is_not_a_json_object_is_a_response_error(
    api: Callable[..., Api], reply: httpx.Response
) -> None:
    a = api(GET=[reply])
    with pytest.raises(ResponseError, match="not a JSON object"):
        await a.client.get_keys(ACCOUNT, token())


async def test_an_html_5xx_from_the_edge_is_a_server_error_without_the_page(api: Callable[..., Api]) -> None:
    a = api(GET=[html(502)])
    with pytest.raises(ServerError) as caught:
        await a.client.get_keys(ACCOUNT, token())
    assert caught.value.status == 502
    assert "502 (Bad Gateway)" in str(caught.value)
    assert "<html" not in str(caught.value)


@pytest.mark.parametrize(
    "reply",
    [
        failure(401, 10000, "Authentication error"),
        failure(403, 10000, "Authentication error"),
        failure(404, 7003, "Could not route"),
        failure(400, 12130, "bad request"),
        rate_limited("0"),
        html(500),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"success": False, "errors": []}),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
    ids=lambda r: type(r).__name__ if isinstance(r, Exception) else str(r.status_code),
)
@pytest.mark.parametrize("legacy", [False, True], ids=["token", "legacy-key"])
async def test_no_error_message_contains_the_secret(
    api: Callable[..., Api], reply: Reply, legacy: bool
) -> None:
    credential = (
        CredentialSource.legacy("E", "K").load({"E": "ops@example.com", "K": LEGACY_KEY})
        if legacy
        else token()
    )
    a = api(GET=[reply], PUT=[reply], POST=[reply])
    errors: list[CloudflareError] = []
    for method in ("GET", "PUT", "POST"):
        with pytest.raises(CloudflareError) as caught:
            await operation(a.client, method, credential)
        errors.append(caught.value)
    for error in errors:
        assert TOKEN not in text_of(error)
        assert LEGACY_KEY not in text_of(error)


# --- retries of GET and PUT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "transient",
    [
        pytest.param(html(500), id="500"),
        pytest.param(html(502), id="502"),
        pytest.param(failure(503, 0, "Service unavailable"), id="503"),
        pytest.param(rate_limited("0"), id="429"),
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
        pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), id="connect-error"),
        pytest.param(httpx.RemoteProtocolError("Server disconnected"), id="dropped"),
    ],
)
async def test_get_and_put_are_retried_through_a_transient_failure(
    api: Callable[..., Api], transient: Reply
) -> None:
    a = api(GET=[transient, ok()], PUT=[transient, ok(keys(interval=30))])
    assert (await a.client.get_keys(ACCOUNT, token())).days_until_next_rotation == 3.0
    assert (await a.client.set_interval(ACCOUNT, token(), 30)).key_rotation_interval_days == 30.0
    assert [r.method for r in a.cloudflare.requests] == ["GET", "GET", "PUT", "PUT"]
    assert {r.content for r in a.cloudflare.sent("PUT")} == {b'{"key_rotation_interval_days":30}'}


@pytest.mark.parametrize(
    ("transient", "error"),
    [
        (html(503), ServerError),
        (rate_limited("0"), RateLimitedError),
        (httpx.ReadTimeout("timed out"), TransportError),
        (httpx.ConnectError("refused"), ConnectError),
    ],
)
async def test_retries_are_bounded_and_the_last_error_surfaces(
    api: Callable[..., Api], transient: Reply, error: type[CloudflareError]
) -> None:
    a = api(GET=[transient])
    with pytest.raises(error):
        await a.client.get_keys(ACCOUNT, token())
    assert len(a.cloudflare.requests) == READ_ATTEMPTS


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 422])
async def test_other_4xx_are_not_retried(api: Callable[..., Api], status: int) -> None:
    a = api(GET=[failure(status, 1000, "no"), ok()], PUT=[failure(status, 1000, "no"), ok()])
    with pytest.raises(APIError):
        await a.client.get_keys(ACCOUNT, token())
    with pytest.raises(APIError):
        await a.client.set_interval(ACCOUNT, token(), 30)
    assert [r.method for r in a.cloudflare.requests] == ["GET", "PUT"]


async def test_a_429_without_retry_after_pauses_the_default_time(api: Callable[..., Api]) -> None:
    a = api(GET=[rate_limited(None), ok()])
    await a.client.get_keys(ACCOUNT, token())
    assert a.cloudflare.times_of("GET") == [1000.0, 1000.0 + DEFAULT_RETRY_AFTER]


async def test_retry_after_far_above_60s_pauses_the_whole_credential(api: Callable[..., Api]) -> None:
    """A 429 with retry-after 120 holds every request on that credential (however the secret was
    configured) for 120 s; another credential's requests go on."""
    a = api(auto=False, GET=[rate_limited("120"), ok()])
    first = token("CF_TOKEN_PRODUCTION")
    same_secret = token("CF_TOKEN_STAGING")  # another env var, the same token: the same budget
    other = token("CF_TOKEN_OTHER", "another-secret")

    retried = asyncio.create_task(a.client.get_keys(ACCOUNT, first))
    await settle()
    assert len(a.cloudflare.requests) == 1  # the 429
    assert a.client.limiter(first).paused_for == 120
    queued = asyncio.create_task(a.client.get_keys(ACCOUNT, same_secret))
    unaffected = asyncio.create_task(a.client.get_keys(ACCOUNT, other))
    await settle()
    assert unaffected.done()
    await unaffected
    assert [r.headers["authorization"] for r in a.cloudflare.requests[1:]] == ["Bearer another-secret"]

    await a.clock.advance(119.5)  # past 60 s: obeyed, not capped
    assert not retried.done()
    assert not queued.done()
    assert len(a.cloudflare.requests) == 2
    await a.clock.advance(0.5)
    await asyncio.gather(retried, queued)
    assert a.cloudflare.times_of("GET")[2:] == [1120.0, 1120.0]


@pytest.mark.parametrize(
    "retry_after",
    ["inf", "nan", "1e308", "-inf", "86400", "Fri, 31 Dec 9999 23:59:59 GMT"],
)
async def test_an_absurd_retry_after_pauses_the_credential_for_max_retry_after_only(
    api: Callable[..., Api], retry_after: str
) -> None:
    """One bad header froze a credential until a restart: the pause is capped (15 minutes by
    default), a value that is not finite counts as the cap, and a warning names both."""
    a = api(GET=[rate_limited(retry_after), ok()])
    with capture_logs() as logs:
        await a.client.get_keys(ACCOUNT, token())
    assert a.cloudflare.times_of("GET") == [1000.0, 1000.0 + FIFTEEN_MINUTES]
    assert [e for e in logs if e["event"] == "retry_after_capped"] == [
        {
            "event": "retry_after_capped",
            "log_level": "warning",
            "retry_after": retry_after,
            "max_retry_after_seconds": FIFTEEN_MINUTES,
        }
    ]


async def test_max_retry_after_is_the_clients_to_choose(api: Callable[..., Api]) -> None:
    a = api(GET=[rate_limited("120"), rate_limited("30"), ok()], max_retry_after=60.0)
    with capture_logs() as logs:
        await a.client.get_keys(ACCOUNT, token())
    assert a.cloudflare.times_of("GET") == [1000.0, 1060.0, 1090.0]  # capped, then obeyed
    assert [(e["retry_after"], e["max_retry_after_seconds"]) for e in logs if "retry_after" in e] == [
        ("120", 60.0)
    ]


async def test_a_retry_after_date_is_read_against_cloudflares_clock(api: Callable[..., Api]) -> None:
    """Retry-after as an HTTP date: from the answer's own Date header, not the local clock."""
    limited = rate_limited("Wed, 01 May 2024 12:02:00 GMT")
    limited.headers["date"] = DATE  # 12:00:00: two minutes before; the local clock says 2030
    a = api(GET=[limited, ok()])
    await a.client.get_keys(ACCOUNT, token())
    assert a.cloudflare.times_of("GET") == [1000.0, 1120.0]


async def test_a_paused_credential_does_not_take_the_slots_of_others(api: Callable[..., Api]) -> None:
    """max_concurrency bounds requests in flight; requests waiting out a 429 are not in flight."""
    a = api(auto=False, max_concurrency=1, GET=[rate_limited("300"), ok()])
    paused, other = token("A", "paused-secret"), token("B", "other-secret")
    waiting = asyncio.create_task(a.client.get_keys(ACCOUNT, paused))
    await settle()
    assert a.client.limiter(paused).paused_for == 300
    unaffected = asyncio.create_task(a.client.get_keys(ACCOUNT, other))
    await settle()
    assert unaffected.done(), "a request on another credential waited for a 429 that was not its own"
    await unaffected
    await a.clock.advance(300)
    await waiting


# --- rotate -------------------------------------------------------------------------------------
# The client sends one POST and says what came back; what that means for the rotation (and whether
# it may be sent again) is the rotation protocol's to judge: tests/unit/test_rotation.py.


async def test_rotate_sends_one_post_and_returns_the_new_configuration(api: Callable[..., Api]) -> None:
    a = api(POST=[ok(keys(last=AFTER, days=42))])
    after = await a.client.rotate(ACCOUNT, token())
    assert after.last_key_rotation_at == datetime.fromisoformat(AFTER)
    assert after.observed_at == DATE_AS_DATETIME
    assert [r.method for r in a.cloudflare.requests] == ["POST"]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        pytest.param(html(502), ServerError, id="502"),
        pytest.param(httpx.ReadTimeout("timed out"), TransportError, id="timeout"),
        pytest.param(httpx.RemoteProtocolError("Server disconnected"), TransportError, id="dropped"),
        pytest.param(httpx.Response(200, text="<html>"), ResponseError, id="unreadable-200"),
        pytest.param(rate_limited("120"), RateLimitedError, id="429"),
        pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), ConnectError, id="refused"),
        pytest.param(failure(403, 10000, "Authentication error"), AuthError, id="403"),
        pytest.param(
            httpx.Response(200, json={"success": False, "errors": [{"code": 1001, "message": "nope"}]}),
            APIError,
            id="success-false",
        ),
    ],
)
async def test_a_failed_rotate_is_never_sent_again_by_the_client(
    api: Callable[..., Api], reply: Reply, error: type[Exception]
) -> None:
    a = api(POST=[reply, ok(keys(last=AFTER))], GET=[ok(keys(last=AFTER))])
    with pytest.raises(error):
        await a.client.rotate(ACCOUNT, token())
    assert [r.method for r in a.cloudflare.requests] == ["POST"]


async def test_server_now_follows_cloudflares_date_not_the_local_clock(api: Callable[..., Api]) -> None:
    a = api(GET=[ok()])
    assert a.client.server_now() == LOCAL_NOW  # nothing heard from Cloudflare yet
    await a.client.get_keys(ACCOUNT, token())
    await a.clock.advance(30)
    assert a.client.server_now() == DATE_AS_DATETIME + timedelta(seconds=30)


# --- shutdown -----------------------------------------------------------------------------------


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What asyncio reports on its own ("Task exception was never retrieved" and the like), which
    filterwarnings=error does not see: collected here, and each test asserts there is none."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


async def no_loop_errors(errors: list[dict[str, Any]]) -> None:
    await settle()
    gc.collect()  # a task is reported as never retrieved when it is collected
    await settle()
    assert [context["message"] for context in errors] == []


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
async def test_a_request_waiting_out_a_429_is_abandoned_at_shutdown(
    api: Callable[..., Api], loop_errors: list[dict[str, Any]], method: str
) -> None:
    """Shutdown while requests wait for their credential's budget: Abandoned (a CloudflareError,
    so the check or the rotation logs and counts it), nothing more sent, and nothing left for
    asyncio to report."""
    a = api(auto=False, GET=[rate_limited("120"), ok()], PUT=[ok()], POST=[ok(keys(last=AFTER))])
    credential = token()
    retrying = asyncio.create_task(a.client.get_keys(ACCOUNT, credential))  # its 429 pauses them all
    await settle()
    waiting = asyncio.create_task(operation(a.client, method, credential))
    await settle()
    assert [r.method for r in a.cloudflare.requests] == ["GET"]  # the 429
    assert not retrying.done() and not waiting.done()

    a.client.stop_waiting()
    for task in (retrying, waiting):
        with pytest.raises(Abandoned, match="rotator is shutting down"):
            await task
    await a.clock.advance(120)
    assert [r.method for r in a.cloudflare.requests] == ["GET"]
    await no_loop_errors(loop_errors)


async def test_a_pause_between_rotate_attempts_is_cut_short_by_shutdown(
    api: Callable[..., Api], loop_errors: list[dict[str, Any]]
) -> None:
    a = api(auto=False)
    pausing = asyncio.create_task(a.client.pause(5))
    await settle()
    a.client.stop_waiting()
    with pytest.raises(Abandoned):
        await pausing
    await no_loop_errors(loop_errors)


async def test_a_cancelled_wait_propagates_and_leaves_the_budget_usable(
    api: Callable[..., Api], loop_errors: list[dict[str, Any]]
) -> None:
    """A check cancelled while its request waits out a 429 ends cancelled, not Abandoned, and the
    credential's budget is not left locked behind it: the next request goes once the pause ends."""
    a = api(auto=False, GET=[rate_limited("120"), ok()])
    credential = token()
    waiting = asyncio.create_task(a.client.get_keys(ACCOUNT, credential))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiting.cancelled()

    later = asyncio.create_task(a.client.get_keys(ACCOUNT, credential))
    await a.clock.advance(120)
    assert (await later).days_until_next_rotation == 3
    assert a.cloudflare.times_of("GET") == [1000.0, 1120.0]
    await no_loop_errors(loop_errors)


async def test_retries_wait_a_doubling_backoff_with_jitter_and_each_is_logged(
    api: Callable[..., Api],
) -> None:
    """GET retried on a 503: 0.5 s, then 1 s, then 2 s, each plus up to 0.5 s of jitter, at most
    READ_ATTEMPTS in all, each retry logged with its number and wait."""
    a = api(GET=[html(503), html(503), html(503), ok()])
    with capture_logs() as logs:
        await a.client.get_keys(ACCOUNT, token())
    times = a.cloudflare.times_of("GET")
    assert len(times) == READ_ATTEMPTS == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, floor in zip(gaps, (0.5, 1.0, 2.0), strict=True):
        assert floor <= gap <= floor + 0.5, gaps
    retries = [e for e in logs if e["event"] == "request_retry_scheduled"]
    assert [e["retry_num"] for e in retries] == [1, 2, 3]
    assert [e["wait_seconds"] for e in retries] == [round(gap, 2) for gap in gaps]
    assert {e["error_type"] for e in retries} == {"ServerError"}


async def test_a_backoff_ends_at_shutdown_and_the_request_is_not_sent_again(
    api: Callable[..., Api],
) -> None:
    a = api(GET=[html(503)], auto=False)
    read = asyncio.ensure_future(a.client.get_keys(ACCOUNT, token()))
    await settle()
    assert len(a.cloudflare.requests) == 1  # answered 503; waiting out the backoff
    a.client.stop_waiting()
    with pytest.raises(Abandoned):
        await read
    assert len(a.cloudflare.requests) == 1


async def test_no_cookie_is_kept_from_one_answer_for_the_next_request(api: Callable[..., Api]) -> None:
    """One client serves every account: a cookie one account's answer sets is never sent with
    another's request (the API authenticates by headers alone)."""
    answer = ok(keys())
    answer.headers["Set-Cookie"] = "__cf_bm=abc; Path=/; Domain=api.cloudflare.test"
    a = api(GET=[answer])
    await a.client.get_keys(ACCOUNT, token())
    await a.client.get_keys("0" * 32, token("Y", "another-token"))
    assert [r.headers.get("cookie") for r in a.cloudflare.requests] == [None, None]
