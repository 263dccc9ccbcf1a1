"""The config as a user meets it: what loads, with which values, and how every mistake is refused.

Each refusal is one YAML fixture in ``tests/conffiles/`` (the file's comment says what is wrong
with it). A refusal must name the file, the account by index and name, the field, and what was
expected, and must never echo a secret. The same fixtures go through the real ``rotator validate``
process: exit 2, one ``rotator: error:`` line per problem, no traceback.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rotator.config.credentials import CredentialSource
from rotator.config.followup_settings import NotifySettings, PublicationSettings, WebhookSettings
from rotator.config.model import (
    DEFAULT_CONFIG_PATH,
    AccountSettings,
    CloudflareSettings,
    Config,
    HTTPSettings,
    LoggingSettings,
    RotationSettings,
    Schedule,
    Settings,
    WindowSettings,
    load_config,
)
from rotator.errors import ConfigError

CONFFILES = Path(__file__).parents[1] / "conffiles"
EXAMPLE = Path(__file__).parents[2] / "config.example.yaml"
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
LEAKED = "CLOUDFLARE-TOKEN-THAT-MUST-NOT-LEAK"  # the secrets pasted into the inline_secret fixtures
# The parts of the secrets pasted where a name or path belongs (*_not_a_name, credentials/*_pasted).
PASTED = ("Zq8vN3xK7mP2rT9wL4yB6cD1fG5hJ0kS", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

ID_A = "023e105f4ecef8ad9ca31a8372d0c353"
ID_B = "0123456789abcdef0123456789abcdef"
INLINE_SECRET = (
    "'api_token' holds a secret, and secrets are never read from the config file (it lives in a "
    "ConfigMap): put it in an environment variable named by api_token_env"
)
KEY_NOT_A_STRING = "expected a string as mapping key (a name such as accounts or base_url)"

# fixture -> the problems its message must report, one line each: (where and field, what was expected).
DURATION = "expected a duration such as 90s, 15m, 1h, 2d or a number of seconds"

REFUSALS: dict[str, list[tuple[str, str]]] = {
    "unknown_key_top_level": [("schedul:", "unknown key")],
    "unknown_key_in_section": [("schedule.interval:", "unknown key")],
    "unknown_key_in_account": [("accounts[1] (staging): treshold_days:", "unknown key")],
    "duplicate_names": [
        (
            "accounts[2] (production): name:",
            "'production' is already used by accounts[0]; each account needs a unique name",
        )
    ],
    "duplicate_account_ids": [
        (
            "accounts[1] (production-again): account_id:",
            f"'{ID_A}' is already used by accounts[0]; each account needs a unique account_id",
        )
    ],
    "account_id_not_hex": [("accounts[0] (production): account_id:", "expected 32 hexadecimal characters")],
    "account_id_unquoted_number": [
        (
            "accounts[0] (production): account_id:",
            "expected 32 hexadecimal characters in quotes; YAML read this id as a number because "
            'it is not quoted: write account_id: "..."',
        )
    ],
    "inline_secret_cloudflare": [("cloudflare:", INLINE_SECRET)],
    "inline_secret_account": [("accounts[1] (staging):", INLINE_SECRET)],
    "interval_minus_threshold_below_min_gap": [
        (
            "accounts[0] (production): key_rotation_interval_days:",
            "an interval of 21 days minus threshold_days 15 leaves 6 days between rotations, fewer "
            "than min_days_between_rotations 7: expected key_rotation_interval_days - threshold_days "
            "to be more than 0 and at least min_days_between_rotations",
        )
    ],
    "interval_below_21": [
        ("rotation.key_rotation_interval_days:", "expected a whole number from 21 to 365, got 20")
    ],
    "interval_above_365": [
        (
            "accounts[0] (production): key_rotation_interval_days:",
            "expected a whole number from 21 to 365, got 366",
        )
    ],
    "bad_duration": [
        (
            "schedule.check_interval:",
            f"{DURATION}, got '1w': there is no week unit: write 7d",
        )
    ],
    "duration_minutes_spelled_out": [
        ("schedule.jitter:", f"{DURATION}, got '5 min': write 5m (the units are ms, s, m, h and d)")
    ],
    "duration_hours_spelled_out": [
        ("rotation.windows[0].duration:", f"{DURATION}, got '18hours': write 18h (the units are")
    ],
    "duration_compound": [
        (
            "publication.deadline:",
            f"{DURATION}, got '1h30m': one number and one unit only (write 1h30m as 90m)",
        )
    ],
    "duration_negative": [("schedule.jitter:", f"{DURATION}, got '-5m': a duration cannot be negative")],
    "infinite_duration": [("schedule.check_interval:", "finite number")],
    "max_check_interval_below_interval": [
        ("schedule:", "max_check_interval (3600s) must be at least check_interval plus jitter (7500s)")
    ],
    "max_retry_after_zero": [("cloudflare.max_retry_after:", "expected a duration longer than 0, got 0")],
    "base_url_with_userinfo": [
        (
            "cloudflare.base_url:",
            "expected a URL without a 'user:password@' part: the host is what follows the '@'",
        )
    ],
    "base_url_http_not_loopback": [
        ("cloudflare.base_url:", "expected https:// for a host that is not loopback")
    ],
    "base_url_not_a_url": [
        ("cloudflare.base_url:", "expected an http(s) URL such as https://api.cloudflare.com/client/v4")
    ],
    "bad_listen": [("http.listen:", "expected HOST:PORT, such as 0.0.0.0:9464")],
    "listen_port_only": [("http.listen:", "expected HOST:PORT, such as 0.0.0.0:9464")],
    "empty_accounts": [("accounts:", "expected at least one account")],
    "accounts_not_a_list": [("accounts:", "expected a list")],
    "missing_accounts": [("accounts:", "required, and missing")],
    "not_a_mapping": [("", "expected a mapping with at least an 'accounts' list")],
    "empty_file": [("", "expected a mapping with at least an 'accounts' list")],
    "section_not_a_mapping": [("cloudflare:", "expected a mapping (indented key: value lines)")],
    "account_not_a_mapping": [("accounts[0]:", "expected a mapping (indented key: value lines)")],
    "invalid_yaml": [
        (
            "",
            "not valid YAML at line 5, column 4: expected a '- ' list item at this indentation: check it "
            "against the lines above",
        )
    ],
    "yaml_tab": [
        (
            "",
            "not valid YAML at line 4, column 1: a tab character: YAML indents with spaces only (replace "
            "the tab with spaces)",
        )
    ],
    "misspelled_key": [("rotation.treshold_days:", "unknown key: did you mean threshold_days?")],
    "key_at_the_wrong_level": [
        ("check_interval:", "unknown key here: did you mean schedule.check_interval? (check its level")
    ],
    "below_the_minimum": [
        ("cloudflare.rate_limit.requests:", "expected a whole number of at least 1, got 0")
    ],
    "not_utf8": [("", "not valid YAML at line 3: expected UTF-8 text")],
    "complex_key": [("", f"at line 6, column 3: {KEY_NOT_A_STRING}, found a list")],
    "complex_key_in_account": [("", f"at line 5, column 7: {KEY_NOT_A_STRING}, found a mapping")],
    "email_without_key": [
        ("accounts[0] (production):", "api_email_env and api_key_env go together: set both or neither")
    ],
    "two_credentials": [
        (
            "accounts[0] (production):",
            "set one credential: api_token_env, api_token_file, or api_email_env with api_key_env",
        )
    ],
    "bad_log_level": [("logging.level:", "expected one of 'debug', 'info', 'warning' or 'error'")],
    "window_bad_cron": [
        ("rotation.windows[0]: cron:", "expected five fields (minute hour day month weekday)")
    ],
    "window_never_opens": [
        ("accounts[0] (production): windows[0]: cron:", "never matches a date, so this window can never open")
    ],
    "window_unknown_timezone": [
        (
            "accounts[0] (production): windows[0].timezone:",
            "expected an IANA time zone name such as Europe/Berlin or UTC, got 'Europe/Berln': did you "
            "mean Europe/Berlin?",
        )
    ],
    "window_timezone_is_a_region": [
        (
            "rotation.windows[0].timezone:",
            "got 'Europe': that is a region; name a zone in it, such as Europe/Amsterdam",
        )
    ],
    "window_timezone_city_without_region": [
        ("rotation.windows[0].timezone:", "got 'Berln': did you mean Europe/Berlin?")
    ],
    "windows_not_a_list": [("accounts[0] (production): windows:", "expected a list")],
    "state_file_missing_directory": [
        (
            "state_file:",
            "the directory /nonexistent-rotator-state does not exist: expected the path of a file in a "
            "directory that exists and that rotator can write to",
        )
    ],
    "state_file_in_a_file": [("state_file:", "/dev/null is not a directory: expected the path of a file")],
    "state_file_is_a_directory": [("state_file:", "/etc is a directory: expected the path of a file")],
    "rotation_default_unsatisfiable": [
        (
            "rotation.key_rotation_interval_days:",
            "an interval of 21 days minus threshold_days 15 leaves 6 days between rotations, fewer "
            "than min_days_between_rotations 7: expected key_rotation_interval_days - threshold_days "
            "to be more than 0 and at least min_days_between_rotations (inherited by 3 accounts)",
        )
    ],
    "same_mistake_in_many_accounts": [
        ("accounts[0] (a), accounts[1] (b), accounts[2] (c) and 2 more (5 in all): dry_run:", "true or false")
    ],
    "webhook_http_not_loopback": [
        ("notify.webhooks[0].url:", "expected https:// for a host that is not loopback")
    ],
    "webhook_inline_secret": [
        ("notify.webhooks[0]:", "'secret' holds a secret, and secrets are never read from the config file")
    ],
    "webhook_unknown_event": [("notify.webhooks[0].events[1]:", "'key_rotated', 'rotation_failed'")],
    "token_env_not_a_name": [
        ("accounts[0] (production): api_token_env:", "not an environment variable name")
    ],
    "webhook_secret_env_not_a_name": [("notify.webhooks[0].secret_env:", "not an environment variable name")],
    "certs_url_without_team_domain": [("publication.certs_url:", "expected a URL containing {team_domain}")],
    "team_domain_not_idna": [("accounts[0] (production): team_domain:", "expected a host name such as")],
    "team_domain_is_a_url": [
        (
            "accounts[0] (production): team_domain:",
            "expected a host name such as example.cloudflareaccess.com",
        )
    ],
    "several_problems": [
        ("schedule.jitter:", "expected a duration"),
        ("accounts[0] (production): dry_run:", "expected true or false"),
        ("accounts[1] (staging): account_id:", "expected 32 hexadecimal characters"),
    ],
}


def fixture(name: str) -> Path:
    return CONFFILES / f"{name}.yaml"


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def one_account(extra: str = "", *, before: str = "") -> str:
    """A config with one account named production, ``extra`` lines indented into it."""
    body = "".join(f"    {line}\n" for line in extra.strip().splitlines())
    return f'{before}accounts:\n  - name: production\n    account_id: "{ID_A}"\n{body}'


# --- refusals ---------------------------------------------------------------------------------


def test_every_fixture_is_in_the_table() -> None:
    assert sorted(p.stem for p in CONFFILES.glob("*.yaml")) == sorted(REFUSALS)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusal_names_file_account_field_and_expectation(name: str) -> None:
    path = fixture(name)
    lines = refusal(path).splitlines()
    assert len(lines) == len(REFUSALS[name]), lines
    for line, (where, expected) in zip(lines, REFUSALS[name], strict=True):
        assert line.startswith(f"{path}: {where}"), line
        assert expected in line, line


# Words of pydantic, PyYAML and Python that used to reach users instead of rotator's own.
LIBRARY_WORDING = (
    "Input should",
    "input should",
    "after validation",
    "greater than or equal",
    "less than or equal",
    "cannot start any token",
    "Value error",
    "tuple",
    "valid boolean",
    "indicator",
)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_are_in_rotators_words(name: str) -> None:
    message = refusal(fixture(name))
    assert not [words for words in LIBRARY_WORDING if words in message], message


@pytest.mark.parametrize("name", ["inline_secret_cloudflare", "inline_secret_account"])
def test_inline_secret_is_refused_without_repeating_it(name: str) -> None:
    assert LEAKED in fixture(name).read_text()
    assert LEAKED not in refusal(fixture(name))


def test_duplicate_account_ids_differ_only_in_case() -> None:
    # The fixture must really spell the two ids differently, or it proves nothing.
    ids = [a["account_id"] for a in yaml.safe_load(fixture("duplicate_account_ids").read_text())["accounts"]]
    assert ids[0] != ids[1]
    assert ids[0].lower() == ids[1].lower()


def test_missing_file_is_named_with_where_to_give_another(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert refusal(path) == f"{path}: no such file (give one with -c or $ROTATOR_CONFIG)"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert refusal(tmp_path) == f"{tmp_path}: a directory, not a regular file: expected a YAML file"


def test_a_file_over_10_mb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("wb") as file:
        file.truncate(10 * 2**20 + 1)  # sparse: no disk needed
    assert refusal(path) == (
        f"{path}: larger than 10 MB, which is more than a config needs (10,000 accounts take about "
        "1 MB): expected a YAML config file"
    )


def test_a_file_of_exactly_10_mb_is_read(tmp_path: Path) -> None:
    text = one_account()
    path = write(tmp_path, text + "#" * (10 * 2**20 - len(text)))
    assert path.stat().st_size == 10 * 2**20
    assert load_config(path).accounts[0].name == "production"


def test_state_file_in_a_writable_directory_is_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, one_account(before=f"state_file: {tmp_path / 'state.json'}\n"))
    assert config.settings.state_file == tmp_path / "state.json"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "renew_deadline: 15s",
            "leader_election: lease_duration (15s) must be longer than renew_deadline (15s): a leader must "
            "stop acting before its Lease can pass to another replica",
        ),
        (
            "retry_period: 9s",
            "leader_election: renew_deadline (10s) must be longer than 1.2 x retry_period (9s): a leader "
            "must be able to try renewing more than once",
        ),
        (
            "lease_duration: 10.5s\n  renew_deadline: 5s",
            "leader_election.lease_duration (10.5s) must be at least cloudflare.timeout (10s) + 1s + "
            "retry_period (2s) = 13s: a rotate POST is sent only while the Lease it is sent under "
            "outlasts the request, even just before a renewal",
        ),
        (
            "lease_name: Rotator_Lease",
            "leader_election.lease_name: expected a Kubernetes object name: lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit",
        ),
        (
            "namespace: Ops.Team",
            "leader_election.namespace: expected a Kubernetes namespace: at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit",
        ),
    ],
)
def test_leader_election_timings_and_names_are_refused_clearly(
    tmp_path: Path, section: str, expected: str
) -> None:
    path = write(tmp_path, one_account(before=f"leader_election:\n  enabled: true\n  {section}\n"))
    assert refusal(path) == f"{path}: {expected}"


def test_state_file_beside_leader_election_is_refused_with_the_reason(tmp_path: Path) -> None:
    before = f"state_file: {tmp_path / 'state.json'}\nleader_election:\n  enabled: true\n"
    path = write(tmp_path, one_account(before=before))
    assert refusal(path) == (
        f"{path}: state_file ({tmp_path / 'state.json'}) and leader_election.enabled: choose one. With "
        "leader election the ledger is the ConfigMap <lease_name>-ledger, shared by every replica; a "
        "state_file would be ignored. To move to leader election, run `rotator check` until no rotation "
        "is unconfirmed, then remove state_file"
    )


@pytest.mark.parametrize(
    ("named", "expected"),
    [
        ("state.json", "conf/state.json"),  # beside the config file, whatever the working directory
        ("../data/state.json", "data/state.json"),
        ("link.json", "data/state.json"),  # a symlink: its target, so the lock is the target's too
        ("linked-dir/state.json", "data/state.json"),
    ],
)
def test_state_file_is_one_file_however_it_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: str, expected: str
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "conf" / "link.json").symlink_to(tmp_path / "data" / "state.json")
    (tmp_path / "conf" / "linked-dir").symlink_to(tmp_path / "data")
    path = tmp_path / "conf" / "config.yaml"
    path.write_text(one_account(before=f"state_file: {named}\n"), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_config(Path("../conf/config.yaml")).settings.state_file == tmp_path / expected


def test_leader_election_defaults_are_client_gos(tmp_path: Path) -> None:
    election = load(tmp_path, one_account()).settings.leader_election
    assert not election.enabled
    assert (election.namespace, election.lease_name, election.identity) == (None, "rotator", None)
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (15, 10, 2)


# --- what a valid config means ----------------------------------------------------------------


def test_defaults_applied(tmp_path: Path) -> None:
    config = load(tmp_path, one_account())
    settings = config.settings
    assert settings.schedule.check_interval == 3600
    assert settings.schedule.jitter == 300
    assert settings.cloudflare.base_url == "https://api.cloudflare.com/client/v4"
    assert settings.cloudflare.timeout == 10
    assert settings.cloudflare.max_concurrency == 4
    assert settings.cloudflare.max_retry_after == 900
    assert (settings.cloudflare.rate_limit.requests, settings.cloudflare.rate_limit.per) == (1000, 300)
    assert settings.http.listen == "0.0.0.0:9464"
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9464)
    assert (settings.logging.level, settings.logging.format) == ("info", "auto")
    assert settings.state_file is None
    assert settings.publication == PublicationSettings()
    assert settings.notify.model_copy(update={"webhooks": ()}) == NotifySettings()
    (account,) = config.accounts
    assert (account.name, account.account_id) == ("production", ID_A)
    assert account.rotation == RotationSettings(
        threshold_days=3, min_days_between_rotations=7, key_rotation_interval_days=None, dry_run=False
    )
    assert account.credential == CredentialSource.token_env(TOKEN_ENV)
    assert config.warnings == ()


def test_every_rotation_key_overridden_per_account(tmp_path: Path) -> None:
    window = {"cron": "0 3 * * sat", "duration": "6h", "timezone": "UTC"}
    defaults = {
        "threshold_days": 4,
        "min_days_between_rotations": 8,
        "key_rotation_interval_days": 60,
        "dry_run": True,
        "windows": [window],
    }
    own_window = {"cron": "0 2 * * tue,wed", "duration": "4h", "timezone": "Europe/Berlin"}
    overrides = {
        "threshold_days": 5.5,
        "min_days_between_rotations": 10,
        "key_rotation_interval_days": 30,
        "dry_run": False,
        "windows": [own_window],
    }
    # A rotation key added later must be added here too.
    assert set(overrides) == set(RotationSettings.model_fields)
    config = {
        "rotation": defaults,
        "accounts": [
            {"name": "inherits", "account_id": ID_A},
            {"name": "overrides", "account_id": ID_B, **overrides},
        ],
    }
    inherits, overridden = load(tmp_path, yaml.safe_dump(config)).accounts
    assert inherits.rotation == RotationSettings.model_validate(defaults)
    assert overridden.rotation == RotationSettings.model_validate(overrides)
    assert overridden.rotation.windows[0].timezone == "Europe/Berlin"
    assert overridden.rotation.windows[0].duration == 4 * 3600
    assert inherits.windows and overridden.windows


def test_an_empty_list_of_windows_overrides_the_default_windows(tmp_path: Path) -> None:
    text = one_account(
        "windows: []",
        before='rotation:\n  windows:\n    - cron: "0 3 * * sat"\n      duration: 6h\n',
    )
    (account,) = load(tmp_path, text).accounts
    assert account.rotation.windows == ()
    assert not account.windows


def test_per_account_credential_overrides_the_default(tmp_path: Path) -> None:
    text = f"""
