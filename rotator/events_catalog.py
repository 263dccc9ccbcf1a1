"""Every event rotator logs or sends to a webhook, named once: its level, its fields, what it means.

Event names are an interface (dashboards, alerts and receivers match on them), so they are literal
strings at every call site, never computed, and each is listed here; ``tests/unit/test_events_catalog.py``
reads the source and fails when a logged name, level or field is missing from this catalog or one
here is logged nowhere. ``docs/events.md`` is generated from it (``python -m rotator.docs``).

Every log line also has ``timestamp`` (RFC 3339, UTC), ``level`` and ``event``; a line about an
account has ``account`` and ``account_id``. A notification (``webhook``) is a CloudEvents document of
type ``com.rotator.<name>`` whose ``data`` holds these fields beside ``account`` and ``account_id``.

This module imports nothing of rotator's, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Level = Literal["debug", "info", "warning", "error"]
WEBHOOK_TYPE_PREFIX = "com.rotator."
# On every line about an account (bound by the checker, or given by the call).
ACCOUNT_FIELDS = ("account", "account_id")


@dataclass(frozen=True)
class Spec:
    """One event: ``levels`` it is logged at (usual first; empty: never logged, only sent)."""

    name: str
    levels: tuple[Level, ...]
    meaning: str
    fields: tuple[str, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)  # a field's values or meaning, where not obvious
    webhook: tuple[str, ...] | None = None  # the notification's data fields; None: not a notification


# The ledger's record of a rotation moving to a state (rotation_<state>): the same fields, null where
# the state has none.
TRANSITION = (
    "rotation_id",
    "previous_state",
    "intended_at",
    "rotates_from",
    "unknown_since",
    "settled_at",
    "why",
)

EVENTS: tuple[Spec, ...] = (
    Spec(
        "config_loaded",
        ("info",),
        "The daemon starts.",
        fields=("config", "accounts", "check_interval_seconds", "version"),
    ),
    Spec(
        "config_warning",
        ("warning",),
        "One per load-time warning.",
        fields=("message",),
    ),
    Spec(
        "config_reloaded",
        ("info",),
        "A new config took effect, once per change of the file's content. `restart_required`: every "
        "setting still waiting for a restart, not only this reload's.",
        fields=("trigger", "accounts", "added", "removed", "changed", "restart_required"),
        notes={"trigger": "`sighup`, `file_changed`"},
    ),
    Spec(
        "config_unchanged",
        ("info",),
        "A SIGHUP found the config in force and its credentials unchanged: nothing to reload (not counted"
        " as a reload).",
        fields=("trigger",),
        notes={"trigger": "`sighup`"},
    ),
    Spec(
        "config_rejected",
        ("error",),
        "A new config was refused; the running one stays.",
        fields=("trigger", "reason", "kept"),
    ),
    Spec(
        "config_reload_failed",
        ("error",),
        "A reload failed in a way no refusal foresees (a bug to report, with the traceback in "
        "`exception`); the next change of the file is read as usual.",
        fields=("trigger", "error", "error_type", "exception"),
    ),
    Spec(
        "http_listening",
        ("info",),
        "`/`, `/status`, `/metrics`, `/healthz`, `/readyz` are served.",
        fields=("listen", "endpoints", "auth"),
        notes={"auth": "`bearer` with `http.auth_token_file`, else `none`"},
    ),
    Spec(
        "account_checked",
        ("info",),
        "Every check whose GET succeeded.",
        fields=(
            "days_until_next_rotation",
            "key_rotation_interval_days",
            "last_key_rotation_at",
            "decision",
            "reason",
            "message",
        ),
        notes={"decision": "`rotate`/`skip`"},
    ),
    Spec(
        "check_failed",
        ("error",),
        "The GET failed (after any retries) or its answer was unusable.",
        fields=("error", "error_type"),
    ),
    Spec(
        "retry_after_capped",
        ("warning",),
        "A 429's `retry-after` was longer than `cloudflare.max_retry_after`, or not a finite number: the "
        "credential pauses for the cap instead.",
        fields=("retry_after", "max_retry_after_seconds"),
        notes={"retry_after": "the header as Cloudflare sent it"},
    ),
    Spec(
        "request_retry_scheduled",
        ("warning",),
        "A GET or PUT will be retried.",
        fields=("retry_num", "wait_seconds", "error", "error_type"),
    ),
    Spec(
        "rotate_answer_lost",
        ("warning",),
        "A rotate POST's answer was lost (timeout, dropped connection, 5xx, unreadable 200): it may have "
        "been applied; it is never sent again until settled.",
        fields=("error", "error_type"),
    ),
    Spec(
        "rotate_not_applied",
        ("warning",),
        "A rotate POST is known not applied (429, no connection, not sent at shutdown); it may be sent "
        "again (a new intent).",
        fields=("error", "error_type"),
    ),
    Spec(
        "rotation_skipped",
        ("info", "warning"),
        "A rotation held back, by `run` or `rotate` (a warning for `unknown` and `unsettled`; `check` "
        "logs only `account_checked`; `not_due` is only there). `unsettled`: a rotation that may have "
        'happened is not settled yet. "decided again right before sending": the config in force, or the '
        "ledger read fresh, said no.",
        fields=("reason", "message"),
        notes={
            "reason": (
                "`dry_run`, `too_soon`, `unknown`, `outside_window`, `unsettled`, `removed`, or any other"
                " when decided again"
            )
        },
    ),
    Spec(
        "rotation_started",
        ("info",),
        "A rotation was decided; the protocol begins.",
        fields=("reason", "message"),
    ),
    Spec(
        "rotation_intent",
        ("info",),
        "The ledger recorded the intent (durably with `state_file`), before the POST.",
        fields=TRANSITION,
    ),
    Spec(
        "rotation_sent",
        ("info",),
        "The POST is on its way.",
        fields=TRANSITION,
    ),
    Spec(
        "rotation_done",
        ("info",),
        "Applied: a 200, or a read showing it.",
        fields=TRANSITION,
    ),
    Spec(
        "rotation_unconfirmed",
        ("warning",),
        "It may have been applied: the answer was lost, or its process stopped with it open.",
        fields=TRANSITION,
        webhook=("reason", "error", "error_type", "possibly_applied"),
    ),
    Spec(
        "rotation_not_applied",
        ("warning",),
        "Refused, never sent, or settled so by evidence or `settle_time`.",
        fields=TRANSITION,
    ),
    Spec(
        "key_rotated",
        ("info",),
        "The rotation happened. `answer_stale: true`: the 200's body still showed the old rotation (a "
        "lagging replica); the gap counts from `rotated_at`.",
        fields=(
            "reason",
            "rotated_at",
            "previous_last_key_rotation_at",
            "last_key_rotation_at",
            "answer_stale",
            "message",
        ),
        notes={"reason": "`confirmed` when a later read settled it", "rotated_at": "the ledger's time"},
        webhook=(
            "reason",
            "previous_last_key_rotation_at",
            "last_key_rotation_at",
            "days_until_next_rotation",
        ),
    ),
    Spec(
        "rotation_failed",
        ("error",),
        "The rotation failed; `possibly_applied: true` while it is unconfirmed.",
        fields=("error", "error_type", "possibly_applied"),
        webhook=("reason", "error", "error_type", "possibly_applied"),
    ),
    Spec(
        "checks_spread",
        ("info",),
        "Accounts with no plan to resume (a new install, accounts added, plans passed, a changed config) "
        "are read over `period_seconds`: a tenth of the client-side budget at once, the rest at half of it.",
        fields=("accounts", "period_seconds", "why"),
        notes={"why": "first_start, resumed, added, config_changed or remapped"},
    ),
    Spec(
        "checks_resumed",
        ("info",),
        "A start or a new leader resumed these accounts' schedules from the ledger's plans (one of them "
        "read at once, to see Cloudflare's clock).",
        fields=("accounts", "first_check_at"),
    ),
    Spec(
        "scheduled_check_failed",
        ("error",),
        "A scheduled check raised past the checker's own handling (a bug to report); the schedule "
        "goes on and the account is checked again at its next time.",
        fields=("error", "exception"),
    ),
    Spec(
        "check_crashed",
        ("error",),
        "A check failed in a way rotator did not foresee (a bug to report); counted as a failed check; "
        "the other accounts and the daemon go on.",
        fields=("error",),
    ),
    Spec(
        "interval_updated",
        ("info",),
        "The PUT corrected Cloudflare's interval.",
        fields=("previous_key_rotation_interval_days", "key_rotation_interval_days"),
    ),
    Spec(
        "interval_update_skipped",
        ("info",),
        "Decided again right before the PUT left: the config then in force wants no interval set.",
        fields=("wanted", "message"),
    ),
    Spec(
        "interval_update_failed",
        ("error",),
        "The PUT failed.",
        fields=("error", "error_type", "wanted"),
    ),
    Spec(
        "team_domain_found",
        ("info",),
        "The organization read gave the account's team domain (first time, or changed).",
        fields=("team_domain", "previous"),
    ),
    Spec(
        "team_domain_invalid",
        ("error",),
        "The organization read's `auth_domain` is not a host name (a port, path, query or userinfo): "
        "no certs read goes there; `kept` is the domain still used, if any.",
        fields=("problem", "kept", "retry_seconds"),
    ),
    Spec(
        "team_domain_unavailable",
        ("warning",),
        "The organization read failed or had no `auth_domain`; `kept` is the domain still used, if any.",
        fields=("error", "error_type", "kept"),
    ),
    Spec(
        "certs_reads_skipped",
        ("warning",),
        "publication.rate_limit is spent: routine certs reads are skipped (verifications keep their "
        "reserve) until it has room; once per spell.",
        fields=("reserved", "message"),
    ),
    Spec(
        "certs_reads_resumed",
        ("info",),
        "Routine certs reads go out again; `reads_skipped` were skipped meanwhile.",
        fields=("reads_skipped",),
    ),
    Spec(
        "certs_read_failed",
        ("warning",),
        "The certs endpoint did not answer, answered an error, or not with a certs document.",
        fields=("team_domain", "error"),
    ),
    Spec(
        "jwks_key_count_unexpected",
        ("warning",),
        "The certs endpoint serves other than two keys (logged when the count changes).",
        fields=("keys", "message"),
    ),
    Spec(
        "key_published",
        ("info",),
        "After a rotation, the new key is served beside the previous one.",
        fields=("kid", "previous_kid", "publication_seconds", "late", "rotated_at"),
        webhook=("kid", "previous_kid", "publication_seconds", "late", "rotated_at"),
    ),
    Spec(
        "key_publication_late",
        ("error",),
        "`publication.deadline` passed after a rotation without that.",
        fields=("rotated_at", "deadline_seconds", "previous_kid", "reason"),
        webhook=("rotated_at", "deadline_seconds", "previous_kid", "reason"),
    ),
    Spec(
        "key_rotated_elsewhere",
        ("warning",),
        "The key was rotated, and not by rotator.",
        fields=("previous_last_key_rotation_at", "last_key_rotation_at", "message"),
        webhook=("previous_last_key_rotation_at", "last_key_rotation_at"),
    ),
    Spec(
        "notification_sent",
        ("debug",),
        "A webhook answered 2xx.",
        fields=("webhook", "notification", "notification_id", "attempt"),
    ),
    Spec(
        "notification_retry",
        ("warning",),
        "An attempt failed; another follows.",
        fields=("webhook", "notification", "notification_id", "attempt", "wait_seconds", "error"),
    ),
    Spec(
        "notification_failed",
        ("error",),
        "The last attempt failed, or the webhook refused it (4xx).",
        fields=("webhook", "notification", "notification_id", "attempt", "error"),
    ),
    Spec(
        "kube_event_failed",
        ("error",),
        "A Kubernetes Event about the Lease could not be created (leader election; the rest goes on).",
        fields=("notification", "error"),
    ),
    Spec(
        "kube_event_dropped",
        ("error",),
        "Kubernetes Events not created: the queue was full (one line an Event), or at shutdown (a count).",
        fields=("notification", "reason", "count"),
    ),
    Spec(
        "notification_dropped",
        ("error",),
        "Queue full, or shutdown before it was sent.",
        fields=("webhook", "notification", "count", "reason"),
        notes={"notification": "the event's name, when one notification was dropped"},
    ),
    Spec(
        "followup_failed",
        ("error",),
        "An unexpected error after a check (a bug); the check itself is unaffected.",
        fields=("step", "error"),
    ),
    Spec(
        "leader_election_started",
        ("info",),
        "`rotator run` with leader election starts trying for the Lease.",
        fields=("lease", "namespace", "identity"),
    ),
    Spec(
        "leader_elected",
        ("info",),
        "This replica took the Lease: it reads the ledger, then checks every account at once.",
        fields=("lease", "identity"),
    ),
    Spec(
        "ledger_loaded",
        ("info",),
        "The new leader read the ledger's ConfigMap; from now on it acts.",
        fields=("ledger",),
    ),
    Spec(
        "ledger_load_failed",
        ("error",),
        "The ledger's ConfigMap could not be read (unreachable, or not a rotator ledger): the leader acts"
        " on nothing until it can, trying every `retry_period`.",
        fields=("ledger", "error"),
    ),
    Spec(
        "leader_lost",
        ("warning",),
        "This replica stopped leading: no renewal within `renew_deadline`, or another holds the Lease. It"
        " starts nothing new; a POST already sent finishes (its intent is on record).",
        fields=("lease", "identity", "reason"),
    ),
    Spec(
        "leader_released",
        ("info",),
        "At shutdown, after the rotations in flight and the ledger's last write: the Lease written free, "
        "so a follower leads at its next try.",
        fields=("lease", "identity"),
    ),
    Spec(
        "leader_release_failed",
        ("warning",),
        "The release failed: a follower takes over once the Lease runs out (`lease_duration`).",
        fields=("lease", "error"),
    ),
    Spec(
        "leader_election_failed",
        ("warning",),
        "One try at the Lease failed (the API server unreachable, refused, or slower than the try's "
        "deadline).",
        fields=("lease", "error"),
    ),
    Spec(
        "leader_election_crashed",
        ("error",),
        "A bug in the election loop (with its traceback); a leader stops acting at `renew_deadline`.",
        fields=("error", "exception"),
    ),
    Spec(
        "state_load_failed",
        ("error",),
        "`state_file` could not be read (empty, torn, not rotator's): the check fails rather than forget;"
        " at start-up rotator refuses to start, naming the file.",
        fields=("error",),
    ),
    Spec(
        "state_save_failed",
        ("error",),
        "`state_file` could not be written: before a POST, nothing is sent; after one, the outcome is "
        "kept in memory and logged. Counted in `rotator_state_save_failures_total`.",
        fields=("error",),
    ),
    Spec(
        "check_cancelled",
        ("debug",),
        "Shutdown cancelled a check in progress.",
        fields=("account", "account_id"),
    ),
    Spec(
        "shutdown",
        ("info",),
        "The daemon exits.",
        fields=("reason", "rotations_unfinished"),
        notes={"reason": "`SIGTERM`, `SIGINT`, `finished` after `--once`"},
    ),
)

CATALOG: Mapping[str, Spec] = {spec.name: spec for spec in EVENTS}
LOGGED: frozenset[str] = frozenset(spec.name for spec in EVENTS if spec.levels)
WEBHOOK_EVENTS: tuple[str, ...] = tuple(spec.name for spec in EVENTS if spec.webhook is not None)
