"""What the daemon knows now, per account: ``/status`` as JSON and ``/`` as a page a person can read.

The daemon hands every check's ``CheckResult`` to a ``StatusBoard``, which keeps the latest one per
configured account; both renderings are built from ``CheckResult.as_dict`` (the data of
``rotator check --json``), plus when the check finished and when the next one is due (the
scheduler's job). The board is also an ``EventSink``: the rotations (rotator's, and those made
elsewhere) and the publication verdicts that follow a check reach it as they reach the webhooks,
and it keeps each account's recent ones for its timeline. ``configure`` is called with the accounts
of the config in force: an account removed by a reload disappears, and a result that arrives for it
afterwards is dropped.

One clock: every time shown is by ``clock``, Cloudflare's clock as rotator last saw it (in the
demo, the simulated one); the scheduler's next run, kept by the local clock, is moved onto it.

The page answers what an on-call engineer opens it for: a summary of the fleet first (accounts by
state, the next rotation anywhere, readiness, leadership, config warnings), then the accounts in
order of urgency (failing, key not published, unconfirmed, due, held back, not checked yet,
healthy), each with who rotates next and when, its last rotation and publication verdict, its
windows, and a timeline drawn as inline SVG. Plain server-rendered HTML: no JavaScript, inline
CSS, every value escaped with ``html.escape``; two columns at desktop width, one on a phone.

The JSON's shape is ``rotator/web/status.schema.json`` (JSON Schema, draft 2020-12).
"""

from __future__ import annotations

import html
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from aiohttp import web

from rotator import __version__
from rotator.after.events import Event
from rotator.check.checker import CheckResult
from rotator.config.model import Account
from rotator.core.records import iso

# Seconds between two reloads of the page by the browser itself (a meta refresh: no JavaScript).
PAGE_REFRESH_SECONDS = 30
# Rotations kept per account for the timeline (the oldest are dropped).
HISTORY = 20
# A rotation read from Cloudflare within this of one the ledger knows is that one.
SAME_ROTATION = timedelta(minutes=10)
# Why a due key is not rotated now (the checker's held-back reasons).
HELD_REASONS = ("dry_run", "too_soon", "unknown", "outside_window", "unsettled")
# Most urgent first: the page's order, and the summary's.
STATES = ("failing", "unpublished", "unconfirmed", "due", "held", "pending", "healthy")
_STATE_WORDS = {
    "failing": "failing",
    "unpublished": "key not published",
    "unconfirmed": "unconfirmed",
    "due": "due",
    "held": "held back",
    "pending": "not checked yet",
    "healthy": "healthy",
}