cloudflare:
  api_token_env: CF_TOKEN_DEFAULT
accounts:
  - name: default
    account_id: "{ID_A}"
  - name: own-env
    account_id: "{ID_B}"
    api_token_env: CF_TOKEN_OWN
  - name: own-file
    account_id: "fedcba9876543210fedcba9876543210"
    api_token_file: /run/secrets/token
  - name: legacy
    account_id: "00000000000000000000000000000001"
    api_email_env: CF_EMAIL
    api_key_env: CF_KEY
"""
    credentials = [a.credential for a in load(tmp_path, text).accounts]
    assert credentials == [
        CredentialSource.token_env("CF_TOKEN_DEFAULT"),
        CredentialSource.token_env("CF_TOKEN_OWN"),
        CredentialSource.token_file(Path("/run/secrets/token")),
        CredentialSource.legacy("CF_EMAIL", "CF_KEY"),
    ]


def test_default_credential_may_be_a_file(tmp_path: Path) -> None:
    config = load(tmp_path, one_account(before="cloudflare:\n  api_token_file: /run/secrets/token\n"))
    assert config.accounts[0].credential == CredentialSource.token_file(Path("/run/secrets/token"))


def test_account_id_in_upper_case_is_accepted_and_compared_in_lower_case(tmp_path: Path) -> None:
    config = load(tmp_path, f'accounts:\n  - name: production\n    account_id: "{ID_A.upper()}"\n')
    assert config.accounts[0].account_id == ID_A


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("250ms", 0.25), ("45", 45), ("1.5", 1.5)],
)
def test_durations(tmp_path: Path, written: str, seconds: float) -> None:
    text = one_account(
        before=f"cloudflare:\n  timeout: {written}\n  max_retry_after: {written}\n"
        f"  rate_limit:\n    per: {written}\n"
    )
    cloudflare = load(tmp_path, text).settings.cloudflare
    assert cloudflare.timeout == seconds
    assert cloudflare.max_retry_after == seconds
    assert cloudflare.rate_limit.per == seconds


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("http://127.0.0.1:9", "http://127.0.0.1:9"),
        ("http://localhost:8080/client/v4/", "http://localhost:8080/client/v4"),
        ("http://[::1]:8080/client/v4", "http://[::1]:8080/client/v4"),
        ("https://proxy.example.com/client/v4", "https://proxy.example.com/client/v4"),
    ],
)
def test_base_url_over_http_to_loopback_or_https_to_any_host(tmp_path: Path, written: str, kept: str) -> None:
    config = load(tmp_path, one_account(before=f"cloudflare:\n  base_url: {written}\n"))
    assert config.settings.cloudflare.base_url == kept


def test_min_gap_below_key_overlap_loads_with_a_warning(tmp_path: Path) -> None:
    config = load(tmp_path, one_account("min_days_between_rotations: 3"))
    assert config.accounts[0].rotation.min_days_between_rotations == 3
    (warning,) = config.warnings
    assert warning.startswith("accounts[0] (production): min_days_between_rotations is 3: ")
    assert "previous key valid for 7 days" in warning


def test_a_warning_about_the_defaults_is_said_once_however_many_accounts_inherit_it(tmp_path: Path) -> None:
    accounts = "".join(f'  - {{name: a{i}, account_id: "{i:032x}"}}\n' for i in range(300))
    config = load(tmp_path, f"rotation:\n  min_days_between_rotations: 3\naccounts:\n{accounts}")
    (warning,) = config.warnings
    assert warning.startswith("rotation.min_days_between_rotations is 3: ")
    assert warning.endswith("(inherited by 300 accounts)")


def test_the_same_warning_for_several_accounts_is_one_line_naming_them(tmp_path: Path) -> None:
    accounts = "".join(
        f'  - {{name: a{i}, account_id: "{i:032x}", min_days_between_rotations: 2}}\n' for i in range(10)
    )
    (warning,) = load(tmp_path, f"accounts:\n{accounts}").warnings
    assert warning.startswith(
        "accounts[0] (a0), accounts[1] (a1), accounts[2] (a2) and 7 more (10 in all): "
        "min_days_between_rotations is 2: "
    )


def test_more_accounts_than_the_ledgers_shards_hold_is_a_warning_with_the_count_to_set(
    tmp_path: Path,
) -> None:
    accounts = "".join(f'  - {{name: a{i}, account_id: "{i:032x}"}}\n' for i in range(12_001))
    election = "leader_election: {enabled: true, ledger_shards: 1}\n"
    (warning,) = load(tmp_path, f"{election}accounts:\n{accounts}").warnings
    assert warning == (
        "leader_election.ledger_shards: 1 shard can hold the records of about 12,000 accounts, and "
        "there are 12,001: set it to 2 or more (and name each shard in the RBAC Role)"
    )
    assert load(tmp_path, f"leader_election: {{enabled: true}}\naccounts:\n{accounts}").warnings == ()


def test_min_gap_of_seven_days_gives_no_warning(tmp_path: Path) -> None:
    assert load(tmp_path, one_account("min_days_between_rotations: 7")).warnings == ()


def test_enforced_interval_that_leaves_exactly_the_min_gap_is_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, one_account("key_rotation_interval_days: 21\nthreshold_days: 14"))
    assert config.accounts[0].rotation.key_rotation_interval_days == 21


# --- config.example.yaml ----------------------------------------------------------------------


def test_example_config_is_valid_without_warnings() -> None:
    config = load_config(EXAMPLE)
    assert config.warnings == ()
    assert [a.name for a in config.accounts] == ["production", "staging", "partner", "legacy"]


def test_example_config_shows_the_defaults() -> None:
    """What the example says is the default is the default, for every key outside `accounts`."""
    settings = load_config(EXAMPLE).settings
    assert settings.cloudflare.model_copy(update={"api_token_env": None}) == CloudflareSettings()
    assert settings.cloudflare.api_token_env == TOKEN_ENV
    assert settings.schedule == Schedule()
    assert settings.rotation == RotationSettings()
    assert settings.http == HTTPSettings()
    assert settings.logging == LoggingSettings()
    assert settings.state_file is None
    assert settings.publication == PublicationSettings()
    assert settings.notify.model_copy(update={"webhooks": ()}) == NotifySettings()


def test_example_config_uses_every_key() -> None:
    """A key added to the schema but missing from the example fails here."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    missing = _missing_keys(Settings, data, "")
    account_keys = {key for account in data["accounts"] for key in account}
    missing += [f"accounts[].{key}" for key in AccountSettings.model_fields if key not in account_keys]
    # The default credential is one kind; the other kinds are shown on accounts.
    missing = [key for key in missing if key.removeprefix("cloudflare.") not in account_keys]
    window_keys = {
        key for account in data["accounts"] for window in account.get("windows", []) for key in window
    }
    missing += [f"windows[].{key}" for key in WindowSettings.model_fields if key not in window_keys]
    assert missing == []


