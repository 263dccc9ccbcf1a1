"""The simulator's organization read, certs endpoints and tokens, as an application sees them.

The JWT tests use PyJWT exactly as an application validating Access tokens would: ``PyJWKClient``
on the team's certs URL, the key picked by the token's ``kid``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudflare_sim import CertsFault, Simulator, SimulatorThread, jwk_thumbprint

TOKEN = "test-token"
AUDIENCE = "rotator-simulator-app"
MakeSimulator = Callable[..., SimulatorThread]


def api(running: SimulatorThread, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"})


def certs(running: SimulatorThread, account_id: str) -> httpx.Response:
    return httpx.get(running.sim.certs_url(account_id))


def rotate(running: SimulatorThread, account_id: str) -> None:
    with api(running) as client:
        client.post(f"/accounts/{account_id}/access/keys/rotate").raise_for_status()


def kids(document: dict[str, object]) -> list[str]:
    return [key["kid"] for key in document["keys"]]  # type: ignore[attr-defined,index]


def test_organizations_names_each_accounts_team_domain(make_simulator: MakeSimulator) -> None:
    running = make_simulator(3, tokens={"read-only": "read"})
    domains = []
    for account_id in running.sim.account_ids:
        with api(running, "read-only") as client:  # the Read permission is enough
            answer = client.get(f"/accounts/{account_id}/access/organizations")
        assert answer.status_code == 200
        body = answer.json()
        assert body["success"] is True
        domains.append(body["result"]["auth_domain"])
        assert "Date" in answer.headers
    assert domains == [f"team-{i}.cloudflareaccess.com" for i in range(3)]
    with api(running) as client:
        assert client.get(f"/accounts/{'0' * 32}/access/organizations").status_code == 404
    with api(running, "wrong") as client:
        assert (
            client.get(f"/accounts/{domains and running.sim.account_ids[0]}/access/organizations").status_code
            == 401
        )


def test_certs_serve_two_real_rsa_keys_named_by_their_thumbprint(simulator: SimulatorThread) -> None:
    account_id = simulator.sim.account_ids[0]

    answer = certs(simulator, account_id)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    document = answer.json()
    assert len(document["keys"]) == 2 and len(set(kids(document))) == 2
    for jwk in document["keys"]:
        assert {jwk["kty"], jwk["alg"], jwk["use"]} == {"RSA", "RS256", "sig"}
        assert jwk["kid"] == jwk_thumbprint(jwk)
    assert document["public_cert"]["kid"] == document["keys"][0]["kid"]
    assert [c["kid"] for c in document["public_certs"]] == kids(document)
    for entry, jwk in zip(document["public_certs"], document["keys"], strict=True):
        public = x509.load_pem_x509_certificate(entry["cert"].encode()).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big")
        assert public.public_numbers().n == n and public.key_size == 2048
    # Another team has keys of its own.
    assert set(kids(certs(simulator, simulator.sim.account_ids[1]).json())).isdisjoint(kids(document))


def test_the_host_header_picks_the_team(simulator: SimulatorThread) -> None:
    account_id = simulator.sim.account_ids[2]
    root = simulator.base_url.removesuffix("/client/v4")

    answer = httpx.get(
        root + "/cdn-cgi/access/certs", headers={"Host": simulator.sim.team_domain(account_id)}
    )

    assert kids(answer.json()) == kids(certs(simulator, account_id).json())
    assert httpx.get(root + "/cdn-cgi/access/certs", headers={"Host": "nobody.example"}).status_code == 404


def test_every_rotation_publishes_a_new_key_and_keeps_the_previous(make_simulator: MakeSimulator) -> None:
    running = make_simulator(1, interval_days=21)
    account_id = running.sim.account_ids[0]
    first = kids(certs(running, account_id).json())

    rotate(running, account_id)  # rotator's
    second = kids(certs(running, account_id).json())
    running.sim.advance(22)  # and Cloudflare's own
    third = kids(certs(running, account_id).json())

    assert second[1] == first[0] and second[0] not in first
    assert third[1] == second[0] and third[0] not in first + second
    assert running.sim.current_kid(account_id) == third[0]
    assert [r.source for r in running.sim.rotations(account_id)] == ["api", "auto"]


def test_certs_faults_lag_stick_fail_and_garble(make_simulator: MakeSimulator) -> None:
    running = make_simulator(2, day_seconds=86400)
    lagging, other = running.sim.account_ids
    before = kids(certs(running, lagging).json())

    running.sim.add_certs_fault(CertsFault("lag", account_id=lagging, seconds=3600))
    rotate(running, lagging)
    assert kids(certs(running, lagging).json()) == before  # an hour behind
    running.sim.advance(3601 / 86400)
    assert kids(certs(running, lagging).json())[1] == before[0]  # caught up
    running.sim.clear_certs_faults()

    running.sim.add_certs_fault(CertsFault("stuck", account_id=other))
    stuck = kids(certs(running, other).json())
    rotate(running, other)
    running.sim.advance(1)
    assert kids(certs(running, other).json()) == stuck
    running.sim.clear_certs_faults()
    assert kids(certs(running, other).json())[1] == stuck[0]

    running.sim.add_certs_fault(CertsFault("down", times=1))
    down = certs(running, other)
    assert down.status_code == 503 and down.headers["Content-Type"].startswith("text/html")
    assert certs(running, other).status_code == 200  # times=1

    running.sim.add_certs_fault(CertsFault("garbage", account_id=other))
    garbage = certs(running, other)
    assert garbage.status_code == 200
    assert not isinstance(garbage.json().get("keys"), list)
    assert [r.op for r in running.sim.requests(account_id=other)][-1] == "certs"


def test_certs_faults_come_through_the_admin_api(simulator: SimulatorThread) -> None:
    account_id = simulator.sim.account_ids[0]
    added = httpx.post(simulator.admin_url + "/certs-faults", json={"kind": "down", "status": 502})
    assert added.status_code == 201
    assert certs(simulator, account_id).status_code == 502
    assert httpx.post(simulator.admin_url + "/certs-faults", json={"kind": "late"}).status_code == 400
    assert httpx.delete(simulator.admin_url + "/certs-faults").status_code == 200
    assert certs(simulator, account_id).status_code == 200


def _validate(client: jwt.PyJWKClient, token: str) -> dict[str, object]:
    key = client.get_signing_key_from_jwt(token)
    claims: dict[str, object] = jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE)
    return claims


def test_an_application_validates_tokens_across_one_rotation_but_not_two(simulator: SimulatorThread) -> None:
    """Why the minimum gap exists: the previous key carries tokens over one rotation, not two."""
    account_id = simulator.sim.account_ids[0]
    team = simulator.sim.team_domain(account_id)
    # PyJWT 2.15 refetches on an unknown kid only 30 s after its last fetch (cooldown_duration);
    # 0 lets this cached client show the refetch without a wait.
    application = jwt.PyJWKClient(simulator.sim.certs_url(account_id), cooldown_duration=0)
    token = simulator.sim.sign_token(account_id, audience=AUDIENCE)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == simulator.sim.current_kid(account_id)

    claims = _validate(application, token)  # before any rotation
    assert claims["iss"] == f"https://{team}" and claims["email"] == "user@example.com"

    rotate(simulator, account_id)
    fresh = jwt.PyJWKClient(simulator.sim.certs_url(account_id))
    assert _validate(fresh, token)["email"] == "user@example.com"  # through the previous key
    newer = simulator.sim.sign_token(account_id, audience=AUDIENCE)
    assert jwt.get_unverified_header(newer)["kid"] != header["kid"]
    assert _validate(application, newer)  # the cached client refetches on an unknown kid

    rotate(simulator, account_id)  # a second rotation inside the gap
    with pytest.raises(jwt.PyJWKClientError, match="Unable to find a signing key"):
        _validate(jwt.PyJWKClient(simulator.sim.certs_url(account_id)), token)
    assert _validate(jwt.PyJWKClient(simulator.sim.certs_url(account_id)), newer)  # one back still works


def test_a_token_signed_by_another_key_with_the_same_kid_fails(simulator: SimulatorThread) -> None:
    """Negative control: validation really checks the signature, not only the kid."""
    first, second = simulator.sim.account_ids[:2]
    token = simulator.sim.sign_token(first, audience=AUDIENCE)
    head, body, _ = token.split(".")
    forged = ".".join([head, body, simulator.sim.sign_token(second, audience=AUDIENCE).split(".")[2]])
    with pytest.raises(jwt.InvalidSignatureError):
        _validate(jwt.PyJWKClient(simulator.sim.certs_url(first)), forged)


def test_keys_are_made_only_when_needed() -> None:
    sim = Simulator.with_accounts(2000, token=TOKEN, start=datetime(2030, 1, 1, tzinfo=UTC))
    started = datetime.now(UTC)
    sim.advance(400)  # many automatic rotations of every account
    assert sim.snapshot()["accounts"][0]["history"]
    assert (datetime.now(UTC) - started).total_seconds() < 5  # no RSA key generated


def test_the_command_line_prints_the_certs_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudflare_sim", "--listen", "127.0.0.1:0", "--accounts", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        account = line["accounts"][1]
        assert account["team_domain"] == "team-1.cloudflareaccess.com"
        url = line["certs_url"].format(team_domain=account["team_domain"])
        assert len(httpx.get(url).json()["keys"]) == 2
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def test_hostile_certs_faults_come_through_the_admin_api(simulator: SimulatorThread) -> None:
    """nested, gzip_bomb and trickle: what tests/e2e/test_publication_e2e.py turns on rotator."""
    account_id = simulator.sim.account_ids[0]
    url = simulator.sim.certs_url(account_id)
    admin = simulator.admin_url + "/certs-faults"

    assert httpx.post(admin, json={"kind": "nested", "depth": 5000, "times": 1}).status_code == 201
    nested = httpx.get(url, timeout=10)
    assert nested.status_code == 200 and nested.content.count(b"[") == 5000
    with pytest.raises(RecursionError):
        json.loads(nested.content)

    size = 64 << 20
    assert httpx.post(admin, json={"kind": "gzip_bomb", "size": size, "times": 1}).status_code == 201
    with httpx.stream("GET", url, timeout=30) as bomb:
        assert bomb.headers["Content-Encoding"] == "gzip"
        sent = b"".join(bomb.iter_raw())
    assert len(sent) < size // 500  # a few hundred times smaller than what it expands to
    assert len(zlib.decompress(sent, 16 + zlib.MAX_WBITS)) == size

    assert httpx.post(admin, json={"kind": "trickle", "seconds": 0.2, "times": 1}).status_code == 201
    with httpx.stream("GET", url, timeout=5) as slow:
        first = next(slow.iter_raw(1))
        assert first == b"{"  # the keys, a byte at a time
    assert httpx.get(url, timeout=5).json()["keys"]  # used up: served whole again

    assert httpx.post(admin, json={"kind": "gzip_bomb", "size": -1}).status_code == 400
