"""Can one credential's budget check all its accounts within ``check_interval``? Pure arithmetic.

Every check is at least one GET, and every GET spends the budget of the account's credential
(``cloudflare.rate_limit``: ``requests`` per ``per``; accounts whose secrets are equal share one, as
they do at Cloudflare). A cycle over ``n`` accounts therefore takes at least ``n * per / requests``
seconds. With a shorter ``check_interval`` the cycle cannot finish before the next one is due: the
checks queue up behind the budget, every account is checked less often than configured, and the
queue never drains. ``rotator check``, ``validate`` and ``run`` warn, and say the shortest interval
that can keep up.

The certs endpoints' budget (``publication.rate_limit``) is the same arithmetic: every check reads
its account's certs once, and a part of the budget (``verification_reserve``) is kept for the reads
that verify a rotation. When the checks' reads cannot fit the rest, routine reads are skipped
(rotator.after.publication): ``certs_capacity_warnings`` says so at load.

Nothing here reads a clock, a file or the network: the caller gathers, this decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rotator.config.credentials import Credential
from rotator.config.durations import format_duration
from rotator.config.model import Config


@dataclass(frozen=True)
class Shortfall:
    """One credential whose accounts cannot all be checked within one ``check_interval``."""

    credential: str  # where the secret comes from, safe to print
    accounts: int
    check_interval: float
    shortest_interval: float  # seconds, rounded up as shortest_interval() says

    def message(self, requests: int, per: float) -> str:
        return (
            f"{self.accounts} accounts share one credential ({self.credential}): its budget of "
            f"{requests} requests per {format_duration(per)} checks each of them at most once every "
            f"{format_duration(self.shortest_interval)}, but schedule.check_interval is "
            f"{format_duration(self.check_interval)}, so a cycle of checks cannot finish before the "
            "next is due and every account is checked less often than configured. Set "
            f"schedule.check_interval to at least {format_duration(self.shortest_interval)} (more "
            "leaves room for rotations and retries), raise cloudflare.rate_limit up to what "
            "Cloudflare allows (1200 per 5m), or give some accounts a credential of their own."
        )


def shortest_interval(accounts: int, requests: int, per: float) -> float:
    """The shortest check_interval in which ``accounts`` checks fit ``requests`` per ``per`` seconds,
    rounded up to a whole second, or a whole minute past ten, so it reads well as a duration."""
    seconds = accounts * per / requests
    step = 60.0 if seconds > 600 else 1.0
    return math.ceil(seconds / step) * step


def shortfalls(
    accounts_by_credential: Mapping[str, int], check_interval: float, requests: int, per: float
) -> list[Shortfall]:
    """Every credential (named by the keys) whose accounts' cycle cannot finish in check_interval."""
    found = []
    for credential, accounts in accounts_by_credential.items():
        if accounts * per / requests > check_interval:
            found.append(
                Shortfall(credential, accounts, check_interval, shortest_interval(accounts, requests, per))
            )
    return found


def capacity_warnings(config: Config, credentials: Mapping[str, Credential | Exception]) -> list[str]:
    """``shortfalls`` of a loaded config, its accounts grouped by credential (``credentials`` maps
    account ids to what was read), as the lines ``rotator check``, ``validate`` and ``run`` give.

    An account whose credential could not be read (``validate`` in CI has no secrets) is grouped by
    where it would come from: accounts that name the same variable or file share its secret."""
    counts: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    for account in config.accounts:
        credential = credentials.get(account.account_id)
        if isinstance(credential, Credential):
            key, source = credential.fingerprint, credential.source.describe()
        else:
            source = account.credential.describe()
            key = f"unread: {source}"
        counts[key] = counts.get(key, 0) + 1
        described = sources.setdefault(key, [])
        if source not in described:
            described.append(source)
    budget = config.settings.cloudflare.rate_limit
    named = {" and ".join(sources[fingerprint]): count for fingerprint, count in counts.items()}
    found = shortfalls(named, config.settings.schedule.check_interval, budget.requests, budget.per)
    return [shortfall.message(budget.requests, budget.per) for shortfall in found]


# The share of publication.rate_limit that only reads verifying a rotation may take.
VERIFICATION_SHARE = 0.2


def verification_reserve(requests: int) -> int:
    """Reads of ``requests`` per window kept for verifying rotations: a fifth, at least one, and
    never the whole budget (with a budget of one read, verification only goes first)."""
    if requests < 2:
        return 0
    return min(requests - 1, max(1, math.ceil(requests * VERIFICATION_SHARE)))


def certs_capacity_warnings(config: Config) -> list[str]:
    """A line when every check's certs read cannot fit ``publication.rate_limit`` outside its reserve."""
    publication = config.settings.publication
    if not publication.enabled or not config.accounts:
        return []
    budget = publication.rate_limit
    routine = budget.requests - verification_reserve(budget.requests)
    interval = config.settings.schedule.check_interval
    accounts = len(config.accounts)
    needed = accounts * budget.per / interval
    if needed <= routine:
        return []
    shortest = shortest_interval(accounts, routine, budget.per)
    requests = math.ceil(math.ceil(needed) / (1 - VERIFICATION_SHARE))
    while requests - verification_reserve(requests) < needed:  # a step or two, for the rounding
        requests += 1
    return [
        f"publication.rate_limit is {budget.requests} reads per {format_duration(budget.per)}, "
        f"{budget.requests - routine} of them kept for verifying rotations, but {accounts} accounts "
        f"checked every {format_duration(interval)} need {math.ceil(needed)} reads of their certs "
        f"endpoints per {format_duration(budget.per)}: routine reads beyond {routine} are skipped "
        "(rotator_publication_reads_skipped_total), so a key rotated elsewhere is seen later. Set "
        f"schedule.check_interval to at least {format_duration(shortest)}, or raise "
        f"publication.rate_limit.requests to at least {requests} where the endpoint allows it"
    ]


def config_warnings(config: Config, credentials: Mapping[str, Credential | Exception]) -> list[str]:
    """What is worth a warning about a config: its own warnings, each credential whose budget
    cannot check its accounts within check_interval, and a certs budget the checks overrun."""
    return [*config.warnings, *capacity_warnings(config, credentials), *certs_capacity_warnings(config)]
