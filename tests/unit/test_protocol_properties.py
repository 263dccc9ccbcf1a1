"""The rotation protocol under every interleaving hypothesis can find.

A ``RuleBasedStateMachine`` drives the real Checker, Ledger and Cloudflare client (over
``httpx.MockTransport``) against a model of Cloudflare whose reads and echoes lag by a random delay,
whose rotate answers are lost after or before the rotation is applied, that answers 429 and 5xx,
while rotator is crashed and restarted (with and without ``state_file``) and its config reloaded
between any two steps, and time passes by minutes or days.

Invariants:
- never two applied rotations of one account within the minimum gap;
- once Cloudflare is healthy again, a due rotation waits no longer than one check, or, when a
  rotation was left open (its answer lost, or its process killed), than settle_time after the first
  read that followed;
- every applied rotation is then on record (the ledger's anchor reaches it) and nothing is left open.

The guarantee has stated preconditions (README, Safety), and the model keeps to them: a replica lags
by less than settle_time, and without ``state_file`` a restarted process's first read is current.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from rotator.check.checker import Checker
from rotator.check.rotation import Fence
from rotator.cloudflare.client import Backoff, CloudflareClient
from rotator.config.credentials import CredentialSource
from rotator.config.model import Account, parse_config
from rotator.ledger.ledger import Ledger
from rotator.metrics.families import Metrics
from tests.support.clock import FakeClock, settle

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
GAP = timedelta(days=7)
INTERVAL_DAYS = 21
THRESHOLD_DAYS = 3
SETTLE = timedelta(hours=1)
MAX_LAG = timedelta(minutes=50)  # under settle_time: the guarantee's precondition

BACKOFF = Backoff(initial=1.0, maximum=5.0)

# What the next rotate POST meets.
POST_OUTCOMES = ("ok", "429", "502", "applied_then_timeout", "timeout", "applied_then_crash", "crash")


class Crash(BaseException):
    """The process dies here: nothing below it runs, no handler catches it."""


class Cloudflare:
    """The account as Cloudflare holds it, served through replicas that lag."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.history: list[datetime] = [START - timedelta(days=INTERVAL_DAYS - 2)]  # due: 2 days left
        self.applied: list[datetime] = []  # rotations made through the API
        self.lag = timedelta(0)
        self.fresh_reads = 0  # reads that skip the lag (a restart without state_file)
        self.next_post = "ok"
        self.failing_gets = 0
        self.on_post: Callable[[], None] = lambda: None  # called as each rotate POST arrives

    def now(self) -> datetime:
        return START + timedelta(seconds=self.clock.now)

    def last_as_of(self, moment: datetime) -> datetime:
        """The last rotation a replica as of ``moment`` knows of."""
        return max((t for t in self.history if t <= moment), default=self.history[0])

    def answer(self, lagged: bool = True) -> httpx.Response:
        now = self.now()
        seen = now if not lagged else now - self.lag
        last = self.last_as_of(seen)
        result = {
            "days_until_next_rotation": round(INTERVAL_DAYS - (now - last) / timedelta(days=1), 3),
            "key_rotation_interval_days": INTERVAL_DAYS,
            "last_key_rotation_at": last.isoformat().replace("+00:00", "Z"),
        }
        body = {"success": True, "errors": [], "messages": [], "result": result}
        return httpx.Response(200, json=body, headers={"date": now.strftime("%a, %d %b %Y %H:%M:%S GMT")})

    def rotate(self) -> None:
        now = self.now()
        self.history.append(now)
        self.applied.append(now)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            if self.failing_gets:
                self.failing_gets -= 1
                return httpx.Response(503, text="<html>503</html>")
            if self.fresh_reads:
                self.fresh_reads -= 1
                return self.answer(lagged=False)
            return self.answer()
        self.on_post()
        outcome, self.next_post = self.next_post, "ok"
        if outcome == "429":
            return httpx.Response(429, json={"success": False, "errors": []}, headers={"retry-after": "600"})
        if outcome == "502":
            return httpx.Response(502, text="<html>502</html>")
        if outcome == "timeout":
            raise httpx.ReadTimeout("timed out")
        if outcome == "crash":
            raise Crash
        self.rotate()
        if outcome == "applied_then_timeout":
            raise httpx.ReadTimeout("timed out")
        if outcome == "applied_then_crash":
            raise Crash
        return self.answer()  # a 200, echoing a lagging replica's view


