"""The command line: ``rotator run | check | rotate | validate | demo``.

Exit codes: 0 success; 1 an account failed (``run --once``, ``check``), or ``rotate`` did not rotate
(the gap, a dry-run account, a ``--force`` not confirmed, a failure); 2 a bad config
or usage, an unknown account name or a missing credential; 3 what rotator needs around it failed (the
listen address is in use, the state file cannot be read, the Kubernetes API). ``run`` logs to stdout
as containers expect; commands that print a result print it on stdout and log on stderr, so
``rotator check --json | jq`` works. A user's mistake is one clear line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator import __version__, sighup
from rotator.config.credentials import Credential, remember_configured_secrets, require_credentials
from rotator.errors import ConfigError, CredentialError, KubernetesError, ListenError, StateFileError
from rotator.redaction import redact

# Each command imports what it needs when it runs (pydantic, httpx, aiohttp and
# prometheus-client take half a second): `rotator --version` and `--help` load none of them.
if TYPE_CHECKING:
    from rotator.check.checker import Checker, CheckResult
    from rotator.check.rotation import Fence
    from rotator.cloudflare.client import CloudflareClient
    from rotator.config.model import Account, Config
    from rotator.ledger.ledger import Store

EXIT_OK, EXIT_ACCOUNT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
# rotator.config.model's default, spelled here so the parser is built without loading the config's
# models (tests/e2e/test_startup.py checks the two agree).
DEFAULT_CONFIG_PATH = Path("/etc/rotator/config.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    sighup.catch_early()
    sys.excepthook = _redacted_traceback
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ConfigError, CredentialError) as exc:
        _say_error(str(exc))
        return EXIT_USAGE
    except (KubernetesError, ListenError, StateFileError) as exc:
        _say_error(str(exc))
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`rotator check | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


def _redacted_traceback(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """A traceback (a bug's, never a user's mistake) through the redactor too: its message may
    quote what a library was given, a proxy's URL with its password, say."""
    import traceback

    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Keeps Cloudflare Access signing keys rotated on a policy.",
        epilog="'rotator COMMAND --help' describes a command, with examples. To rehearse a config\n"
        "against a simulated Cloudflare: python -m cloudflare_sim --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: $ROTATOR_CONFIG, then {DEFAULT_CONFIG_PATH})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[config], help="run the daemon")
    run.add_argument("--once", action="store_true", help="check every account once, then exit")
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check", parents=[config], help="show what the daemon would do; change nothing"
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--wide",
        action="store_true",
        help=f"every column, in full (default: a table that fits {TABLE_WIDTH} columns)",
    )
    check.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    check.set_defaults(handler=_check)

    rotate = commands.add_parser("rotate", parents=[config], help="rotate one account's key now")
    rotate.add_argument("account", help="the account's name in the config")
    rotate.add_argument(
        "--force",
        action="store_true",
        help="rotate even within min_days_between_rotations of the last one (asks first: see --yes)",
    )
    rotate.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="with --force: break the minimum gap without asking (users holding tokens signed by "
        "the previous key are logged out)",
    )
    rotate.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait (up to publication.deadline) for the new key to be served at the team's "
        "certs endpoint",
    )
    rotate.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    rotate.set_defaults(handler=_rotate)

    validate = commands.add_parser(
        "validate", parents=[config], help="check the config and say what is wrong"
    )
    validate.add_argument(
        "--without-secrets",
        action="store_true",
        help="check the file alone, as in CI where the secrets are not set: a secret that cannot be "
        "read is a warning, not a refusal",
    )
    validate.set_defaults(handler=_validate)

    demo = commands.add_parser("demo", help="run the daemon against the built-in simulator")
    demo.add_argument(
        "--listen", default="127.0.0.1:9464", help="where to serve /metrics (default %(default)s)"
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument(
        "--json",
        action="store_true",
        help="every log line as JSON, unfiltered (default: a view for a person)",
    )
    demo.set_defaults(handler=_demo)
    for name, command in commands.choices.items():
        command.description, command.epilog = _HELP[name]
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


_QUIET_HELP = "print only the result: no log lines or warnings on stderr, but errors"

# Each command's --help: what it does, then examples. Kept apart from the arguments above so that
# the prose reads as a whole (and RawDescriptionHelpFormatter keeps its line breaks).
_HELP = {
    "run": (
        "Run the daemon: check every account soon after start, then every schedule.check_interval\n"
        "(plus jitter), rotate each key as the policy decides, and serve /metrics, /healthz and\n"
        "/readyz on http.listen. The config is reloaded on SIGHUP and when the file changes. Logs are\n"
        "JSON lines on stdout. SIGTERM or SIGINT stops it; a rotation in flight is recorded first.",
        "examples:\n"
        "  rotator run -c /etc/rotator/config.yaml\n"
        "  rotator run --once -c config.yaml    # one pass over every account, then exit\n"
        "\n"
        "exit codes: 0 stopped, or --once with every account checked; 1 an account failed (--once);\n"
        "2 the config or a credential cannot be used; 3 http.listen is in use, the state file or the\n"
        "Kubernetes API failed.",
    ),
    "check": (
        "Read every account's key configuration from Cloudflare and show what the daemon would do\n"
        "and why: the days until Cloudflare rotates, the interval a run would set, the action and\n"
        "its reason, who rotates next (rotator or Cloudflare) and when, the next check and window.\n"
        "Changes nothing: no rotation, no PUT. The result is on stdout, logs on stderr.",
        "examples:\n"
        "  rotator check -c config.yaml\n"
        "  rotator check --json -c config.yaml | jq '.accounts[] | select(.action == \"rotate\")'\n"
        "\n"
        "exit codes: 0 every account read; 1 an account could not be read; 2 the config or a\n"
        "credential cannot be used; 3 the state file or the Kubernetes API failed.",
    ),
    "rotate": (
        "Rotate one account's key now (reason: requested). The minimum gap since the last rotation\n"
        "(min_days_between_rotations) still holds unless --force; dry_run is honoured; maintenance\n"
        "windows do not apply to a person. An enforced key_rotation_interval_days is corrected too.",
        "examples:\n"
        "  rotator rotate -c config.yaml production\n"
        "  rotator rotate -c config.yaml production --force    # within the gap: asks first\n"
        "  rotator rotate -c config.yaml production --force --yes -q    # no question, one line\n"
        "\n"
        "--force within the minimum gap retires a key tokens in flight may still be signed with,\n"
        "which logs their users out: rotator says so and asks (y/N) on a terminal; elsewhere it\n"
        "sends nothing and exits 1 unless --yes is given.\n"
        "\n"
        "ACCOUNT is the account's name in the config (accounts[].name).\n"
        "\n"
        "As the daemon's, the rotation is notified (notify.webhooks) and verified: rotator waits up\n"
        "to publication.deadline for the new key at the team's certs endpoint and says whether it\n"
        "is served (key_published) or late (key_publication_late); --no-wait does not wait.\n"
        "\n"
        "With leader_election on, it rotates as the leader: it takes the Lease when no replica\n"
        "holds it, and sends nothing beside a live leader.\n"
        "\n"
        "exit codes: 0 rotated (a late publication is said, and logged); 1 not rotated (the gap,\n"
        "a dry-run account, a refused --force, a live leader, a failure); 2 the config, a\n"
        "credential or ACCOUNT cannot be used; 3 the state file or the Kubernetes API failed.",
    ),
    "validate": (
        "Check the config and say what is wrong: one line per problem, naming the file, the account,\n"
        "the field and what was expected. It refuses what `rotator run` would refuse at start,\n"
        "with the same lines: the config, and every secret it names (API tokens, webhook secrets,\n"
        "http.auth_token_file). Warnings are reported without failing. In CI, where the secrets are\n"
        "not set, --without-secrets reports a secret that cannot be read as a warning.",
        "examples:\n"
        "  rotator validate -c config.yaml\n"
        "  ROTATOR_CONFIG=config.yaml rotator validate\n"
        "  rotator validate --without-secrets -c config.yaml    # in CI\n"
        "\n"
        "exit codes: 0 the config can be used (here; with --without-secrets, given its secrets);\n"
        "2 it cannot.",
    ),
    "demo": (
        "Run the real daemon against the built-in Cloudflare simulator on localhost, where a day\n"
        "lasts 2 seconds: five accounts, keys rotated within the first minute, one account in dry\n"
        "run, one with its interval enforced. Nothing leaves this machine; no token is needed.",
        "examples:\n"
        "  rotator demo\n"
        "  rotator demo --listen 127.0.0.1:0 --duration 60    # any free port, one minute\n"
        "  rotator demo --json    # every log line as JSON instead of the view for a person\n"
        "\n"
        "To rehearse your own config, run it against python -m cloudflare_sim (docs/rehearse.md).",
    ),
}


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config)
    return Path(os.environ.get("ROTATOR_CONFIG") or DEFAULT_CONFIG_PATH)


