"""What the daemon knows now, per account: ``/status`` as JSON and ``/`` as a page a person can read.

The daemon hands every check's ``CheckResult`` to a ``StatusBoard``, which keeps the latest one per
configured account; both renderings are built from ``CheckResult.as_dict`` (the data of
``rotator check --json``), plus when the check finished and when the next one is due (the
scheduler's job). ``configure`` is called with the accounts of the config in force: an account
removed by a reload disappears, and a result that arrives for it afterwards is dropped.

The JSON's shape is ``rotator/status.schema.json`` (JSON Schema, draft 2020-12). The page is plain
server-rendered HTML: no JavaScript, inline CSS, one card per account, readable at phone width; every
value is escaped with ``html.escape``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from rotator import __version__
from rotator.check.checker import CheckResult
from rotator.config.model import Account
from rotator.ledger.ledger import iso

# Seconds between two reloads of the page by the browser itself (a meta refresh: no JavaScript).
PAGE_REFRESH_SECONDS = 30


def schema() -> dict[str, Any]:
    """The JSON Schema that every ``/status`` answer satisfies."""
    text = resources.files("rotator.web").joinpath("status.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        leadership: Callable[[], tuple[bool, str | None]] | None = None,
    ) -> None:
        """``next_check(account_id)``: when the scheduler will next check the account (None: not
        scheduled). ``clock``: the local clock, for when a check finished and when a page was made.
        ``leadership``: with leader election, whether this replica leads and who does (a
        follower's page shows no checks: the Service may have sent the reader to either)."""
        self._next_check = next_check
        self._leadership = leadership
        self._clock = clock
        self._latest: dict[str, _Latest] = {}
        self.configure(accounts)

    def configure(self, accounts: Iterable[Account]) -> None:
        """The accounts of the config in force, in its order; a result is kept while its account
        keeps its id and name."""
        latest: dict[str, _Latest] = {}
        for account in accounts:
            known = self._latest.get(account.account_id)
            if known is not None and known.account.name == account.name:
                latest[account.account_id] = _Latest(account, known.result, known.checked_at)
            else:
                latest[account.account_id] = _Latest(account)
        self._latest = latest

    def record(self, result: CheckResult) -> None:
        known = self._latest.get(result.account.account_id)
        if known is None or known.account.name != result.account.name:
            return  # removed (or renamed) while the check ran
        self._latest[result.account.account_id] = _Latest(known.account, result, self._clock())

    def as_json(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "generated_at": iso(self._clock()),
            "leader_election": self._leader_election(),
            "accounts": [self._account(entry) for entry in self._latest.values()],
        }

    def _leader_election(self) -> dict[str, Any] | None:
        if self._leadership is None:
            return None
        leading, holder = self._leadership()
        return {"leading": leading, "holder": holder}

    def _account(self, entry: _Latest) -> dict[str, Any]:
        result = entry.result or CheckResult(entry.account)
        data = result.as_dict()
        rotation = data["rotation"]
        data.update(
            checked=entry.result is not None,
            ok=data["ok"] if entry.result is not None else None,
            checked_at=iso(entry.checked_at),
            next_check_at=iso(self._next_check(entry.account.account_id)),
            rotation_open=rotation is not None and rotation["state"] in ("intent", "sent", "unconfirmed"),
        )
        return data

    def html(self) -> str:
        data = self.as_json()
        cards = "\n".join(_card(account) for account in data["accounts"]) or "<p>No accounts.</p>"
        return _PAGE.format(
            refresh=PAGE_REFRESH_SECONDS,
            version=_e(data["version"]),
            generated_at=_e(_when(data["generated_at"])),
            count=len(data["accounts"]),
            leadership=_leadership(data["leader_election"]),
            cards=cards,
        )

    def routes(self) -> list[web.RouteDef]:
        """``/`` (the page) and ``/status`` (the JSON), for the daemon's HTTP server."""

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=self.html(), content_type="text/html", charset="utf-8")

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.as_json())

        return [web.get("/", page), web.get("/status", status)]


