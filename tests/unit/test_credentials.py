"""Loading credentials: each account gets its credential, or an error naming it and the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config.credentials import Credential, CredentialSource, load_credentials
from rotator.config.model import Account, RotationSettings
from rotator.errors import CredentialError


def _account(name: str, source: CredentialSource) -> Account:
    return Account(name, f"{abs(hash(name)):032x}"[:32], RotationSettings(), source)


def test_accounts_on_one_token_share_what_was_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHARED_TOKEN", "shared-token-value")
    token_file = tmp_path / "token"
    token_file.write_text("file-token-value\n")
    shared = [_account(f"shared-{i}", CredentialSource.token_env("SHARED_TOKEN")) for i in range(3)]
    own = _account("own", CredentialSource.token_file(token_file))

    loaded = load_credentials([*shared, own])

    first = loaded[shared[0].account_id]
    assert isinstance(first, Credential)
    assert all(loaded[a.account_id] is first for a in shared)  # read once, one object
    assert first.headers == {"Authorization": "Bearer shared-token-value"}
    own_credential = loaded[own.account_id]
    assert isinstance(own_credential, Credential)
    assert own_credential.headers == {"Authorization": "Bearer file-token-value"}
    assert own_credential.fingerprint != first.fingerprint


def test_each_account_on_a_missing_token_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    accounts = [_account(name, CredentialSource.token_env("MISSING_TOKEN")) for name in ("a", "b")]

    loaded = load_credentials(accounts)

    for account in accounts:
        error = loaded[account.account_id]
        assert isinstance(error, CredentialError)
        assert str(error) == (
            f"account {account.name}: environment variable MISSING_TOKEN is not set or is empty "
            "(API token from environment variable MISSING_TOKEN)"
        )