def _load(args: argparse.Namespace, *, stream: Any) -> Config:
    from rotator.config.model import load_config
    from rotator.logs import configure_logging

    config = load_config(_config_path(args))
    level = "error" if getattr(args, "quiet", False) else config.settings.logging.level
    configure_logging(level, config.settings.logging.format, stream)
    if args.handler is not _run:  # the daemon reads them itself, and refuses to start without them
        remember_configured_secrets(config)
    return config


def _run(args: argparse.Namespace) -> int:
    from rotator.daemon import Daemon
    from rotator.ha.election import connect_kubernetes

    async def run() -> int:
        with long_lived():
            config = _load(args, stream=sys.stdout)
            if args.once:
                _refuse_beside_the_leader(config, "run --once")
            credentials = require_credentials(config)
        kubernetes = await connect_kubernetes(config)  # None unless leader_election.enabled
        with long_lived():
            daemon = Daemon(config, credentials, log_stream=sys.stdout, kubernetes=kubernetes)
        return await daemon.run(once=args.once)

    return asyncio.run(run())


def _refuse_beside_the_leader(config: Config, command: str) -> None:
    """`rotator run --once` does not take part in leader election: beside an elected leader it
    could rotate one key twice. (`rotator rotate` does: it takes the Lease, or says who holds it.)"""
    if config.settings.leader_election.enabled:
        raise ConfigError(
            f"{config.path}: leader_election is enabled, so only the elected leader (rotator run) "
            f"rotates; `rotator {command}` would act beside it. Run `rotator run` (the replicas elect "
            "a leader), or `rotator rotate ACCOUNT`, which rotates as the leader when no replica holds "
            "the Lease"
        )