def schema() -> dict[str, Any]:
    """The JSON Schema that every ``/status`` answer satisfies."""
    text = resources.files("rotator.web").joinpath("status.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Rotated:
    at: datetime
    by: str  # rotator, cloudflare (on its own, or someone else: not rotator), unknown


@dataclass
class _Known:
    """What the board remembers of an account beyond its latest check."""

    history: deque[_Rotated] = field(default_factory=lambda: deque(maxlen=HISTORY))
    publication: dict[str, Any] | None = None

    def add(self, at: datetime, by: str) -> None:
        for i, seen in enumerate(self.history):
            if abs(seen.at - at) <= SAME_ROTATION:
                if seen.by == "unknown" and by != "unknown":
                    self.history[i] = _Rotated(seen.at, by)
                return
        self.history.append(_Rotated(at, by))
        ordered = sorted(self.history, key=lambda r: r.at)
        self.history.clear()
        self.history.extend(ordered)


@dataclass(frozen=True)
class _Latest:
    account: Account
    result: CheckResult | None = None
    checked_at: datetime | None = None


class StatusBoard:
    def __init__(
        self,
        accounts: Iterable[Account],
        *,
        next_check: Callable[[str], datetime | None],
        clock: Callable[[], datetime] = _utc_now,
        leadership: Callable[[], tuple[bool, str | None]] | None = None,
        ready: Callable[[], str | None] | None = None,
        warnings: Iterable[str] = (),
        publication: bool = True,
        local_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """``next_check(account_id)``: when the scheduler will next check the account, by the local
        clock (None: not scheduled). ``clock``: the clock every time shown is by (the daemon's
        estimate of Cloudflare's). ``leadership``: with leader election, whether this replica leads
        and who does (a follower's page shows no checks: the Service may have sent the reader to
        either). ``ready``: the readiness problem (None: ready). ``warnings``: the config's.
        ``publication``: whether rotations' publication is checked at all."""
        self._next_check = next_check
        self._leadership = leadership
        self._ready = ready
        self._clock = clock
        self._local_clock = local_clock
        self._publication = publication
        self._latest: dict[str, _Latest] = {}
        self._known: dict[str, _Known] = {}
        self.warnings: tuple[str, ...] = tuple(warnings)
        self.configure(accounts)

    def configure(self, accounts: Iterable[Account], warnings: Iterable[str] | None = None) -> None:
        """The accounts of the config in force, in its order; a result is kept while its account
        keeps its id and name. ``warnings``: the new config's (None: unchanged)."""
        latest: dict[str, _Latest] = {}
        for account in accounts:
            known = self._latest.get(account.account_id)
            if known is not None and known.account.name == account.name:
                latest[account.account_id] = _Latest(account, known.result, known.checked_at)
            else:
                latest[account.account_id] = _Latest(account)
        self._latest = latest
        self._known = {a: self._known.get(a, _Known()) for a in latest}
        if warnings is not None:
            self.warnings = tuple(warnings)

    def record(self, result: CheckResult) -> None:
        known = self._latest.get(result.account.account_id)
        if known is None or known.account.name != result.account.name:
            return  # removed (or renamed) while the check ran
        self._latest[result.account.account_id] = _Latest(known.account, result, self._clock())
        memory = self._known[result.account.account_id]
        # The ledger's latest applied rotation is rotator's; the key's last rotation, when no
        # rotation of rotator's explains it, was made by someone (Cloudflare's own, said by the
        # events below, or from before rotator's records).
        last_done = result.record.last_done if result.record else None
        if last_done is not None:
            memory.add(last_done, "rotator")
        last = result.key.last_key_rotation_at if result.key else None
        if last is not None and (last_done is None or last > last_done + SAME_ROTATION):
            memory.add(last, "unknown")

    def emit(self, event: Event) -> None:
        """An event that follows a check (``rotator.after.events.EventSink``): never raises."""
        memory = self._known.get(event.account_id)
        if memory is None:
            return
        data = event.data
        try:
            if event.name == "key_rotated":
                memory.add(_time(data.get("last_key_rotation_at")) or event.time, "rotator")
                memory.publication = {"verdict": "pending", "at": None, "kid": None, "seconds": None}
            elif event.name == "key_rotated_elsewhere":
                memory.add(_time(data.get("last_key_rotation_at")) or event.time, "cloudflare")
            elif event.name == "key_published":
                memory.publication = {
                    "verdict": "late" if data.get("late") else "published",
                    "at": iso(event.time),
                    "kid": data.get("kid"),
                    "seconds": data.get("publication_seconds"),
                }
            elif event.name == "key_publication_late":
                memory.publication = {"verdict": "late", "at": None, "kid": None, "seconds": None}
        except (TypeError, ValueError):
            return

    def as_json(self) -> dict[str, Any]:
        now = self._clock()
        accounts = [self._account(entry, now) for entry in self._latest.values()]
        return {
            "version": __version__,
            "generated_at": iso(now),
            "leader_election": self._leader_election(),
            "summary": self._summary(accounts),
            "accounts": accounts,
        }

    def _leader_election(self) -> dict[str, Any] | None:
        if self._leadership is None:
            return None
        leading, holder = self._leadership()
        return {"leading": leading, "holder": holder}

    def _summary(self, accounts: list[dict[str, Any]]) -> dict[str, Any]:
        counts = dict.fromkeys(STATES, 0)
        held: dict[str, int] = {}
        for account in accounts:
            counts[account["state"]] += 1
            if account["state"] == "held":
                held[account["reason"]] = held.get(account["reason"], 0) + 1
        planned = [a for a in accounts if a["next_rotation_at"] is not None]
        first = min(planned, key=lambda a: datetime.fromisoformat(a["next_rotation_at"]), default=None)
        problem = self._ready() if self._ready is not None else None
        return {
            "accounts": len(accounts),
            "states": counts,
            "held_back": held,
            "next_rotation": (
                None
                if first is None
                else {
                    "account": first["account"],
                    "by": first["next_rotation_by"],
                    "at": first["next_rotation_at"],
                }
            ),
            "ready": problem is None,
            "not_ready_because": problem,
            "config_warnings": list(self.warnings),
        }

    def _account(self, entry: _Latest, now: datetime) -> dict[str, Any]:
        result = entry.result or CheckResult(entry.account)
        data = result.as_dict()
        rotation = data["rotation"]
        memory = self._known.get(entry.account.account_id) or _Known()
        data.update(
            checked=entry.result is not None,
            ok=data["ok"] if entry.result is not None else None,
            checked_at=iso(entry.checked_at),
            next_check_at=iso(self._on_our_clock(self._next_check(entry.account.account_id), now)),
            rotation_open=rotation is not None and rotation["state"] in ("intent", "sent", "unconfirmed"),
            history=[{"at": iso(r.at), "by": r.by} for r in memory.history],
            publication=dict(memory.publication) if memory.publication else None,
        )
        if data["rotated"] or data["rotation_open"]:
            # check --json's "now, by rotator" was this check's decision, carried out or in doubt:
            # the next one is known once a check reads the new key (or settles the open one).
            data.update(next_rotation_by=None, next_rotation_at=None)
        data["state"] = _state(data, self._publication)
        return data

    def _on_our_clock(self, local: datetime | None, now: datetime) -> datetime | None:
        """A time of the local clock (the scheduler's) as the same moment by ``clock``."""
        return None if local is None else now + (local - self._local_clock())

    def html(self) -> str:
        data = self.as_json()
        now = datetime.fromisoformat(data["generated_at"])
        accounts = sorted(data["accounts"], key=_urgency)
        by_id = {e.account.account_id: e.account for e in self._latest.values()}
        cards = "\n".join(_card(a, now, by_id.get(a["account_id"]), self._publication) for a in accounts)
        return _PAGE.format(
            refresh=PAGE_REFRESH_SECONDS,
            version=_e(data["version"]),
            generated_at=_e(_when(data["generated_at"])),
            summary=_summary_html(data, now),
            legend=_LEGEND,
            cards=cards or "<p>No accounts.</p>",
        )

    def routes(self) -> list[web.RouteDef]:
        """``/`` (the page) and ``/status`` (the JSON), for the daemon's HTTP server."""

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=self.html(), content_type="text/html", charset="utf-8")

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.as_json())

        return [web.get("/", page), web.get("/status", status)]


