"""What each config key means, keyed by its path in ``rotator.config.model.Settings``.

The model says a key's type, default and bounds; this says what it is for, and
``docs/reference/configuration.md`` is generated from both (``python -m rotator.docs``).
``tests/unit/test_docs.py`` fails when a key of the model has no entry here or an entry names no
key. Kept beside the model rather than in it so the model reads as the rules it enforces.
"""

from __future__ import annotations

SECTIONS = {
    "cloudflare": "Cloudflare's API: where it is, the default credential, how rotator paces requests.",
    "schedule": "When accounts are checked.",
    "rotation": "The policy: when to rotate, the minimum gap, windows (each account may override these).",
    "http": "The status page, `/status`, `/metrics`, `/healthz` and `/readyz`.",
    "logging": "Log lines on stdout (`run`) or stderr (the other commands).",
    "publication": "After a rotation: reading each team's certs endpoint until the new key is served.",
    "notify": "Webhooks that receive events as CloudEvents documents.",
    "leader_election": "Lease leader election: only the leader of the replicas checks and rotates.",
    "accounts": "The accounts to keep rotated (at least one).",
}

_OVERRIDE = "This account's own value, replacing `rotation.{}`."
_CREDENTIAL = "This account's own credential, replacing `cloudflare`'s (as `cloudflare.{}`)."