def _missing_keys(model: type[BaseModel], data: Mapping[str, Any], prefix: str) -> list[str]:
    missing = []
    for key, field in model.model_fields.items():
        if key == "accounts":
            continue
        if key not in data:
            missing.append(prefix + key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += _missing_keys(field.annotation, data[key], f"{prefix}{key}.")
    if model is NotifySettings:  # webhooks: every key on one webhook or another
        shown = {key for webhook in data.get("webhooks", []) for key in webhook}
        missing += [f"{prefix}webhooks[].{k}" for k in WebhookSettings.model_fields if k not in shown]
    return missing


# --- the real process -------------------------------------------------------------------------


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without the token and $ROTATOR_CONFIG, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, "ROTATOR_CONFIG")}
    return env | extra


def rotator(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", *args],
        env=dict(env if env is not None else environment()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> list[str]:
    """Exit 2, nothing on stdout, every stderr line a `rotator: error:` line, no traceback."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines
    assert all(line.startswith("rotator: error: ") for line in lines), lines
    for fragment in fragments:
        assert fragment in result.stderr
    return lines


def valid_config(tmp_path: Path, extra_account: str = "") -> Path:
    # Nothing is listening on port 9 of localhost: a run that got past the checks could not
    # reach anything, and an ephemeral listen port cannot clash with another test.
    return write(
        tmp_path,
        one_account(
            before="cloudflare:\n  base_url: http://127.0.0.1:9\n  timeout: 1s\n"
            'http:\n  listen: "127.0.0.1:0"\nlogging:\n  format: json\n'
        )
        + extra_account,
    )


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_validate_refuses_each_fixture_with_one_line_per_problem(name: str) -> None:
    path = fixture(name)
    lines = assert_refused(rotator("validate", "-c", str(path)))
    assert len(lines) == len(REFUSALS[name])
    for line, (where, expected) in zip(lines, REFUSALS[name], strict=True):
        assert line.startswith(f"rotator: error: {path}: {where}")
        assert expected in line
    assert LEAKED not in "\n".join(lines)


@pytest.mark.parametrize("name", ["token_env_not_a_name", "webhook_secret_env_not_a_name"])
def test_a_secret_pasted_in_place_of_a_name_is_never_repeated(name: str) -> None:
    done = rotator("validate", "-c", str(fixture(name)))
    assert done.returncode == 2
    assert not [p for p in PASTED if p in done.stdout + done.stderr], done.stderr


# credentials/ fixture -> what validate's warning and run's refusal say (the config itself is valid).
CREDENTIAL_PROBLEMS = {
    "token_env_pasted": "account production: the environment variable named by api_token_env is not set",
    "token_file_pasted": "account production: the token file named by api_token_file: no such file",
    "token_file_missing": "account production: token file /nonexistent/rotator/token: no such file",
    "webhook_secret_env_pasted": "notify webhook ops: its signing secret cannot be read: the environment "
    "variable named by secret_env is not set",
}


def test_every_credentials_fixture_is_in_the_table() -> None:
    found = sorted(p.stem for p in (CONFFILES / "credentials").glob("*.yaml"))
    assert found == sorted(CREDENTIAL_PROBLEMS)


@pytest.mark.parametrize("name", sorted(CREDENTIAL_PROBLEMS))
def test_a_credential_that_cannot_be_read_is_described_without_repeating_a_pasted_secret(name: str) -> None:
    """validate --without-secrets warns (the config is valid), run refuses; neither repeats a value
    that may be a secret pasted in place of a name or path, and a path that reads as one is named."""
    path = CONFFILES / "credentials" / f"{name}.yaml"
    env = environment() if name.startswith("token") else environment(**{TOKEN_ENV: "a-token-for-the-account"})
    validated = rotator("validate", "--without-secrets", "-c", str(path), env=env)
    refused = rotator("run", "--once", "-c", str(path), env=env)

    assert refused.returncode == 2
    assert CREDENTIAL_PROBLEMS[name] in refused.stderr
    if name.startswith("token"):
        assert validated.returncode == 0
        assert f"warning: {CREDENTIAL_PROBLEMS[name]}" in validated.stdout
    output = validated.stdout + validated.stderr + refused.stdout + refused.stderr
    assert not [p for p in PASTED if p in output], output
    assert "Traceback" not in output


def bounded_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``rotator validate -c path`` in at most 2 GB of address space and 20 seconds, so a rotator
    that reads endlessly or waits for a writer fails the test instead of the machine."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    return subprocess.run(
        [sys.executable, "-m", "rotator", "validate", "-c", str(path)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        preexec_fn=limit_memory,
    )


def test_validate_dev_zero_is_one_line_and_quick() -> None:
    # /dev/zero never ends: read whole, it grew to 8 GB in 20 seconds.
    (line,) = assert_refused(bounded_validate(Path("/dev/zero")))
    assert line == "rotator: error: /dev/zero: a character device, not a regular file: expected a YAML file"


def test_validate_a_named_pipe_without_waiting_for_a_writer(tmp_path: Path) -> None:
    pipe = tmp_path / "config.yaml"
    os.mkfifo(pipe)
    (line,) = assert_refused(bounded_validate(pipe))
    assert line == f"rotator: error: {pipe}: a named pipe, not a regular file: expected a YAML file"


def test_validate_missing_file() -> None:
    path = CONFFILES / "does-not-exist.yaml"
    assert_refused(rotator("validate", "-c", str(path)), f"{path}: no such file")


def test_validate_without_the_token_refuses_as_run_does(tmp_path: Path) -> None:
    path = valid_config(tmp_path)
    (line,) = assert_refused(rotator("validate", "-c", str(path)))
    (ran,) = assert_refused(rotator("run", "--once", "-c", str(path)))
    assert line == ran and line.startswith(f"rotator: error: {path}: account production: ")


def test_validate_without_secrets_warns_of_the_token_and_succeeds(tmp_path: Path) -> None:
    path = valid_config(tmp_path)
    result = rotator("validate", "--without-secrets", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert f"environment variable {TOKEN_ENV} is not set" in warnings[0]
    assert "production" in warnings[0]
    assert result.stdout.splitlines()[-1] == f"{path}: valid, 1 account(s)"


WEBHOOK = (
    "notify:\n  webhooks:\n    - name: ops\n      url: https://hooks.example.com/rotator\n"
    "      secret_env: OPS_HOOK_SECRET\n"
)


def test_validate_refuses_a_webhook_whose_secret_is_unset_as_run_does(tmp_path: Path) -> None:
    """Once, validate said "valid" and run then refused, without naming the file."""
    path = write(tmp_path, WEBHOOK + valid_config(tmp_path).read_text(encoding="utf-8"))
    env = environment(**{TOKEN_ENV: "a-token"})
    (line,) = assert_refused(rotator("validate", "-c", str(path), env=env))
    (ran,) = assert_refused(rotator("run", "--once", "-c", str(path), env=env))
    assert (
        line
        == ran
        == (
            f"rotator: error: {path}: notify webhook ops: its signing secret cannot be read: environment "
            "variable OPS_HOOK_SECRET is not set or is empty"
        )
    )
    relaxed = rotator("validate", "--without-secrets", "-c", str(path), env=env)
    assert relaxed.returncode == 0, relaxed.stderr
    assert relaxed.stdout.splitlines() == [
        "warning: notify webhook ops: its signing secret cannot be read: environment variable "
        "OPS_HOOK_SECRET is not set or is empty (needed by run and rotate)",
        f"{path}: valid, 1 account(s)",
    ]
    with_secret = rotator("validate", "-c", str(path), env={**env, "OPS_HOOK_SECRET": "s3cret-value"})
    assert with_secret.returncode == 0 and with_secret.stdout == f"{path}: valid, 1 account(s)\n"


def test_validate_refuses_an_auth_token_file_run_cannot_read(tmp_path: Path) -> None:
    text = valid_config(tmp_path).read_text(encoding="utf-8")
    missing = tmp_path / "no-such-token"
    path = write(tmp_path, text.replace("http:\n", f"http:\n  auth_token_file: {missing}\n"))
    env = environment(**{TOKEN_ENV: "a-token"})
    (line,) = assert_refused(rotator("validate", "-c", str(path), env=env))
    (ran,) = assert_refused(rotator("run", "--once", "-c", str(path), env=env))
    assert line == ran and line.startswith(f"rotator: error: {path}: http.auth_token_file: ")


def test_validate_with_the_token_says_valid_and_nothing_else(tmp_path: Path) -> None:
    path = valid_config(tmp_path)
    result = rotator("validate", "-c", str(path), env=environment(**{TOKEN_ENV: "a-token"}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: valid, 1 account(s)\n"


def test_validate_prints_load_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, one_account("min_days_between_rotations: 2"))
    result = rotator("validate", "-c", str(path), env=environment(**{TOKEN_ENV: "a-token"}))
    assert result.returncode == 0, result.stderr
    assert "warning: accounts[0] (production): min_days_between_rotations is 2: " in result.stdout


def test_validate_example_config() -> None:
    result = rotator("validate", "--without-secrets", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{EXAMPLE}: valid, 4 account(s)"


def many_accounts(tmp_path: Path, count: int) -> Path:
    accounts = "".join(f'  - {{name: a{i}, account_id: "{i:032x}"}}\n' for i in range(count))
    return write(tmp_path, f"accounts:\n{accounts}")


def test_a_token_missing_for_many_accounts_is_one_warning_with_a_count(tmp_path: Path) -> None:
    result = rotator("validate", "--without-secrets", "-c", str(many_accounts(tmp_path, 1000)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"warning: accounts a0, a1, a2 and 997 more (1,000 in all): environment variable {TOKEN_ENV} "
        f"is not set or is empty (API token from environment variable {TOKEN_ENV}) (needed by run, "
        "check and rotate)",
        f"{tmp_path / 'config.yaml'}: valid, 1000 account(s)",
    ]


def test_run_without_the_token_for_many_accounts_is_one_line_with_a_count(tmp_path: Path) -> None:
    path = many_accounts(tmp_path, 1000)
    (line,) = assert_refused(rotator("run", "--once", "-c", str(path)))
    assert line == (
        f"rotator: error: {path}: accounts a0, a1, a2 and 997 more (1,000 in all): environment variable "
        f"{TOKEN_ENV} is not set or is empty (API token from environment variable {TOKEN_ENV})"
    )


def test_run_once_without_the_token_is_refused_naming_each_variable(tmp_path: Path) -> None:
    second = f'  - name: staging\n    account_id: "{ID_B}"\n    api_token_env: CF_TOKEN_STAGING\n'
    path = valid_config(tmp_path, second)
    lines = assert_refused(rotator("run", "--once", "-c", str(path)))
    assert len(lines) == 2
    assert f"account production: environment variable {TOKEN_ENV} is not set" in lines[0]
    assert "account staging: environment variable CF_TOKEN_STAGING is not set" in lines[1]


def test_config_path_falls_back_to_rotator_config(tmp_path: Path) -> None:
    path = valid_config(tmp_path)
    result = rotator("validate", env=environment(ROTATOR_CONFIG=str(path), **{TOKEN_ENV: "a-token"}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: valid, 1 account(s)\n"
    bad = fixture("unknown_key_top_level")
    assert_refused(rotator("validate", env=environment(ROTATOR_CONFIG=str(bad))), f"{bad}: schedul:")


def test_dash_c_wins_over_rotator_config(tmp_path: Path) -> None:
    path = valid_config(tmp_path)
    bad = fixture("unknown_key_top_level")
    env = environment(ROTATOR_CONFIG=str(bad), **{TOKEN_ENV: "a-token"})
    result = rotator("validate", "-c", str(path), env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason="this machine has a rotator config installed")
def test_without_dash_c_or_rotator_config_the_default_path_is_read() -> None:
    assert_refused(rotator("validate"), f"{DEFAULT_CONFIG_PATH}: no such file")


def test_rotate_unknown_account(tmp_path: Path) -> None:
    path = valid_config(tmp_path)
    result = rotator("rotate", "-c", str(path), "prodution", env=environment(**{TOKEN_ENV: "a-token"}))
    (line,) = assert_refused(result)
    assert line == f"rotator: error: {path}: no account named 'prodution' (configured: production)"


def test_rotator_dry_run_puts_every_account_in_dry_run_whatever_the_file_says(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            rotation:
              dry_run: false
              key_rotation_interval_days: 30
            accounts:
              - {name: a, account_id: "0123456789abcdef0123456789abcdef"}
              - {name: b, account_id: "0123456789abcdef0123456789abcdee", dry_run: false}
            """
        ),
        encoding="utf-8",
    )
    forced = load_config(path, environ={"ROTATOR_DRY_RUN": "true"})
    assert [a.policy.dry_run for a in forced.accounts] == [True, True]
    assert forced.warnings[0].startswith("$ROTATOR_DRY_RUN is set")
    assert [a.policy.dry_run for a in load_config(path, environ={"ROTATOR_DRY_RUN": "false"}).accounts] == [
        False,
        False,
    ]
    with pytest.raises(ConfigError, match=r"^\$ROTATOR_DRY_RUN: expected true or false, not 'maybe'$"):
        load_config(path, environ={"ROTATOR_DRY_RUN": "maybe"})
