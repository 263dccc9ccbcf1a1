"""Contract: every request rotator sends is valid against Cloudflare's own OpenAPI spec.

Prism (a spec-driven mock, pinned in .ci/run) serves ``access-keys.openapi.yaml`` and refuses any
request the spec does not allow (wrong path, method, body or security) with a 4xx. The real client
and the real ``rotator`` process talk to it; every answer must be a 200.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rotator.cloudflare.client import CloudflareClient
from rotator.config.credentials import CredentialSource
from rotator.errors import APIError
from tests.support.processes import environment, events, free_port, log_lines, rotator, write_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "cloudflare" / "access-keys.openapi.yaml"
ACCOUNT_ID = "023e105f4ecef8ad9ca31a8372d0c353"


def _prism() -> str | None:
    candidates = [
        os.environ.get("ROTATOR_PRISM"),
        str(ROOT / ".ci/node_modules-prism/node_modules/.bin/prism"),
    ]
    return next((c for c in candidates if c and Path(c).exists()), shutil.which("prism"))


@pytest.fixture(scope="module")
def prism() -> Iterator[str]:
    binary = _prism()
    if binary is None or not SPEC.exists():
        missing = "Prism (npm @stoplight/prism-cli@5.14.2)" if binary is None else str(SPEC)
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is missing in CI: .ci/run must install it")
        pytest.skip(f"{missing} not found; .ci/run installs it")
    port = free_port()
    process = subprocess.Popen(
        [binary, "mock", "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(base_url + "/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("Prism did not start within 60 s")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _client(base_url: str) -> CloudflareClient:
    return CloudflareClient(base_url, timeout=10, max_concurrency=2)


async def test_every_operation_the_client_sends_is_valid(prism: str) -> None:
    for source, env in [
        (CredentialSource.token_env("T"), {"T": "spec-token"}),
        (CredentialSource.legacy("E", "K"), {"E": "ops@example.com", "K": "global-key"}),
    ]:
        credential = source.load(env)
        client = _client(prism)
        try:
            before = await client.get_keys(ACCOUNT_ID, credential)
            assert before.key_rotation_interval_days is not None
            assert (
                await client.set_interval(ACCOUNT_ID, credential, 30)
            ).key_rotation_interval_days is not None
            await client.rotate(ACCOUNT_ID, credential)
        finally:
            await client.aclose()


async def test_prism_refuses_what_the_spec_forbids(prism: str) -> None:
    """The negative control: the mock really validates, so the test above can fail."""
    credential = CredentialSource.token_env("T").load({"T": "spec-token"})
    client = _client(prism)
    try:
        with pytest.raises(APIError) as refused:
            await client.set_interval(ACCOUNT_ID, credential, 5)
    finally:
        await client.aclose()
    assert refused.value.status == 422


def test_the_daemon_talks_to_the_spec(prism: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        prism,
        accounts=[{"name": "production", "account_id": ACCOUNT_ID, "key_rotation_interval_days": 60}],
    )

    done = rotator("run", "--once", "-c", str(config), env=environment("spec-token"))

    assert done.returncode == 0, done.stdout + done.stderr
    logs = log_lines(done.stdout)
    assert events(logs, "key_rotated", account="production")  # the spec's example is due
    assert events(logs, "interval_updated", account="production")


async def test_the_organization_read_is_valid(prism: str) -> None:
    credential = CredentialSource.token_env("T").load({"T": "spec-token"})
    client = _client(prism)
    try:
        domain = await client.get_team_domain(ACCOUNT_ID, credential)
    finally:
        await client.aclose()
    assert domain  # the spec's example auth_domain


async def test_prism_refuses_an_organization_read_without_a_credential(prism: str) -> None:
    """The negative control for the organization read: the path and its security are checked."""
    async with httpx.AsyncClient(base_url=prism) as client:
        anonymous = await client.get(f"/accounts/{ACCOUNT_ID}/access/organizations")
        unknown = await client.get(
            f"/accounts/{ACCOUNT_ID}/access/organisations", headers={"Authorization": "Bearer spec-token"}
        )
    assert anonymous.status_code == 401
    assert unknown.status_code == 404


def test_the_daemon_reads_the_organization_from_the_spec(prism: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        prism,
        accounts=[{"name": "production", "account_id": ACCOUNT_ID}],
        # A loopback port nothing listens on: the certs read fails, which must not fail the run.
        publication={"enabled": True, "certs_url": f"http://127.0.0.1:{free_port()}/{{team_domain}}/certs"},
    )

    done = rotator("run", "--once", "-c", str(config), env=environment("spec-token"))

    assert done.returncode == 0, done.stdout + done.stderr
    logs = log_lines(done.stdout)
    assert events(logs, "team_domain_found", account="production")
    assert not events(logs, "team_domain_unavailable")
    assert events(logs, "certs_read_failed", account="production")