DESCRIPTIONS = {
    "cloudflare.base_url": (
        "API root. Change it only for a proxy or a test server. `http://` is accepted for loopback hosts "
        "only, so a token never crosses a network in clear text. A `user:password@` part is refused."
    ),
    "cloudflare.api_token_env": (
        "Name of the environment variable holding an API token (sent as `Authorization: Bearer`). "
        "`CLOUDFLARE_API_TOKEN` applies when no credential key is set."
    ),
    "cloudflare.api_token_file": "Path of a file holding the token instead, for example a mounted Secret.",
    "cloudflare.api_email_env": (
        "With `api_key_env`: names of two environment variables holding the legacy email and Global API "
        "Key (`X-Auth-Email`, `X-Auth-Key`). Set both or neither."
    ),
    "cloudflare.api_key_env": "See `api_email_env`.",
    "cloudflare.ca_bundle": (
        "PEM bundle used to verify `base_url` (unset: the system's CAs), for a TLS-inspecting proxy; it "
        "must exist at load. Verification is never turned off."
    ),
    "cloudflare.timeout": (
        "Timeout of one API request, as a whole: waiting for a connection, sending, and the answer to "
        "its last byte."
    ),
    "cloudflare.max_concurrency": "API requests in flight at once, across all accounts.",
    "cloudflare.rate_limit": (
        "Client-side budget per credential: never more than `requests` in any window of length `per`. "
        "Cloudflare allows 1,200 per 5 minutes."
    ),
    "cloudflare.rate_limit.requests": "Requests allowed in any window of length `per`.",
    "cloudflare.rate_limit.per": "The window's length.",
    "cloudflare.max_retry_after": (
        "The longest a 429 pauses a credential. Cloudflare's `retry-after` is obeyed up to this; a longer "
        "one, or one that is not a number, pauses this long, with a `retry_after_capped` warning."
    ),
    "schedule.check_interval": (
        "Time between two checks of one account near a moment its decision can change (a rotation to "
        "confirm, an unknown or unsettled state); a due rotation happens within this long of becoming "
        "allowed. See docs/policy.md, When each account is read."
    ),
    "schedule.max_check_interval": (
        "The longest between two reads of an account that cannot become due sooner: how late a rotation "
        "made elsewhere, or an interval changed in the dashboard, is noticed. At least `check_interval` "
        "plus `jitter`."
    ),
    "schedule.jitter": "Random extra delay, up to this much, added to each check (`0s`: none).",
    "rotation.threshold_days": "Rotate when `days_until_next_rotation <= threshold_days`.",
    "rotation.min_days_between_rotations": (
        "Minimum gap between two rotations of one account: the previous key stays valid for 7 days."
    ),
    "rotation.key_rotation_interval_days": (
        "`null`: leave Cloudflare's interval alone. An integer: correct Cloudflare's interval with a PUT "
        "whenever it differs."
    ),
    "rotation.dry_run": "Log and count what would be done, change nothing (no rotation, no PUT).",
    "rotation.windows": (
        "Maintenance windows; when set, a due rotation waits for one (docs/policy.md). Read as "
        "crontab(5) is: five fields or `@daily`, `@weekly`...; weekdays 0-7 or `sun`..`sat`; ranges, "
        "lists, steps; when both day fields are restricted, a day matching either opens the window."
    ),
    "rotation.windows[].cron": "When the window opens, in crontab(5) form.",
    "rotation.windows[].duration": "How long it stays open.",
    "rotation.windows[].timezone": (
        "The IANA time zone `cron` is read in. A time a clock change skips opens right after it, one it "
        "repeats opens once."
    ),
    "http.listen": "`HOST:PORT` of `/`, `/status`, `/metrics`, `/healthz`, `/readyz` (`rotator run`).",
    "http.auth_token_file": (
        "A file holding a token that every endpoint but the probes then requires, as a bearer token or "
        "as HTTP Basic's password (a browser asks for it; docs/http.md). Read "
        "once at start (missing, unreadable or empty: exit 2); changing it needs a restart."
    ),
    "logging.level": "The lowest level logged (any case).",
    "logging.format": "`json` (one object a line), `console`, or `auto` (console on a TTY, json otherwise).",
    "state_file": (
        "The rotation ledger, a JSON file where rotator records each rotation before its POST leaves and "
        "what became of it, so the minimum gap holds across a crash or a restart (docs/safety.md). Its "
        "directory must exist and be writable. Written atomically and fsynced, under a lock "
        "(`<state_file>.lock`); a file that cannot be read stops rotator, naming it. A relative path is "
        "read from the config file's directory (so `rotator rotate` run from anywhere reaches the daemon's "
        "file), and symlinks are resolved at load: every name of one file reaches the same file and lock. "
        "Refused beside `leader_election.enabled` (the ledger is then in ConfigMaps). `null`: memory only."
    ),
    "settle_time": (
        "A rotation whose answer was lost holds the gap until a read shows it applied, or until reads "
        "have shown the key unchanged for this long after the answer was lost."
    ),
    "publication.enabled": "Read each team's certs endpoint at every check and after every rotation.",
    "publication.certs_url": (
        "The certs endpoint; `{team_domain}` is filled in per account. `http://` for loopback hosts only "
        "(a test server, such as the simulator when rehearsing)."
    ),
    "publication.deadline": "After a rotation, the new key must be served (beside the old one) within it.",
    "publication.timeout": (
        "One certs read as a whole, connection to last byte (a 5xx or no answer is tried once more; an "
        "answer over 1 MiB decompressed or nested over 32 deep is a failed read)."
    ),
    "publication.max_concurrency": "Certs reads in flight at once.",
    "publication.rate_limit": "The certs reads' own budget, never counted against the API's.",
    "publication.rate_limit.requests": "Reads allowed in any window of length `per`.",
    "publication.rate_limit.per": "The window's length.",
    "publication.team_domain_refresh": (
        "How often the team domain is read again from Cloudflare's organization (an API request an "
        "account; a week, so that it adds little to the one read a day of due-aware checks)."
    ),
    "notify.webhooks": "Where events are sent (docs/after-a-rotation.md, Notifications).",
    "notify.webhooks[].name": "The webhook's name in logs and metrics (default: its place in the list).",
    "notify.webhooks[].url": "`https://`, or `http://` to a loopback host. Never logged.",
    "notify.webhooks[].events": "The events it receives (docs/reference/events.md).",
    "notify.webhooks[].secret_env": (
        "An environment variable holding the signing secret (HMAC-SHA256 of the body in "
        "`X-Rotator-Signature-256`)."
    ),
    "notify.webhooks[].secret_file": "A file holding the signing secret instead.",
    "notify.webhooks[].timeout": "One attempt's deadline.",
    "notify.webhooks[].attempts": "Attempts on no answer, 408, 429 or 5xx, with backoff and jitter.",
    "notify.queue_size": "Notifications waiting per webhook; past it, the newest is dropped.",
    "notify.source": "The CloudEvents `source`.",
    "leader_election.enabled": (
        "Of the replicas, only the leader checks and rotates, and the ledger is kept in the ConfigMaps "
        "`<lease_name>-ledger`, `-1`, ... (docs/high-availability.md). `rotator rotate` then rotates as the "
        "leader; `rotator run --once` is refused."
    ),
    "leader_election.namespace": (
        "The namespace of the Lease and the ConfigMap. Default: the pod's own, else the kubeconfig context's."
    ),
    "leader_election.lease_name": (
        "The Lease's name; the ledger's ConfigMaps are `<lease_name>-ledger` and `<lease_name>-ledger-1` "
        "to `-<ledger_shards - 1>`."
    ),
    "leader_election.ledger_shards": (
        "How many ConfigMaps the ledger is spread over, each account in the one its id hashes to (a "
        "rotation writes only its own). One holds about 13,000 accounts (1 MiB); 16 about 200,000. "
        "`validate` and `run` warn when there are too few for the accounts. A changed count is read from "
        "the old shards and moved at the next writes; the RBAC Role must name each shard."
    ),
    "leader_election.identity": (
        "This replica's name in the Lease (plus `_` and 8 random hex digits, unique per process). "
        "Default: `$POD_NAME`, else the hostname."
    ),
    "leader_election.lease_duration": (
        "A follower takes the Lease over once it has gone unrenewed this long. At least "
        "`cloudflare.timeout` + 1 s + `retry_period`, and more than `renew_deadline`."
    ),
    "leader_election.renew_deadline": (
        "A leader that has not renewed within this stops acting. More than 1.2 x `retry_period`."
    ),
    "leader_election.retry_period": "Every replica tries for the Lease this often.",
    "accounts[].name": "Unique. The `account` label in logs and metrics.",
    "accounts[].account_id": "32 hexadecimal characters, quoted, unique.",
    "accounts[].team_domain": (
        "The team domain whose certs the account's applications read, e.g. `example.cloudflareaccess.com`; "
        "unset: `auth_domain` of `GET /accounts/{id}/access/organizations`."
    ),
    "accounts[].threshold_days": _OVERRIDE.format("threshold_days"),
    "accounts[].min_days_between_rotations": _OVERRIDE.format("min_days_between_rotations"),
    "accounts[].key_rotation_interval_days": _OVERRIDE.format("key_rotation_interval_days"),
    "accounts[].dry_run": _OVERRIDE.format("dry_run"),
    "accounts[].windows": _OVERRIDE.format("windows"),
    "accounts[].windows[].cron": "As `rotation.windows[].cron`.",
    "accounts[].windows[].duration": "As `rotation.windows[].duration`.",
    "accounts[].windows[].timezone": "As `rotation.windows[].timezone`.",
    "accounts[].api_token_env": _CREDENTIAL.format("api_token_env"),
    "accounts[].api_token_file": _CREDENTIAL.format("api_token_file"),
    "accounts[].api_email_env": _CREDENTIAL.format("api_email_env"),
    "accounts[].api_key_env": _CREDENTIAL.format("api_key_env"),
}