# Allocations between two collections of the youngest generation once the daemon is built (long_lived).
YOUNG_COLLECTION = 10_000


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """Build what lives as long as the process (the config, the daemon) out of the garbage
    collector's sight: it is not run meanwhile, and what was built is then frozen, so no later
    full collection walks it again. With 10,000 accounts that is 95,000 objects: 0.2 s of
    start-up, and 0.7 s of collections in the first pass (bench/RESULTS.md, section 3).
    Frozen objects are still freed when no longer referenced (an old config after a reload);
    only a reference cycle among them would be kept.

    From then on the youngest generation is collected every ``YOUNG_COLLECTION`` allocations
    rather than 700: a check leaves no reference cycle behind (its garbage is freed as it goes),
    so a collection finds next to nothing and only walks the checks in flight. Measured on a pass
    over 10,000 accounts: 35 µs less CPU a check, the same peak memory; over 50,000, 17 full
    collections (2.3 s) became one."""
    gc.disable()
    try:
        yield
        gc.collect()  # start-up's own garbage first, so none of it is frozen
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION, *gc.get_threshold()[1:])
    finally:
        gc.enable()


def _validate(args: argparse.Namespace) -> int:
    from rotator.config.capacity import config_warnings
    from rotator.config.credentials import credential_problems, load_credentials, refuse_secret_names

    config = _load(args, stream=sys.stderr)
    credentials = load_credentials(config.accounts)
    refuse_secret_names(config)  # with the secrets that could be read: a name must hold none
    for warning in config_warnings(config, credentials):
        _print(f"warning: {warning}")
    # What `run` refuses at start, in its words (each line names the file), and who needs it.
    refusals = [
        (f"{config.path}: {problem}", "run, check and rotate")
        for problem in credential_problems(config.accounts, credentials)
    ]
    refusals += [(line, needs) for line, needs in _secret_refusals(config)]
    if refusals and not args.without_secrets:
        for line, _ in refusals:
            _say_error(line)
        return EXIT_USAGE
    for line, needs in refusals:
        _print(f"warning: {line.removeprefix(f'{config.path}: ')} (needed by {needs})")
    _print(f"{config.path}: valid, {len(config.accounts)} account(s)")
    return EXIT_OK