def _state(a: dict[str, Any], publication: bool) -> str:
    """The account's state, one of ``STATES``."""
    if not a["checked"]:
        return "pending"
    if a["rotation_open"]:
        return "unconfirmed"
    if a["error"] is not None:
        return "failing"
    seen = a["publication"] or {}
    if publication and seen.get("verdict") == "late" and seen.get("at") is None:  # still not served
        return "unpublished"
    if a["action"] == "rotate" and not a["rotated"]:
        return "due"
    if a["action"] == "skip" and a["reason"] in HELD_REASONS:
        return "held"
    return "healthy"


def _urgency(a: dict[str, Any]) -> tuple[int, datetime]:
    soonest = _time(a["next_rotation_at"] or a["cloudflare_rotates_at"])
    return STATES.index(a["state"]), soonest or datetime.max.replace(tzinfo=UTC)


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


# --------------------------------------------------------------------------- words


def _e(value: Any) -> str:
    """A value as page text, escaped; missing values are a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"
    return html.escape(str(value))


def _when(value: str | None) -> str | None:
    """An ISO time from the JSON as a person reads it: to the second, in UTC, with the weekday."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC")


def relative(moment: datetime, now: datetime) -> str:
    """``in 2 days``, ``3 hours ago``, ``now``: the largest whole unit."""
    seconds = (moment - now).total_seconds()
    size = abs(seconds)
    if size < 60:
        return "now"
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if size >= length:
            count = int(size // length)
            words = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {words}" if seconds > 0 else f"{words} ago"
    return "now"  # pragma: no cover - the loop always returns


def _both(value: str | None, now: datetime) -> str:
    """A time as ``in 2 days (Sun 2026-12-13 02:00:00 UTC)``, escaped."""
    if value is None:
        return _e(None)
    moment = datetime.fromisoformat(value)
    return f"{_e(relative(moment, now))} <span class='abs'>({_e(_when(value))})</span>"


def next_rotation_words(a: dict[str, Any], now: datetime, account: Account | None = None) -> str:
    """Who rotates next and when, as a sentence (escaped HTML)."""
    by, at = a["next_rotation_by"], a["next_rotation_at"]
    if at is None:
        if a["rotation_open"]:
            return "unknown until the open rotation is settled"
        if a["rotated"]:
            return f"known at the next check ({_both(a['next_check_at'], now)}): this one rotated"
        return "unknown until a check reads the key" if not a["checked"] else "unknown"
    when = _both(at, now)
    if by == "cloudflare":
        why = " (dry run: rotator will not)" if a["dry_run"] else ""
        return f"<b>Cloudflare</b>, on its own, {when}{why}"
    where = ""
    moment = datetime.fromisoformat(at)
    if a["window_open_until"] is not None and at <= a["window_open_until"]:
        where = ", in the open maintenance window"
    elif account is not None and account.windows:
        around = account.windows.openings(
            moment - timedelta(seconds=1), moment + timedelta(seconds=1), limit=1
        )
        if around and around[0][0] <= moment + timedelta(seconds=1):
            where = f", in the {around[0][0].strftime('%A')} window"
    return f"<b>rotator</b>, {when}{_e(where)}"


def _last_rotation_words(a: dict[str, Any], now: datetime, publication: bool) -> str:
    history = a["history"]
    if not history:
        return "none seen yet"
    last = history[-1]
    who = {"rotator": "by rotator", "cloudflare": "by Cloudflare on its own (or outside rotator)"}.get(
        last["by"], "by someone before rotator's records"
    )
    words = f"{_both(last['at'], now)}, {_e(who)}"
    if last["by"] == "rotator":
        words += f"; {_publication_words(a['publication'], publication)}"
    return words


def _publication_words(seen: dict[str, Any] | None, enabled: bool) -> str:
    if not enabled:
        return "publication not checked (publication.enabled: false)"
    if seen is None:
        return "publication not seen by this process"
    verdict = seen["verdict"]
    if verdict == "pending":
        return "<span class='warn'>waiting for the new key at the certs endpoint</span>"
    if verdict == "late":
        if seen["at"] is None:
            return "<span class='bad'>key NOT published before publication.deadline</span>"
        return f"key published late, {_e(_took(seen['seconds']))} after the rotation"
    return f"<span class='good'>key published</span>, {_e(_took(seen['seconds']))} after the rotation"


def _took(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "some time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _window_words(a: dict[str, Any], account: Account | None, now: datetime) -> str:
    if account is not None and not account.windows:
        return "no windows: any time"
    if a["window_open_until"] is not None:
        return f"<span class='good'>open</span>, until {_both(a['window_open_until'], now)}"
    if a["next_window_at"] is not None:
        return f"closed; opens {_both(a['next_window_at'], now)}"
    return _e("closed" if a["checked"] else None)


# --------------------------------------------------------------------------- the page


def _summary_html(data: dict[str, Any], now: datetime) -> str:
    s = data["summary"]
    tiles = []
    for state in STATES:
        count = s["states"][state]
        if count or state in ("failing", "unconfirmed", "due", "healthy"):
            quiet = "" if count else " zero"
            tiles.append(f'<div class="tile {state}{quiet}"><b>{count}</b> {_e(_STATE_WORDS[state])}</div>')
    held = ", ".join(f"{_e(reason)} {n}" for reason, n in sorted(s["held_back"].items()))
    rows = []
    if held:
        rows.append(("Held back because", held))
    first = s["next_rotation"]
    if first is not None:
        who = "rotator" if first["by"] == "rotator" else "Cloudflare, on its own"
        rows.append(("Next rotation", f"{_e(first['account'])}: {_e(who)}, {_both(first['at'], now)}"))
    else:
        rows.append(("Next rotation", _e(None)))
    ready = (
        "<span class='good'>ready</span>"
        if s["ready"]
        else f"<span class='bad'>not ready</span>: {_e(s['not_ready_because'])}"
    )
    rows.append(("Readiness", ready))
    rows.append(("Leadership", _leadership(data["leader_election"])))
    warnings = s["config_warnings"]
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        rows.append(("Config warnings", f"<span class='warn'>{len(warnings)}</span><ul>{items}</ul>"))
    else:
        rows.append(("Config warnings", "none"))
    table = "\n".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"""<section class="summary">
<div class="tiles">{"".join(tiles)}</div>
<table>
{table}
</table>
</section>"""


def _leadership(election: dict[str, Any] | None) -> str:
    if election is None:
        return "no leader election (this process acts alone)"
    holder = election["holder"]
    if election["leading"]:
        return f"this replica leads ({_e(holder)})"
    who = f"{_e(holder)} leads" if holder else "<span class='bad'>no replica leads right now</span>"
    return f"This replica follows ({who}): only the leader checks, so its page shows the checks."


def _card(a: dict[str, Any], now: datetime, account: Account | None, publication: bool) -> str:
    state = a["state"]
    if not a["checked"]:
        headline = "not checked yet"
    elif a["action"] is None:
        headline = "check failed"
    else:
        headline = f"{a['action']}: {a['reason']}"
    dry = '<span class="dry">DRY RUN</span> ' if a["dry_run"] else ""
    rows: list[tuple[str, str]] = [
        ("Next rotation", next_rotation_words(a, now, account)),
        ("Cloudflare rotates", _both(a["cloudflare_rotates_at"], now)),
        ("Last rotation", _last_rotation_words(a, now, publication)),
        ("Window", _window_words(a, account, now)),
        ("Last check", _both(a["checked_at"], now)),
        ("Next check", _both(a["next_check_at"], now)),
        ("Interval", f"{_e(a['key_rotation_interval_days'])} days"),
    ]
    if a["set_interval"] is not None:
        rows.append(("Interval to set", f"{_e(a['set_interval'])} days"))
    rotation = a["rotation"]
    if a["rotation_open"]:
        since = _both(rotation["intended_at"], now)
        rows.insert(
            0, ("Unconfirmed rotation", f"<span class='bad'>{_e(rotation['state'])}</span> since {since}")
        )
    table = "\n".join(f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in rows)
    message = a["error"] if a["error"] is not None else a["message"]
    kind = f"{state} dryrun" if a["dry_run"] else state
    badges = f'<span class="badge {state}">{_e(_STATE_WORDS[state])}</span> '
    badges += f'<span class="badge">{_e(headline)}</span>'
    return f"""<section class="card {kind}" id="account-{_e(a["account"])}">
<h2>{dry}{_e(a["account"])} {badges}</h2>
<p class="message">{_e(message)}</p>
{timeline(a, now, account)}
<table>
{table}
</table>
<p class="id">{_e(a["account_id"])}</p>
</section>"""


# --------------------------------------------------------------------------- the timeline

_W, _H, _AXIS = 640.0, 72.0, 38.0


def timeline(a: dict[str, Any], now: datetime, account: Account | None) -> str:
    """The account's past rotations, the next planned one, Cloudflare's own and the maintenance
    windows on one line, as inline SVG (no script): from 6 weeks back to past Cloudflare's own."""
    deadline = _time(a["cloudflare_rotates_at"])
    planned = _time(a["next_rotation_at"])
    start = now - timedelta(days=42)
    ahead = max([t for t in (deadline, planned) if t is not None and t > now], default=now)
    end = min(max(ahead + timedelta(days=4), now + timedelta(days=14)), now + timedelta(days=400))
    span = (end - start).total_seconds()

    def x(moment: datetime) -> float:
        return round(8 + (_W - 16) * (moment - start).total_seconds() / span, 1)

    parts = [
        f'<svg class="timeline" viewBox="0 0 {_W:.0f} {_H:.0f}" role="img" '
        f'aria-label="timeline of {_e(a["account"])}">',
        f'<line class="axis" x1="8" y1="{_AXIS}" x2="{_W - 8:.0f}" y2="{_AXIS}"/>',
    ]
    if account is not None and account.windows:
        for opens, closes in account.windows.openings(now, end, limit=60):
            left, right = x(max(opens, now)), x(min(closes, end))
            parts.append(
                f'<rect class="window" x="{left}" y="{_AXIS - 12}" width="{max(2.0, right - left):.1f}" '
                f'height="24"><title>maintenance window {_e(_when(iso(opens)))}</title></rect>'
            )
    day = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    step = 7 if span < 70 * 86400 else 14 if span < 140 * 86400 else 28
    while day < end:
        if (day.weekday() == 0 or step == 28) and 30 < x(day) < _W - 30:
            parts.append(
                f'<line class="tick" x1="{x(day)}" y1="{_AXIS - 3}" x2="{x(day)}" y2="{_AXIS + 3}"/>'
            )
            parts.append(f'<text class="date" x="{x(day)}" y="{_H - 4}">{day.strftime("%d %b")}</text>')
            day += timedelta(days=step)
        else:
            day += timedelta(days=1)
    parts.append(f'<line class="now" x1="{x(now)}" y1="16" x2="{x(now)}" y2="{_AXIS + 8}"/>')
    parts.append(f'<text class="label" x="{x(now)}" y="13">now</text>')
    if deadline is not None and start <= deadline <= end:
        parts.append(
            f'<line class="deadline" x1="{x(deadline)}" y1="17" x2="{x(deadline)}" y2="{_AXIS + 8}">'
            f"<title>Cloudflare rotates on its own {_e(_when(iso(deadline)))}</title></line>"
        )
        parts.append(f'<text class="label cf" x="{x(deadline)}" y="13">Cloudflare</text>')
    for past in a["history"]:
        moment = _time(past["at"])
        if moment is None or not start <= moment <= end:
            continue
        cx = x(moment)
        what = f"{_e(past['by'])} rotated {_e(_when(past['at']))}"
        if past["by"] == "rotator":
            parts.append(
                f'<circle class="rotator" cx="{cx}" cy="{_AXIS}" r="6"><title>{what}</title></circle>'
            )
        elif past["by"] == "cloudflare":
            diamond = f"{cx},{_AXIS - 7} {cx + 7},{_AXIS} {cx},{_AXIS + 7} {cx - 7},{_AXIS}"
            parts.append(f'<polygon class="cloudflare" points="{diamond}"><title>{what}</title></polygon>')
        else:
            parts.append(
                f'<circle class="unknown" cx="{cx}" cy="{_AXIS}" r="5"><title>{what}</title></circle>'
            )
    if planned is not None and a["next_rotation_by"] == "rotator" and start <= planned <= end:
        px = x(planned)
        triangle = f"{px - 7},{_AXIS + 7} {px + 7},{_AXIS + 7} {px},{_AXIS - 7}"
        parts.append(
            f'<polygon class="planned" points="{triangle}"><title>rotator rotates next '
            f"{_e(_when(iso(planned)))}</title></polygon>"
        )
    parts.append("</svg>")
    return "".join(parts)


_SYMBOLS = (
    ('<circle class="rotator" cx="7" cy="7" r="6"/>', "rotated by rotator"),
    ('<polygon class="cloudflare" points="7,0 14,7 7,14 0,7"/>', "by Cloudflare (or outside rotator)"),
    ('<circle class="unknown" cx="7" cy="7" r="5"/>', "by whom unknown"),
    ('<polygon class="planned" points="0,14 14,14 7,0"/>', "rotator's next"),
    ('<line class="deadline" x1="7" y1="0" x2="7" y2="14"/>', "Cloudflare's own"),
    ('<rect class="window" x="0" y="2" width="14" height="10"/>', "maintenance window"),
)
_LEGEND = (
    '<p class="legend">Timelines: '
    + " ".join(f'<svg viewBox="0 0 14 14" class="sym">{shape}</svg> {words}' for shape, words in _SYMBOLS)
    + "</p>"
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>rotator status</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 0; padding: 12px 16px; background: #f4f5f7;
  color: #1d1f23; }}
h1 {{ font-size: 1.3em; margin: 0 0 4px; }}
.meta, .legend {{ color: #5b6068; font-size: .85em; margin: 0 0 10px; }}
.summary, .card {{ background: #fff; border-radius: 8px; padding: 10px 12px; margin: 0 0 12px;
  box-shadow: 0 1px 2px rgba(0,0,0,.1); }}
.tiles {{ display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 8px; }}
.tile {{ border-radius: 6px; padding: 6px 10px; background: #eef0f3; }}
.tile b {{ font-size: 1.4em; }}
.tile.failing, .tile.unpublished {{ background: #fde7e7; color: #8e1b1b; }}
.tile.unconfirmed, .tile.due {{ background: #fff1d6; color: #7a4b00; }}
.tile.held {{ background: #e6effa; color: #1f4f8f; }}
.tile.healthy {{ background: #e3f4e8; color: #17602b; }}
.tile.zero {{ background: #f4f5f7; color: #8a8f96; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }}
@media (max-width: 600px) {{ .cards {{ grid-template-columns: 1fr; }} body {{ padding: 8px; }} }}
.card {{ margin: 0; border-left: 6px solid #9aa0a6; min-width: 0; }}
.card.failing, .card.unpublished {{ border-left-color: #c62828; }}
.card.unconfirmed, .card.due {{ border-left-color: #d98b00; }}
.card.held {{ border-left-color: #2f6fbd; }}
.card.healthy {{ border-left-color: #1a7f37; }}
.card.dryrun {{ background: repeating-linear-gradient(135deg, #fff, #fff 14px, #fffbe6 14px, #fffbe6 28px); }}
.dry {{ background: #ffd24d; color: #3d2e00; border-radius: 4px; padding: 1px 6px; font-size: .85em; }}
h2 {{ font-size: 1.1em; margin: 0; overflow-wrap: anywhere; }}
.badge {{ display: inline-block; font-size: .8em; font-weight: normal; background: #eef0f3;
  border-radius: 4px; padding: 1px 6px; }}
.badge.failing, .badge.unpublished {{ background: #fde7e7; color: #8e1b1b; }}
.badge.unconfirmed, .badge.due {{ background: #fff1d6; color: #7a4b00; }}
.message {{ margin: 6px 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9em; }}
th {{ text-align: left; font-weight: normal; color: #5b6068; padding: 2px 8px 2px 0; width: 30%;
  vertical-align: top; }}
td {{ padding: 2px 0; overflow-wrap: anywhere; }}
td ul {{ margin: 2px 0 0; padding-left: 18px; }}
.abs {{ color: #5b6068; }}
.good {{ color: #17602b; font-weight: 600; }}
.warn {{ color: #7a4b00; font-weight: 600; }}
.bad {{ color: #b3261e; font-weight: 600; }}
.id {{ color: #5b6068; font: .75em monospace; margin: 6px 0 0; overflow-wrap: anywhere; }}
svg.timeline {{ width: 100%; height: auto; display: block; margin: 4px 0 6px; }}
svg.sym {{ width: 12px; height: 12px; vertical-align: -1px; }}
.axis {{ stroke: #9aa0a6; stroke-width: 2; }}
.tick {{ stroke: #9aa0a6; }}
.date {{ font-size: 13px; fill: #5b6068; text-anchor: middle; }}
.label {{ font-size: 13px; fill: #1d1f23; text-anchor: middle; }}
.label.cf {{ fill: #b3261e; }}
.now {{ stroke: #1d1f23; stroke-width: 1.5; stroke-dasharray: 3 2; }}
.deadline {{ stroke: #b3261e; stroke-width: 3; }}
.window {{ fill: #cfe3fa; stroke: #2f6fbd; stroke-width: .5; }}
.rotator {{ fill: #1a7f37; }}
.cloudflare {{ fill: #fff; stroke: #e8710a; stroke-width: 2.5; }}
.unknown {{ fill: #fff; stroke: #8a8f96; stroke-width: 2; }}
.planned {{ fill: #fff; stroke: #1a7f37; stroke-width: 2.5; }}
</style>
</head>
<body>
<h1>rotator</h1>
<p class="meta">version {version} &middot; as of {generated_at} (Cloudflare's clock)
&middot; <a href="/status">JSON</a> &middot; <a href="/metrics">metrics</a></p>
{summary}
{legend}
<div class="cards">
{cards}
</div>
</body>
</html>
"""