class Rotator:
    """One rotator process: client, ledger and checker; a crash throws it away."""

    def __init__(
        self,
        cloudflare: Cloudflare,
        state_file: Path | None,
        account: Account,
        *,
        backoff: Backoff = BACKOFF,
        rate_limit: tuple[int, float] = (1000, 300.0),
        max_concurrency: int = 4,
        fence: Fence | None = None,
    ) -> None:
        clock = cloudflare.clock
        self.client = CloudflareClient(
            "https://api.cloudflare.test/client/v4",
            transport=httpx.MockTransport(cloudflare.handler),
            clock=cloudflare.now,
            monotonic=clock.monotonic,
            sleep=clock.sleep,
            backoff=backoff,
            rate_limit=rate_limit,
            max_concurrency=max_concurrency,
        )
        self.ledger = Ledger(state_file, settle_time=SETTLE)
        self.accounts = {ACCOUNT: account}
        self.credential = CredentialSource.token_env("T").load({"T": "t0k3n-property"})
        metrics = Metrics(CollectorRegistry())
        self.checker = Checker(
            self.client,
            metrics,
            self.ledger,
            {ACCOUNT: self.credential},
            accounts=self.accounts.get,
            fence=fence,
        )


def _account(dry_run: bool, directory: Path, *, windowed: bool = False) -> Account:
    # The window: 12:00-13:00 UTC every day (START is 12:00).
    windows = ", windows: [{cron: '0 12 * * *', duration: 1h}]" if windowed else ""
    text = (
        "cloudflare: {base_url: 'https://api.cloudflare.test/client/v4'}\n"
        f"rotation: {{threshold_days: {THRESHOLD_DAYS}, dry_run: {str(dry_run).lower()}}}\n"
        f"accounts: [{{name: prod, account_id: '{ACCOUNT}'{windows}}}]\n"
    )
    return parse_config(text, directory / "config.yaml").accounts[0]


class RotationProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="rotator-properties-"))
        self.clock = FakeClock(auto=True)
        self.cloudflare = Cloudflare(self.clock)
        self.dry_run = False
        self.state_file: Path | None = None
        self.rotator: Rotator | None = None

    @initialize(
        persistent=st.booleans(),
        lag_minutes=st.integers(min_value=0, max_value=int(MAX_LAG.total_seconds() // 60)),
    )
    def start(self, persistent: bool, lag_minutes: int) -> None:
        self.cloudflare.lag = timedelta(minutes=lag_minutes)
        self.state_file = self.directory / "state.json" if persistent else None
        self.rotator = Rotator(self.cloudflare, self.state_file, _account(self.dry_run, self.directory))

    def teardown(self) -> None:
        _finish(self.loop)
        if self.rotator is not None:
            self.loop.run_until_complete(self.rotator.client.aclose())
        self.loop.close()

    # ----------------------------------------------------------------------- the world

    @rule(minutes=st.integers(min_value=1, max_value=8 * 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.clock.now += minutes * 60

    @rule(minutes=st.integers(min_value=0, max_value=int(MAX_LAG.total_seconds() // 60)))
    def replicas_lag(self, minutes: int) -> None:
        self.cloudflare.lag = timedelta(minutes=minutes)

    @rule(outcome=st.sampled_from(POST_OUTCOMES))
    def next_rotate_meets(self, outcome: str) -> None:
        self.cloudflare.next_post = outcome

    @rule(count=st.integers(min_value=1, max_value=6))
    def reads_fail(self, count: int) -> None:
        self.cloudflare.failing_gets = count

    @rule(dry_run=st.booleans())
    def reload(self, dry_run: bool) -> None:
        assert self.rotator is not None
        self.dry_run = dry_run
        self.rotator.accounts[ACCOUNT] = _account(dry_run, self.directory)

    @rule()
    def crash_and_restart(self) -> None:
        self._restart()

    # ----------------------------------------------------------------------- rotator

    @rule()
    def scheduled_check(self) -> None:
        self._check()

    @rule(outcome=st.sampled_from(POST_OUTCOMES))
    def scheduled_check_whose_rotate_meets(self, outcome: str) -> None:
        self.cloudflare.next_post = outcome
        self._check()

    @rule()
    def person_runs_rotate(self) -> None:
        self._check(requested=True)

    @precondition(lambda self: self.rotator is not None)
    @rule()
    def cloudflare_heals_and_settle_time_passes(self) -> None:
        """Healthy again: no lag, no faults. A check's read starts the settle clock of anything left
        open; settle_time later, one more check must leave nothing open and do what is due."""
        cloudflare = self.cloudflare
        cloudflare.lag, cloudflare.next_post, cloudflare.failing_gets = timedelta(0), "ok", 0
        self._check()
        self.clock.now += SETTLE.total_seconds() + 60
        self._check()
        now = cloudflare.now()
        last = cloudflare.history[-1]
        due = (last + timedelta(days=INTERVAL_DAYS) - now) <= timedelta(days=THRESHOLD_DAYS)
        if due and not self.dry_run:
            assert now - last < GAP, f"due and allowed, yet not rotated by a healthy check ({now - last})"
        assert self.rotator is not None
        record = self.rotator.ledger.record(ACCOUNT)
        assert record.open is None, f"still open after healthy checks: {record.rotation}"
        assert record.anchor is not None
        assert record.anchor >= last - timedelta(seconds=1), "an applied rotation is not on record"

    # ----------------------------------------------------------------------- invariants

    @invariant()
    def never_two_rotations_within_the_gap(self) -> None:
        applied = self.cloudflare.applied
        for earlier, later in pairwise(applied):
            assert later - earlier >= GAP, f"two rotations {later - earlier} apart: {applied}"

    # ----------------------------------------------------------------------- helpers

    def _check(self, **kwargs: Any) -> None:
        assert self.rotator is not None
        rotator = self.rotator
        try:
            self.loop.run_until_complete(rotator.checker.check(rotator.accounts[ACCOUNT], **kwargs))
        except Crash:
            self._restart()

    def _restart(self) -> None:
        assert self.rotator is not None
        old = self.rotator
        # The old process's sockets and tasks die with it; its state file stays.
        _finish(self.loop)
        self.loop.run_until_complete(old.client.aclose())
        if self.state_file is None:
            # Without state_file, Cloudflare's record is all a new process has: the guarantee
            # then needs its first read to be current (README, Safety).
            self.cloudflare.fresh_reads = 1
        self.rotator = Rotator(self.cloudflare, self.state_file, _account(self.dry_run, self.directory))


class TestRotationProtocol(RotationProtocol.TestCase):  # type: ignore[name-defined,misc]
    # On this class: RotationProtocol.TestCase makes a new class each time it is read.
    settings = settings(
        max_examples=150,
        stateful_step_count=40,
        deadline=None,
        derandomize=True,  # the same interleavings in CI every time; see the note above to explore
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


# ----------------------------------------------------------------------------- at the wire
#
# Issue 16: the waits between a decision and the bytes on the wire, as steps of their own. Checks
# run as tasks that block where the real ones block (the credential's budget, a 429's pause, a
# connection slot another request holds, a Lease renewal), on a clock that moves only when a step
# says so; between any two steps the config is reloaded (dry_run, a window, the account removed),
# the Lease lost or regained, SIGTERM sent, the process restarted.
#
# Invariant, checked as each rotate POST reaches Cloudflare: it was decided with the world as it
# is at that instant, that is no earlier than its reservation ended: the account still configured
# and not in dry run (the config then in force), its intent on record with the clock then
# (``intended_at`` is Cloudflare's time at arrival: nothing waited between deciding and sending,
# so the policy judged the window and the gap at that time), the fence valid then (this replica
# holds the Lease for the request's whole deadline from now), and no SIGTERM before it.

NEED = 10.0 + 1.0  # the request's deadline and the fence's margin
LEASE = 30.0


class FakeLease:
    """The fence of a replica whose Lease a step can take away; a renewal takes 2 s."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.leading = True
        self.ends = clock.now + LEASE

    def valid(self) -> bool:
        return self.leading and self.ends - self.clock.now >= NEED

    async def prepare(self) -> bool:
        if self.leading and self.ends - self.clock.now < NEED:
            await self.clock.sleep(2.0)  # the renewal's round trip: a wait
            if self.leading:
                self.ends = self.clock.now + LEASE
        return self.valid()

    def holds(self) -> bool:
        return self.valid()


class WaitsAtTheWire(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="rotator-wire-"))
        self.clock = FakeClock(auto=False)
        self.cloudflare = Cloudflare(self.clock)
        self.cloudflare.on_post = self._post_arrives
        self.lease = FakeLease(self.clock)
        self.config: dict[str, Any] = {"dry_run": False, "windowed": False, "removed": False}
        self.stopped = False
        self.violations: list[str] = []
        self.posts = 0
        self.checks: list[asyncio.Task[Any]] = []
        self.holder: asyncio.Task[None] | None = None
        self.release = asyncio.Event()
        self.other = CredentialSource.token_env("O").load({"O": "other-t0k3n"})
        self.state_file: Path | None = None
        self.rotator: Rotator | None = None

    @initialize(persistent=st.booleans(), windowed=st.booleans())
    def start(self, persistent: bool, windowed: bool) -> None:
        self.config["windowed"] = windowed
        self.state_file = self.directory / "state.json" if persistent else None
        self.rotator = self._new_rotator()

    def teardown(self) -> None:
        self._stop_tasks()
        if self.rotator is not None:
            self.loop.run_until_complete(self.rotator.client.aclose())
        self.loop.close()

    # ----------------------------------------------------------------------- rotator acts

    @precondition(lambda self: not self.stopped and not self.config["removed"])
    @rule()
    def a_check_starts(self) -> None:
        assert self.rotator is not None
        self.checks = [t for t in self.checks if not t.done()]
        if len(self.checks) < 3:
            account = self.rotator.accounts[ACCOUNT]
            self.checks.append(self.loop.create_task(self.rotator.checker.check(account)))
        self._run()

    @rule(outcome=st.sampled_from(("ok", "429", "502", "timeout", "applied_then_timeout")))
    def next_rotate_meets(self, outcome: str) -> None:
        self.cloudflare.next_post = outcome  # a 429 pauses the credential for 600 s

    # ----------------------------------------------------------------------- the waits

    @rule(seconds=st.sampled_from((1, 5, 30, 61, 601, 3600, 6 * 3600, 19 * 86400)))
    def clock_advances(self, seconds: int) -> None:
        """Budget waits (one request a minute), a 429's pause and a Lease renewal end with time;
        19 days, and the key falls due again."""
        self.loop.run_until_complete(self.clock.advance(seconds))

    @precondition(lambda self: self.holder is None and not self.stopped)
    @rule()
    def another_request_takes_the_connection(self) -> None:
        """The one connection slot, held by another credential's request until freed."""
        assert self.rotator is not None
        client, release = self.rotator.client, asyncio.Event()
        self.release = release

        async def hold() -> None:
            async with client.reserve(self.other):
                await release.wait()

        self.holder = self.loop.create_task(hold())
        self._run()

    @precondition(lambda self: self.holder is not None)
    @rule()
    def the_connection_is_freed(self) -> None:
        self.release.set()
        self._run()
        self.holder = None

    # ----------------------------------------------------------------------- the world changes

    @rule(dry_run=st.booleans(), windowed=st.booleans(), removed=st.booleans())
    def reload(self, dry_run: bool, windowed: bool, removed: bool) -> None:
        assert self.rotator is not None
        self.config = {"dry_run": dry_run, "windowed": windowed, "removed": removed}
        self._configure(self.rotator)

    @rule()
    def the_lease_is_lost(self) -> None:
        self.lease.leading = False

    @rule()
    def the_lease_is_won_again(self) -> None:
        self.lease.leading, self.lease.ends = True, self.clock.now + LEASE

    @precondition(lambda self: not self.stopped)
    @rule()
    def sigterm(self) -> None:
        assert self.rotator is not None
        self.stopped = True
        self.rotator.client.stop_waiting()
        self._run()

    @rule()
    def restart(self) -> None:
        assert self.rotator is not None
        self._stop_tasks()
        self.loop.run_until_complete(self.rotator.client.aclose())
        self.stopped = False
        self.rotator = self._new_rotator()

    # ----------------------------------------------------------------------- invariants

    @invariant()
    def every_post_was_decided_at_the_wire(self) -> None:
        assert self.violations == [], self.violations

    @invariant()
    def never_two_rotations_within_the_gap(self) -> None:
        applied = self.cloudflare.applied
        for earlier, later in pairwise(applied):
            assert later - earlier >= GAP, f"two rotations {later - earlier} apart: {applied}"

    # ----------------------------------------------------------------------- helpers

    def _post_arrives(self) -> None:
        self.posts += 1
        assert self.rotator is not None
        now = self.cloudflare.now()
        problems = []
        if self.stopped:
            problems.append("sent after SIGTERM")
        if self.config["removed"] or ACCOUNT not in self.rotator.accounts:
            problems.append("sent for an account no longer configured")
        if self.config["dry_run"]:
            problems.append("sent in dry run")
        if not self.lease.valid():
            problems.append(f"sent without a valid fence (Lease: {self.lease.ends - self.clock.now:g}s left)")
        rotation = self.rotator.ledger.record(ACCOUNT).rotation
        if rotation is None or rotation.state.value != "sent":
            problems.append(f"sent with no intent on record ({rotation})")
        elif rotation.intended_at != now:
            problems.append(f"decided at {rotation.intended_at}, sent at {now}")
        if problems:
            self.violations.append(f"POST at {now}: " + "; ".join(problems))

    def _new_rotator(self) -> Rotator:
        rotator = Rotator(
            self.cloudflare,
            self.state_file,
            self._account(),
            backoff=Backoff(initial=1.0, maximum=1.0),  # whole seconds: Date has no fractions
            rate_limit=(1, 60.0),
            max_concurrency=1,
            fence=self.lease,
        )
        self._configure(rotator)
        if self.state_file is None:
            self.cloudflare.fresh_reads = 1  # as in RotationProtocol._restart
        return rotator

    def _account(self) -> Account:
        return _account(self.config["dry_run"], self.directory, windowed=self.config["windowed"])

    def _configure(self, rotator: Rotator) -> None:
        if self.config["removed"]:
            rotator.accounts.pop(ACCOUNT, None)
        else:
            rotator.accounts[ACCOUNT] = self._account()

    def _run(self) -> None:
        self.loop.run_until_complete(settle())

    def _stop_tasks(self) -> None:
        _finish(self.loop)
        self.checks, self.holder = [], None


class TestWaitsAtTheWire(WaitsAtTheWire.TestCase):  # type: ignore[name-defined,misc]
    settings = settings(
        max_examples=300,
        stateful_step_count=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task and let each run its cleanup to the end, cancelling again a cleanup that
    waits on the fake clock: a coroutine left suspended is closed by the collector later, in some
    other test, as "coroutine ignored GeneratorExit"."""
    for _ in range(20):
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        loop.run_until_complete(settle())
    raise AssertionError(f"tasks that do not end when cancelled: {pending}")