def _secret_refusals(config: Config) -> list[tuple[str, str]]:
    """The secrets besides API tokens that `run` reads at start, each that cannot be read: (the
    line run refuses with, the commands that need it). The webhooks' worded as
    rotator.after.followup.read_webhooks words them (tests/unit/test_config.py holds them to it),
    without importing it: validate loads no network code."""
    from rotator.config.credentials import read_auth_token, read_secret

    found = []
    try:
        read_auth_token(config)
    except CredentialError as exc:
        found.append((str(exc), "run"))
    for name, webhook in config.settings.notify.named():
        if webhook.secret_env is None and webhook.secret_file is None:
            continue
        try:
            read_secret(webhook.secret_env, webhook.secret_file)
        except CredentialError as exc:
            line = f"{config.path}: notify webhook {name}: its signing secret cannot be read: {exc}"
            found.append((line, "run and rotate"))
    return found


def _check(args: argparse.Namespace) -> int:
    import json

    from rotator.config.capacity import capacity_warnings

    config = _load(args, stream=sys.stderr)
    credentials = require_credentials(config)
    if not args.quiet:
        for warning in capacity_warnings(config, credentials):
            _print(f"rotator: warning: {warning}", file=sys.stderr)
    results = asyncio.run(_check_all(config, credentials))
    if args.json:
        _print(json.dumps({"accounts": [r.as_dict() for r in results]}, indent=2))
    else:
        _print(_table(results) if args.wide else _narrow_table(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_ACCOUNT_FAILED


def _rotate(args: argparse.Namespace) -> int:
    config = _load(args, stream=sys.stderr)
    account = config.account(args.account)
    if account is None:
        names = ", ".join(a.name for a in config.accounts)
        _say_error(f"{config.path}: no account named '{args.account}' (configured: {names})")
        return EXIT_USAGE
    credentials = require_credentials(config)
    from rotator.after.followup import read_webhooks

    read_webhooks(config)  # a secret that cannot be read refuses before anything is sent, as run does
    if args.force and not account.policy.dry_run:
        # A read-only check first: would a plain request be held back by the gap? Then --force
        # breaks it, and a person says so before anything is sent.
        (preview,) = asyncio.run(_check_all(config, credentials, [account], requested=True))
        if preview.error is not None:
            _print(f"{account.name}: not rotated: {preview.error}")
            return EXIT_ACCOUNT_FAILED
        assert preview.decision is not None
        if preview.decision.reason in _GAP and not _confirmed(account.name, preview, args):
            _print(f"{account.name}: not rotated: --force within the minimum gap needs --yes ({_REFUSED})")
            return EXIT_ACCOUNT_FAILED

    from prometheus_client import CollectorRegistry

    from rotator.after.followup import FollowUp
    from rotator.after.kube_events import KubeEvents
    from rotator.after.publication import Verdict
    from rotator.config.durations import format_duration
    from rotator.daemon import build_client
    from rotator.ha.election import connect_kubernetes, holding_the_lease
    from rotator.ha.leader import process_identity
    from rotator.metrics.families import Metrics

    verdict: Verdict | None = None

    async def rotate_one() -> CheckResult | str:
        nonlocal verdict
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        client = build_client(config, metrics)
        kubernetes = await connect_kubernetes(config)  # None unless leader_election.enabled
        events = None
        if kubernetes is not None:
            election = config.settings.leader_election
            events = KubeEvents(kubernetes, election.lease_name, process_identity(election.identity))
            events.start()
        # What follows the rotation is the daemon's: notifications, Kubernetes Events, and the
        # publication check.
        followup = FollowUp(
            config, client, metrics, registry, lambda a: credentials[a.account_id], also=events
        )
        followup.start()
        try:
            await followup.before_check(account)  # the certs served before: the verdict's baseline
            async with holding_the_lease(config) as held:
                if isinstance(held, str):
                    return held
                store, fence = held
                checker, close = _one_shot_checker(
                    config, credentials, read_only=False, store=store, fence=fence, client=client
                )
                try:
                    result = await checker.check(account, requested=True, force=args.force)
                finally:
                    await close()
            # The Lease released first: the wait for the verdict never holds a leader back.
            followup.after_check(result)
            if result.rotated and not args.no_wait:
                verdict = await followup.published(account)
            return result
        finally:
            await followup.aclose(ROTATE_NOTIFY_DRAIN_SECONDS)
            await client.aclose()
            if events is not None:
                await events.aclose()
            if kubernetes is not None:
                await kubernetes.close()

    result = asyncio.run(rotate_one())
    if isinstance(result, str):
        _print(f"{account.name}: not rotated: {result}")
        return EXIT_ACCOUNT_FAILED
    if result.rotated:
        new_last = result.as_dict()["new_last_key_rotation_at"]
        _print(f"{account.name}: rotated (last_key_rotation_at is now {new_last})")
        publication = config.settings.publication
        if not publication.enabled:
            return EXIT_OK
        if args.no_wait:
            _print(f"{account.name}: publication not verified (--no-wait)")
        elif verdict is Verdict.PUBLISHED:
            _print(f"{account.name}: the new key is served at the team's certs endpoint")
        elif verdict is Verdict.LATE:
            _print(
                f"{account.name}: the new key is not served at the team's certs endpoint within "
                f"publication.deadline ({format_duration(publication.deadline)}): see key_publication_late"
            )
        return EXIT_OK
    if result.error is not None:
        _print(f"{account.name}: not rotated: {result.error}")
        return EXIT_ACCOUNT_FAILED
    assert result.decision is not None
    _print(f"{account.name}: not rotated: {result.decision.message}")
    # A dry-run account too: nothing was rotated, and a script must not take it for done.
    return EXIT_ACCOUNT_FAILED


# Decisions that --force overrides by breaking the minimum gap: Reason.TOO_SOON and Reason.UNSETTLED,
# spelled as their values (a StrEnum's members equal them) so that `rotator --version` need not
# import rotator.core.policy and the ledger behind it, 50 ms (tests/e2e/test_startup.py checks they agree).
_GAP = ("too_soon", "unsettled")
# How long a rotation's notifications still queued get to go out before `rotate` exits.
ROTATE_NOTIFY_DRAIN_SECONDS = 30.0
_REFUSED = "nothing was sent"


def _confirmed(name: str, preview: CheckResult, args: argparse.Namespace) -> bool:
    """Whether a person accepts breaking the gap: --yes, or a "y" on a terminal."""
    assert preview.decision is not None
    if args.yes:
        return True
    warning = (
        f"rotator: {name}: --force would break the minimum gap: {preview.decision.message}.\n"
        "rotator: rotating now retires the key that tokens in flight may be signed with: their users "
        "are logged out."
    )
    if not sys.stdin.isatty():
        if not args.quiet:
            _print(warning, file=sys.stderr)
        return False
    _print(warning, file=sys.stderr)  # even with --quiet: it is the question's reason
    try:
        answer = input(f"Rotate {name} anyway? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _demo(args: argparse.Namespace) -> int:
    try:
        from rotator.demo import run_demo  # the simulator is only loaded when asked for
    except ImportError as exc:  # an install without the simulator (the container image)
        _say_error(
            f"rotator demo needs the Cloudflare simulator, which this install lacks ({exc.name} is "
            "missing): pip install 'rotator[simulator]', or run `make demo` in a checkout"
        )
        return EXIT_UNAVAILABLE
    return asyncio.run(run_demo(listen=args.listen, duration=args.duration, json_logs=args.json))


async def _check_all(
    config: Config,
    credentials: dict[str, Credential],
    accounts: Sequence[Account] | None = None,
    *,
    requested: bool = False,
) -> list[CheckResult]:
    """Each account checked without acting (``requested``: as ``rotate`` would decide)."""
    from rotator.ha.election import leaders_ledger

    kubernetes, store = await leaders_ledger(config)
    checker, close = _one_shot_checker(config, credentials, read_only=True, store=store)
    try:
        return list(
            await asyncio.gather(
                *(
                    checker.check(a, act=False, requested=requested)
                    for a in (config.accounts if accounts is None else accounts)
                )
            )
        )
    finally:
        await close()
        if kubernetes is not None:
            await kubernetes.close()


def _one_shot_checker(
    config: Config,
    credentials: dict[str, Credential],
    *,
    read_only: bool,
    store: Store | None = None,
    fence: Fence | None = None,
    client: CloudflareClient | None = None,
) -> tuple[Checker, Any]:
    """A checker for one command; ``check`` reads the ledger and never writes it. ``client``:
    the caller's, which it closes itself (else one of its own, closed by ``close``)."""
    from prometheus_client import CollectorRegistry

    from rotator.check.checker import Checker
    from rotator.daemon import build_client, lock_wait
    from rotator.ledger.ledger import Ledger
    from rotator.metrics.families import Metrics

    metrics = Metrics(CollectorRegistry())
    ledger = Ledger(
        config.settings.state_file,
        settle_time=timedelta(seconds=config.settings.settle_time),
        read_only=read_only,
        store=store,
        lock_wait=lock_wait(config),
    )
    own_client = client is None
    client = client or build_client(config, metrics)
    accounts = {a.account_id: a for a in config.accounts}
    checker = Checker(
        client,
        metrics,
        ledger,
        dict(credentials),
        accounts=accounts.get,
        check_period=config.check_period,
        fence=fence,
    )

    async def close() -> None:
        if own_client:
            await client.aclose()
        await ledger.close()

    return checker, close


def _table(results: list[CheckResult]) -> str:
    header = (
        "ACCOUNT",
        "DAYS LEFT",
        "INTERVAL",
        "LAST ROTATION",
        "ACTION",
        "REASON",
        "NEXT ROTATION",
        "NEXT CHECK BY",
        "NEXT WINDOW",
        "WHY",
    )
    rows = [header]
    for result in results:
        row = result.as_dict()
        rows.append(
            (
                row["account"],
                _cell(row["days_until_next_rotation"]),
                _interval_cell(row["key_rotation_interval_days"], row["set_interval"]),
                row["last_key_rotation_at"] or "-",
                row["action"] or "error",
                row["reason"] or "-",
                _rotation_cell(row["next_rotation_by"], row["next_rotation_at"], row["action"]),
                row["next_check_by"] or "-",
                _window_cell(row["window_open_until"], row["next_window_at"]),
                row["message"] or row["error"] or "",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + str(r[-1])
        for r in rows
    )


# The default `check` table's width, and the widest account name it shows in full.
TABLE_WIDTH = 100
NAME_WIDTH = 24


def _narrow_table(results: list[CheckResult]) -> str:
    """The table in at most TABLE_WIDTH columns: the day (not the second) of the next rotation, no
    last rotation, next check or window (--wide has them), and each account's WHY on the lines
    under its row, wrapped."""
    import textwrap

    header = ("ACCOUNT", "DAYS LEFT", "INTERVAL", "ACTION", "REASON", "NEXT ROTATION")
    rows = []
    for result in results:
        row = result.as_dict()
        cells = (
            _cut(row["account"], NAME_WIDTH),
            _cell(row["days_until_next_rotation"]),
            _interval_cell(row["key_rotation_interval_days"], row["set_interval"]),
            row["action"] or "error",
            _cut(row["reason"] or "-", 16),
            _short_rotation_cell(row["next_rotation_by"], row["next_rotation_at"], row["action"]),
        )
        rows.append((cells, row["message"] or row["error"] or ""))
    widths = [max(len(c[i]) for c in [header, *(cells for cells, _ in rows)]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for cells, why in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        lines += textwrap.wrap(why, TABLE_WIDTH, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _short_rotation_cell(by: str | None, at: str | None, action: str | None) -> str:
    if by is None or at is None:
        return "-"
    if action == "rotate":
        return "now, rotator"
    return f"{at[:10]} {'Cloudflare' if by == 'cloudflare' else 'rotator'}"


def _interval_cell(interval: float | None, set_to: int | None) -> str:
    """Cloudflare's interval, and the one a run would PUT: ``42 -> 30``."""
    return _cell(interval) if set_to is None else f"{_cell(interval)} -> {set_to}"


def _rotation_cell(by: str | None, at: str | None, action: str | None) -> str:
    if by is None or at is None:
        return "-"
    if action == "rotate":
        return "now, by rotator"
    return f"{at} by {'Cloudflare' if by == 'cloudflare' else 'rotator'}"


def _window_cell(open_until: str | None, next_at: str | None) -> str:
    if open_until:
        return f"open until {open_until}"
    return next_at or "-"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _say_error(message: str) -> None:
    for line in message.splitlines():
        _print(f"rotator: error: {line}", file=sys.stderr)


def _print(text: str, file: Any = None) -> None:
    """Every line a command prints passes through rotator.redaction: an error quoting Cloudflare's
    answer, a proxy's URL or a pasted token is shown without the secret."""
    print(redact(text), file=file or sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
