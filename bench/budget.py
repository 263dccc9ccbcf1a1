"""The API budget benchmark (issue 20): requests per account per day at the defaults.

``.venv/bin/python bench/budget.py [--before /work/base]`` runs the real daemon (``python -m rotator
run``, a process of its own) for ``--days`` simulated days against the simulator (in this process,
on loopback) whose clock runs fast: a simulated day lasts ``--day-seconds``. Every setting measured
in the daemon's local seconds (check_interval, jitter, max_check_interval, settle_time, the
client-side budget's window, team_domain_refresh) is the default divided by the clock's speed, so
the daemon sees the defaults on Cloudflare's clock. A quarter of the accounts have a maintenance
window (daily, 02:00 UTC, 4 h). The simulator rotates a key on its own when it falls due.

It counts every API request (GET/PUT keys, rotate, organizations; the certs endpoint is not
Cloudflare's API and is counted apart), every rotation, Cloudflare's own rotations (late: rotator
missed the deadline), and how long after becoming allowed each rotation came (accounts without a
window: allowed once the threshold is reached and the gap has passed). With ``--before TREE`` the
same run is made with the rotator package of TREE first on PYTHONPATH, and both are reported side by
side. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from cloudflare_sim import Simulator, SimulatorThread

TOKEN = "bench-token"  # noqa: S105 - the simulator's made-up token
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - a variable name
DAY = 86400.0
INTERVAL_DAYS = 30
THRESHOLD_DAYS = 3.0  # rotator's default
MIN_GAP_DAYS = 7.0  # rotator's default
API_OPS = ("get", "put", "rotate", "organizations")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, sim: SimulatorThread, speed: float, *, after: bool, windowed: set[str]) -> None:
    def scaled(seconds: float) -> float:
        return seconds / speed

    schedule: dict[str, Any] = {"check_interval": scaled(3600), "jitter": scaled(300)}
    if after:
        schedule["max_check_interval"] = scaled(DAY)  # the default, a day
    accounts = []
    for i, account_id in enumerate(sim.sim.account_ids):
        account: dict[str, Any] = {"name": f"account-{i}", "account_id": account_id}
        if account_id in windowed:
            account["windows"] = [{"cron": "0 2 * * *", "duration": "4h"}]
        accounts.append(account)
    config = {
        "cloudflare": {
            "base_url": sim.base_url,
            "timeout": "5s",
            "rate_limit": {"requests": 1000, "per": scaled(300)},  # the default budget
        },
        "schedule": schedule,
        "publication": {
            "certs_url": sim.sim.certs_url_template,
            # Each tree's default: a week after this change, a day before it.
            "team_domain_refresh": scaled(7 * DAY if after else DAY),
        },
        "http": {"listen": f"127.0.0.1:{_free_port()}"},
        "logging": {"format": "json", "level": os.environ.get("BENCH_LOG_LEVEL", "warning")},
        "accounts": accounts,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def run(tree: Path | None, *, accounts: int, days: float, day_seconds: float, work: Path) -> dict[str, Any]:
    speed = DAY / day_seconds
    sim = Simulator(tokens={TOKEN: "write"}, day_seconds=day_seconds, seed=20)
    first_due: dict[str, float] = {}
    for i in range(accounts):
        # Due in 6 to 36 days: none due (nor allowed) during the start, whose fixed local costs (a
        # process start, the publication baseline's 2 s wait) are a simulated day or more here.
        due = 6 + INTERVAL_DAYS * i / accounts
        first_due[sim.add_account(interval_days=INTERVAL_DAYS, days_until_next_rotation=due)] = due
    windowed = set(sim.account_ids[::4])
    env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    env[TOKEN_ENV] = TOKEN
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}{os.pathsep}{env.get('PYTHONPATH', '')}"
    config = work / ("before.yaml" if tree else "after.yaml")
    with SimulatorThread(sim) as running_sim:
        _config(config, running_sim, speed, after=tree is None, windowed=windowed)
        start = sim.now()
        log = (work / (config.stem + ".log")).open("w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rotator", "run", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tree or Path(__file__).parents[1],  # `python -m` puts it first on the path
        )
        try:
            while sim.now() - start < timedelta(days=days):
                if daemon.poll() is not None:
                    log.flush()
                    said = Path(log.name).read_text(encoding="utf-8")[-2000:]
                    raise RuntimeError(f"rotator exited with {daemon.returncode}:\n{said}")
                time.sleep(0.2)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            log.close()
        requests = sim.requests()
        elapsed_days = (sim.now() - start) / timedelta(days=1)
    by_op = Counter(r.op for r in requests)
    api = sum(by_op[op] for op in API_OPS)
    rotations = {a: sim.rotations(a) for a in sim.account_ids}
    own = sum(1 for rs in rotations.values() for r in rs if r.source == "auto")
    by_rotator = sum(1 for rs in rotations.values() for r in rs if r.source == "api")
    lateness_hours: list[float] = []
    late: list[dict[str, Any]] = []
    for account_id, rs in rotations.items():
        if account_id in windowed:
            continue
        previous_due = start + timedelta(days=first_due[account_id])  # Cloudflare's own deadline
        previous_rotation = previous_due - timedelta(days=INTERVAL_DAYS)
        for r in rs:
            allowed = max(
                previous_due - timedelta(days=THRESHOLD_DAYS),
                previous_rotation + timedelta(days=MIN_GAP_DAYS),
                start,
            )
            if r.source == "api":
                lateness_hours.append(max(0.0, (r.at - allowed) / timedelta(hours=1)))
                if lateness_hours[-1] > 1 + 5 / 60:
                    late.append({"account": sim.account_ids.index(account_id), "at": r.at.isoformat()})
            previous_rotation, previous_due = r.at, r.at + timedelta(days=INTERVAL_DAYS)
    return {
        "tree": str(tree) if tree else "this tree",
        "accounts": accounts,
        "simulated_days": round(elapsed_days, 2),
        "api_requests": api,
        "by_op": {op: by_op[op] for op in (*API_OPS, "certs")},
        "requests_per_account_per_day": round(api / accounts / elapsed_days, 3),
        "budget_share": round(api / elapsed_days / (1200 * 288), 6),  # of 1,200 per 5 minutes
        "rotations_by_rotator": by_rotator,
        "rotations_by_cloudflare_on_its_own": own,
        "cloudflare_on_its_own": [
            {"account": sim.account_ids.index(a), "windowed": a in windowed, "at": r.at.isoformat()}
            for a, rs in rotations.items()
            for r in rs
            if r.source == "auto"
        ],
        "late_hours_max": round(max(lateness_hours, default=0.0), 2),
        "late_beyond_check_interval": len(late),
        "late": late,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--day-seconds", type=float, default=4.0, help="one simulated day, in real seconds")
    parser.add_argument("--before", type=Path, default=None, help="a tree to compare with (PYTHONPATH)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "BUDGET.json")
    args = parser.parse_args(argv)
    results = []
    keep = os.environ.get("BENCH_WORK")  # keep the configs and the daemons' logs there
    with tempfile.TemporaryDirectory(prefix="rotator-budget-") as tmp:
        tmp = keep or tmp
        for tree in [None] + ([args.before] if args.before else []):
            print(f"running {tree or 'this tree'} for {args.days:g} simulated days...", file=sys.stderr)
            results.append(
                run(
                    tree, accounts=args.accounts, days=args.days, day_seconds=args.day_seconds, work=Path(tmp)
                )
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    keys = list(results[0])
    width = max(len(k) for k in keys)
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{json.dumps(r[key]):<40}" for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