def _leadership(election: dict[str, Any] | None) -> str:
    if election is None or election["leading"]:
        return ""
    holder = election["holder"]
    who = f"{_e(holder)} leads" if holder else "no replica leads right now"
    return (
        f'<p class="meta">This replica follows ({who}): only the leader checks, so its page shows '
        "the checks.</p>\n"
    )


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
    """An ISO time from the JSON as a person reads it: to the minute, in UTC."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _card(a: dict[str, Any]) -> str:
    if not a["checked"]:
        state, headline = "pending", "not checked yet"
    else:
        state = "error" if a["error"] is not None else str(a["action"])
        headline = f"{a['action']}: {a['reason']}" if a["action"] is not None else "check failed"
    rows: list[tuple[str, Any]] = [
        ("Last check", _when(a["checked_at"])),
        ("Next check", _when(a["next_check_at"])),
        ("Days until Cloudflare rotates", a["days_until_next_rotation"]),
        ("Cloudflare rotates at", _when(a["cloudflare_rotates_at"])),
        ("Last rotation", _when(a["new_last_key_rotation_at"] or a["last_key_rotation_at"])),
        ("Interval (days)", a["key_rotation_interval_days"]),
    ]
    if a["set_interval"] is not None:
        rows.append(("Interval to set", a["set_interval"]))
    if a["window_open_until"] is not None:
        rows.append(("Window open until", _when(a["window_open_until"])))
    if a["next_window_at"] is not None:
        rows.append(("Next window", _when(a["next_window_at"])))
    if a["dry_run"]:
        rows.append(("Dry run", True))
    rotation = a["rotation"]
    if a["rotation_open"]:
        rows.append(("Unconfirmed rotation", f"{rotation['state']} since {_when(rotation['intended_at'])}"))
    table = "\n".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in rows)
    message = a["error"] if a["error"] is not None else a["message"]
    return f"""<section class="card {state}">
<h2>{_e(a["account"])} <span class="badge">{_e(headline)}</span></h2>
<p class="message">{_e(message)}</p>
<table>
{table}
</table>
<p class="id">{_e(a["account_id"])}</p>
</section>"""


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>rotator status</title>
<style>
body {{ font: 16px/1.4 system-ui, sans-serif; margin: 0; padding: 12px; background: #f4f5f7;
  color: #1d1f23; }}
h1 {{ font-size: 1.3em; margin: 0 0 4px; }}
.meta {{ color: #5b6068; font-size: .85em; margin: 0 0 12px; }}
.card {{ background: #fff; border-radius: 8px; border-left: 6px solid #9aa0a6; padding: 10px 12px;
  margin: 0 0 12px; box-shadow: 0 1px 2px rgba(0,0,0,.1); }}
.card.rotate {{ border-left-color: #1a7f37; }}
.card.skip {{ border-left-color: #2f6fbd; }}
.card.error {{ border-left-color: #c62828; }}
h2 {{ font-size: 1.1em; margin: 0; overflow-wrap: anywhere; }}
.badge {{ display: inline-block; font-size: .8em; font-weight: normal; background: #eef0f3;
  border-radius: 4px; padding: 1px 6px; }}
.message {{ margin: 6px 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9em; }}
th {{ text-align: left; font-weight: normal; color: #5b6068; padding: 2px 8px 2px 0; width: 45%; }}
td {{ padding: 2px 0; overflow-wrap: anywhere; }}
.id {{ color: #5b6068; font: .75em monospace; margin: 6px 0 0; overflow-wrap: anywhere; }}
</style>
</head>
<body>
<h1>rotator</h1>
<p class="meta">{count} accounts &middot; version {version} &middot; as of {generated_at}
&middot; <a href="/status">JSON</a> &middot; <a href="/metrics">metrics</a></p>
{leadership}{cards}
</body>
</html>
"""
