"""What a config reload changes: pure comparisons between the running config and a new one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rotator.config.model import Account, Config

# Settings the running process cannot change in place: its listening socket, its HTTP client and
# budgets (rebuilding them mid-flight could lose a rotation's confirmation), and its state file.
RESTART_REQUIRED = (
    ("http", "listen"),
    ("http", "auth_token_file"),
    ("cloudflare", "base_url"),
    ("cloudflare", "ca_bundle"),
    ("cloudflare", "timeout"),
    ("cloudflare", "max_concurrency"),
    ("cloudflare", "rate_limit"),
    ("cloudflare", "max_retry_after"),
    ("state_file",),
    # The certs reader and the webhook queues are built once, with their secrets (rotator.after.followup).
    ("publication",),
    ("notify",),
    # Which Lease, which ConfigMap, and the election's timings: a replica changing them while it
    # leads could hold one Lease while its peers contend for another.
    ("leader_election",),
)


def restart_settings() -> tuple[str, ...]:
    """The dotted names of the settings that need a restart, as logs and metrics name them."""
    return tuple(".".join(path) for path in RESTART_REQUIRED)


@dataclass(frozen=True)
class ConfigChange:
    added: tuple[Account, ...]
    removed: tuple[Account, ...]
    changed: tuple[tuple[Account, Account], ...]  # (old, new), same account_id
    schedule_changed: bool
    restart_required: tuple[str, ...]  # dotted names of settings that keep their old value


def compare(old: Config, new: Config) -> ConfigChange:
    before = {a.account_id: a for a in old.accounts}
    after = {a.account_id: a for a in new.accounts}
    return ConfigChange(
        added=tuple(a for i, a in after.items() if i not in before),
        removed=tuple(a for i, a in before.items() if i not in after),
        changed=tuple((before[i], a) for i, a in after.items() if i in before and before[i] != a),
        schedule_changed=old.settings.schedule != new.settings.schedule,
        restart_required=tuple(
            ".".join(path) for path in RESTART_REQUIRED if _get(old, path) != _get(new, path)
        ),
    )


def _get(config: Config, path: tuple[str, ...]) -> Any:
    value: Any = config.settings
    for part in path:
        value = getattr(value, part)
    return value
