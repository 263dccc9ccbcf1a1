"""rotator's benchmark: ``make bench`` (``.venv/bin/python bench/run.py``), writes bench/RESULTS.md.

Everything runs on this machine against rotator's simulator, started as a process of its own on
loopback with an added latency per request (20 ms by default), so the client under test and the
fake Cloudflare never share a core's event loop. Five parts, each figure the best of ``--rounds``
interleaved runs (one round of every contender, then the next round), every run in a fresh process:

1. Throughput: one pass over 2,000 and 10,000 accounts with the budget lifted and 64 in flight,
   against the ideal bound ``accounts x latency / concurrency``, a bare httpx loop, a bare aiohttp
   loop and Cloudflare's official SDK at the same concurrency (``bench/loops.py`` runs each one).
2. Rate-limit adherence: a budget of 300 requests per 10 s, a simulator that answers 429 past it,
   2,000 accounts: the daemon runs for a bounded time; the rate is counted over whole windows.
3. Footprint: the idle daemon with 10,000 accounts (RSS, CPU between checks), time from start to a
   200 from /readyz, CPU per check, and what a scrape of /metrics costs it (one run).
4. Cost growth: pass time and peak memory at 100, 1,000, 10,000 and 50,000 accounts.
5. Start-up: ``rotator --version`` and ``rotator validate`` on a small file, start to exit
   (``--start-up-runs`` runs each, median and best), and ``rotator run`` with 10,000 accounts from
   start to /readyz (``--ready-runs`` starts).

``--before REF`` also runs parts 3 and 5 with the rotator package as of that git commit (extracted
from git into a temporary directory, first on PYTHONPATH), in the same run, and adds a section
with both side by side: ``make bench BENCH_ARGS='--before main'``.

A benchmark, not a test: it asserts nothing and is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "bench-token"  # noqa: S105 - the simulator's made-up token
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - a variable name
CONCURRENCY = 64
COMMAND = "make bench  # = .venv/bin/python bench/run.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- processes


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    base_url: str
    admin_url: str
    account_ids: list[str]

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin_url + path, timeout=60) as response:  # noqa: S310 - loopback
            return json.load(response)


@contextlib.contextmanager
def simulator(accounts: int, latency: float, rate_limit: str | None = None) -> Iterator[Simulator]:
    command = [
        sys.executable,
        "-m",
        "cloudflare_sim",
        "--listen",
        "127.0.0.1:0",
        "--accounts",
        str(accounts),
        "--token",
        TOKEN,
        "--latency",
        str(latency),
    ]
    if rate_limit:
        command += ["--rate-limit", rate_limit]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        yield Simulator(
            process, line["base_url"], line["admin_url"], [a["account_id"] for a in line["accounts"]]
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _environment(tree: Path | None = None) -> dict[str, str]:
    """The environment of a process under test; ``tree``: run the rotator of that checkout."""
    env = {**os.environ, TOKEN_ENV: TOKEN, "PYTHONDONTWRITEBYTECODE": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- configs


def write_config(
    path: Path,
    sim: Simulator,
    accounts: int,
    *,
    level: str = "warning",
    rate_limit: tuple[int, str] = (10**9, "5m"),
    listen: str = "127.0.0.1:0",
) -> Path:
    config = {
        "cloudflare": {
            "base_url": sim.base_url,
            "max_concurrency": CONCURRENCY,
            "rate_limit": {"requests": rate_limit[0], "per": rate_limit[1]},
        },
        "schedule": {"check_interval": "1h", "jitter": "5m"},
        # No simulated account falls due (the nearest is 2 days out): one GET per account, no POST.
        "rotation": {"threshold_days": 1},
        "http": {"listen": listen},
        "logging": {"level": level, "format": "json"},
        # The key check alone, as before the publication check existed: on, every check would also
        # read its account's organization and its team's certs (the simulator's team domains do
        # not resolve, and the checks would wait on them).
        "publication": {"enabled": False},
        "accounts": [
            {"name": f"account-{i}", "account_id": a} for i, a in enumerate(sim.account_ids[:accounts])
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- one measured run


def run_loop(
    kind: str,
    sim: Simulator,
    work: Path,
    accounts: int,
    level: str = "warning",
    transport: str = "rotator",
    tree: Path | None = None,
) -> dict[str, Any]:
    """One pass in a fresh process (bench/loops.py); adds the simulator's CPU share over it."""
    if kind == "rotator":
        config = write_config(work / f"pass-{accounts}-{level}.yaml", sim, accounts, level=level)
        args = ["rotator", "--token", TOKEN, "--config", str(config), "--transport", transport]
    else:
        ids = work / f"ids-{accounts}.json"
        ids.write_text(json.dumps(sim.account_ids[:accounts]))
        args = [kind, "--token", TOKEN, "--base-url", sim.base_url, "--accounts", str(ids)]
    log = work / f"{kind}-{level}.log"
    sim_cpu = sim.cpu_seconds()
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, str(HERE / "loops.py"), *args, "--concurrency", str(CONCURRENCY)],
            capture_output=False,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_environment(tree),
            cwd=ROOT,
            timeout=600,
            check=True,
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["sim_cpu_share"] = (sim.cpu_seconds() - sim_cpu) / result["seconds"]
    if result["ok"] != accounts:
        raise RuntimeError(f"{kind} at {accounts} accounts: {result['ok']} of {accounts} GETs succeeded")
    return result


def run_cli_once(sim: Simulator, work: Path, accounts: int) -> dict[str, Any]:
    """``rotator run --once`` as a user types it: the whole process, start to exit."""
    config = write_config(work / f"cli-{accounts}.yaml", sim, accounts)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "rotator", "run", "--once", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_environment(),
        cwd=ROOT,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"rotator run --once exited {process.returncode}")
    # (ru_maxrss is left out: after fork and exec it carries this process's own peak.)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": usage.ru_utime + usage.ru_stime}


def best(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def _best_each(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each measure's lowest value over the runs (the daemon's footprint: every measure is a cost)."""
    return {key: min(run[key] for run in runs) for key in runs[0]}


# --------------------------------------------------------------------------- the four parts


def throughput(
    sim: Simulator, work: Path, sizes: Sequence[int], rounds: int, latency: float
) -> dict[str, Any]:
    contenders = [
        ("rotator", "warning"),
        ("rotator", "info"),
        ("httpx", "-"),
        ("aiohttp", "-"),
        ("sdk", "-"),
    ]
    out: dict[str, Any] = {}
    for size in sizes:
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(rounds):
            for kind, level in contenders:
                key = kind if level == "-" else f"{kind}:{level}"
                result = run_loop(kind, sim, work, size, level)
                runs.setdefault(key, []).append(result)
                _progress(f"throughput {size} round {round_ + 1}: {key} {result['seconds']:.2f}s")
            result = run_cli_once(sim, work, size)
            runs.setdefault("cli", []).append(result)
            _progress(f"throughput {size} round {round_ + 1}: rotator run --once {result['seconds']:.2f}s")
        out[str(size)] = {
            "ideal": size * latency / CONCURRENCY,
            **{key: best(values) for key, values in runs.items()},
        }
    return out


TRANSPORTS = ("rotator", "httpx-aiohttp", "httpcore-sharded", "httpcore")


def passes(
    sim: Simulator, work: Path, size: int, rounds: int, trees: dict[str, Path | None]
) -> dict[str, Any]:
    """rotator's pass (``logging.level: warning``) with each tree's rotator, interleaved: the CPU per
    check side by side (section 6)."""
    runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
    for round_ in range(rounds):
        for tree, path in trees.items():
            result = run_loop("rotator", sim, work, size, "warning", tree=path)
            runs[tree].append(result)
            _progress(f"pass side by side {size} round {round_ + 1}: {tree} {result['seconds']:.2f}s")
    return {"accounts": size, **{tree: best(values) for tree, values in runs.items()}}


def transports(sim: Simulator, work: Path, size: int, rounds: int, latency: float) -> dict[str, Any]:
    """rotator's own pass over each transport under its httpx client: how the transport was chosen."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(rounds):
        for name in TRANSPORTS:
            result = run_loop("rotator", sim, work, size, "warning", transport=name)
            runs.setdefault(name, []).append(result)
            _progress(f"transports {size} round {round_ + 1}: {name} {result['seconds']:.2f}s")
    return {"accounts": size, "ideal": size * latency / CONCURRENCY, **{k: best(v) for k, v in runs.items()}}


def rate_limit_adherence(work: Path, latency: float, seconds: float) -> dict[str, Any]:
    budget, window = 300, 10.0
    with simulator(2000, latency, f"{budget}/{window:g}") as sim:
        config = write_config(
            work / "ratelimit.yaml",
            sim,
            2000,
            level="info",
            rate_limit=(budget, f"{window:g}s"),
            listen=f"127.0.0.1:{free_port()}",
        )
        with (work / "ratelimit.log").open("w") as log:
            daemon = _rotator_run(config, log)
            try:
                time.sleep(seconds)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
        requests = sim.get("/requests?op=get")
        state = sim.get("/state")
    # The rate achieved is what the simulator accepted (answered 200); a 429 is counted apart.
    times = sorted(_parse_time(r["at"]) for r in requests if r["outcome"] == 200)
    first = min(_parse_time(r["at"]) for r in requests)
    whole = math.floor((times[-1] - first) / window) * window  # whole windows only
    counted = sum(1 for t in times if t < first + whole)
    # The server's own view: the most requests it saw in any window of `window` seconds.
    most, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        most = max(most, i - j + 1)
    return {
        "budget": budget,
        "window": window,
        "ran_seconds": seconds,
        "measured_seconds": whole,
        "requests": counted,
        "rate": counted / whole,
        "budget_rate": budget / window,
        "ratio": counted / whole / (budget / window),
        "max_in_window": most,
        "answered_429": state["requests"]["rate_limited"],
        "outcomes": sorted({str(r["outcome"]) for r in requests}),
    }


def _rotator_run(config: Path, log: IO[str], tree: Path | None = None) -> subprocess.Popen[bytes]:
    """The daemon as users run it, its output (logs) into ``log``; ``tree``: that checkout's rotator
    (``python -m`` puts the working directory first on the path, ahead of PYTHONPATH)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rotator", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_environment(tree),
        cwd=tree or ROOT,
    )


def footprint(
    sim: Simulator, work: Path, accounts: int, idle_seconds: float, tree: Path | None = None
) -> dict[str, Any]:
    port = free_port()
    config = write_config(work / "footprint.yaml", sim, accounts, level="info", listen=f"127.0.0.1:{port}")
    with (work / "footprint.log").open("w") as log:
        started = time.perf_counter()
        daemon = _rotator_run(config, log, tree)
        try:
            ready = _wait_ready(port, started, daemon)
            served = _wait_pass(work / "footprint.log", accounts, daemon)
            pass_done = time.perf_counter() - started
            time.sleep(2.0)  # let the last responses and the garbage settle
            cpu, wall = _cpu_seconds(daemon.pid), time.perf_counter()
            time.sleep(idle_seconds)
            idle_cpu = (_cpu_seconds(daemon.pid) - cpu) / (time.perf_counter() - wall)
            rss = _rss_mb(daemon.pid)
            # What a Prometheus scrape costs the daemon, measured last (it allocates the page): the
            # first after the pass, then one more (nothing changed in between: the daemon is idle).
            first_cpu, scrape_bytes = _scrape(daemon, port)
            again_cpu, _ = _scrape(daemon, port)
            scraped_rss = _rss_mb(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    return {
        "accounts": accounts,
        "ready_seconds": ready,
        "first_pass_seconds": pass_done,
        "checks": served,
        "idle_rss_mb": rss,
        "idle_cpu_share": idle_cpu,
        "idle_seconds": idle_seconds,
        "scrape_cpu_seconds": first_cpu,
        "scrape_again_cpu_seconds": again_cpu,
        "scraped_rss_mb": scraped_rss,
        "scrape_mb": scrape_bytes / 1e6,
    }


def _scrape(daemon: subprocess.Popen[bytes], port: int) -> tuple[float, int]:
    """One GET /metrics: the daemon's CPU for it (in clock ticks of 10 ms), and the page's size."""
    cpu = _cpu_seconds(daemon.pid)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        size = len(response.read())
    time.sleep(0.3)  # the last writes, and the clock tick
    return _cpu_seconds(daemon.pid) - cpu, size


# Issue 13's second memory goal: the idle daemon with this many accounts.
SMALL_FOOTPRINT = 100
# What `rotator --version` and `rotator validate` are timed on: one account.
SMALL_CONFIG = {"accounts": [{"name": "production", "account_id": "0" * 32}]}


def start_up(work: Path, runs: int, trees: dict[str, Path | None]) -> dict[str, Any]:
    """Quick commands, as users type them (the console script), each run ``runs`` times per tree,
    the trees interleaved run by run; ``python -c pass`` is the interpreter's own share."""
    small = work / "small.yaml"
    small.write_text(yaml.safe_dump(SMALL_CONFIG), encoding="utf-8")
    script = str(Path(sys.executable).parent / "rotator")
    commands = {
        "version": [script, "--version"],
        "validate": [script, "validate", "-c", str(small)],
        "python": [sys.executable, "-c", "pass"],
    }
    times: dict[str, dict[str, list[tuple[float, float]]]] = {t: {c: [] for c in commands} for t in trees}
    for _ in range(runs):
        for tree, path in trees.items():
            for name, argv in commands.items():
                times[tree][name].append(_timed(argv, _environment(path)))
    out: dict[str, Any] = {"runs": runs}
    for tree, by_command in times.items():
        out[tree] = {
            name: {
                "median_seconds": statistics.median(w for w, _ in samples),
                "best_seconds": min(w for w, _ in samples),
                "median_cpu_seconds": statistics.median(c for _, c in samples),
            }
            for name, samples in by_command.items()
        }
    return out


def ready_times(
    sim: Simulator, work: Path, accounts: int, runs: int, trees: dict[str, Path | None]
) -> dict[str, Any]:
    """``rotator run`` from start to /readyz answering 200, ``runs`` starts per tree, interleaved;
    stopped once ready. Many short runs: one start is at the mercy of the machine's other work."""
    times: dict[str, list[float]] = {tree: [] for tree in trees}
    for _ in range(runs):
        for tree, path in trees.items():
            port = free_port()
            config = write_config(
                work / "ready.yaml", sim, accounts, level="info", listen=f"127.0.0.1:{port}"
            )
            with (work / "ready.log").open("w") as log:
                started = time.perf_counter()
                daemon = _rotator_run(config, log, path)
                try:
                    times[tree].append(_wait_ready(port, started, daemon))
                finally:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(30)
    return {
        "accounts": accounts,
        "runs": runs,
        **{
            tree: {"median_seconds": statistics.median(values), "best_seconds": min(values), "all": values}
            for tree, values in times.items()
        },
    }


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv``, start to exit."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv} exited {process.returncode}")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def _wait_ready(port: int, started: float, daemon: subprocess.Popen[bytes]) -> float:
    while daemon.poll() is None:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5),
        ):
            return time.perf_counter() - started
        time.sleep(0.01)
    raise RuntimeError(f"the daemon exited {daemon.returncode} before /readyz answered 200")


def _wait_pass(log: Path, accounts: int, daemon: subprocess.Popen[bytes]) -> int:
    """Until every account's first check is logged (scraping /metrics to know would cost the
    daemon a second of CPU each time with 10,000 accounts)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and daemon.poll() is None:
        done = log.read_text().count('"event": "account_checked"')
        if done >= accounts:
            return done
        time.sleep(0.5)
    raise RuntimeError("the daemon's first pass did not finish")


def growth(
    sim: Simulator,
    work: Path,
    sizes: Sequence[int],
    rounds: int,
    known: dict[str, Any],
    *,
    large: int,
    large_rounds: int,
) -> dict[str, Any]:
    """The pass at each size; above ``large`` accounts ``large_rounds`` runs (50,000 take 70 s)."""
    out: dict[str, Any] = {}
    for size in sizes:
        if str(size) in known:
            out[str(size)] = known[str(size)]["rotator:warning"]
            continue
        runs = []
        for round_ in range(rounds if size <= large else large_rounds):
            runs.append(run_loop("rotator", sim, work, size, "warning"))
            _progress(f"growth {size} round {round_ + 1}: {runs[-1]['seconds']:.2f}s")
        out[str(size)] = best(runs)
    return out


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the report


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    versions = {}
    for package in ("httpx", "httpcore", "aiohttp", "httpx-aiohttp", "cloudflare", "sniffio"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = results["machine"]
    lines = [
        "# rotator benchmark results",
        "",
        f"Command: `{results['command']}` ({results['duration_seconds']:.0f} s for this run, "
        f"{results['finished']}).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, {m['os']}.  ",
        f"Packages: {m['packages']}.",
        "",
        *_load_note(results),
        *_goals(results),
        f"The simulator (`python -m cloudflare_sim`) runs in its own process on loopback and adds "
        f"{args.latency * 1000:g} ms to every request. Every figure is the best of {args.rounds} "
        "interleaved runs, each run a fresh process. rotator's pass is `Daemon.run(once=True)` as "
        "`rotator run --once` runs it, timed after the config is loaded; the `rotator run --once` row "
        "is the whole command, start to exit. The bare loops are timed from their first request. "
        "sniffio is installed because Cloudflare's SDK needs it; without it (rotator's own install) "
        "httpcore tries to import it on every request, and the bare httpx loop is slower still.",
        "",
        "## 1. Throughput: one pass, 64 in flight, rate limit lifted",
        "",
    ]
    names = {
        "rotator:warning": "rotator pass (`logging.level: warning`)",
        "rotator:info": "rotator pass (`logging.level: info`, a JSON line per check)",
        "cli": "`rotator run --once` (whole process: start-up, config, pass)",
        "httpx": "bare httpx loop (`httpx.AsyncClient()` defaults)",
        "aiohttp": "bare aiohttp loop (`aiohttp.ClientSession()`)",
        "sdk": "Cloudflare SDK (`AsyncCloudflare`, `zero_trust.access.keys.get`)",
    }
    for size, row in results["throughput"].items():
        ideal, rot = row["ideal"], row["rotator:warning"]["seconds"]
        lines += [
            f"### {int(size):,} accounts (ideal bound {int(size):,} x {args.latency:g} s / {CONCURRENCY} "
            f"= {ideal:.3f} s)",
            "",
            "| contender | time (s) | x ideal | x rotator's pass | client CPU (s) | CPU per GET (µs) "
            "| simulator CPU share |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, name in names.items():
            r = row[key]
            share = f"{r['sim_cpu_share']:.0%}" if "sim_cpu_share" in r else "-"
            faster = "-" if key.startswith("rotator") or key == "cli" else f"{r['seconds'] / rot:.2f}x"
            lines.append(
                f"| {name} | {r['seconds']:.2f} | {r['seconds'] / ideal:.2f} | {faster} | "
                f"{r['cpu_seconds']:.2f} | {r['cpu_seconds'] / int(size) * 1e6:.0f} | {share} |"
            )
        lines.append("")
    tr = results["transports"]
    lines += [
        f"### Which transport under rotator's httpx client ({tr['accounts']:,} accounts, ideal "
        f"{tr['ideal']:.3f} s)",
        "",
        "rotator's pass (`logging.level: warning`) with each transport given to `Daemon(transport=...)`.",
        "",
        "| transport | time (s) | x ideal | CPU per check (µs) |",
        "| --- | ---: | ---: | ---: |",
    ]
    transport_names = {
        "rotator": "`rotator.cloudflare.transport.AiohttpTransport` (the default)",
        "httpx-aiohttp": "`httpx_aiohttp.AiohttpTransport`",
        "httpcore-sharded": "httpcore, 8 pools of 8 connections, each request to the least busy",
        "httpcore": "httpcore (`httpx.AsyncHTTPTransport`), one pool of 64",
    }
    for name, label in transport_names.items():
        r = tr[name]
        lines.append(
            f"| {label} | {r['seconds']:.2f} | {r['seconds'] / tr['ideal']:.2f} | "
            f"{r['cpu_seconds'] / tr['accounts'] * 1e6:.0f} |"
        )
    lines.append("")
    rl = results["rate_limit"]
    lines += [
        f"## 2. Rate-limit adherence: budget {rl['budget']} per {rl['window']:g} s, 2,000 accounts",
        "",
        f"The simulator answers 429 past {rl['budget']} requests in any {rl['window']:g} s; the daemon "
        f"(`rotator run`, `rate_limit: {{requests: {rl['budget']}, per: {rl['window']:g}s}}`, 64 in "
        f"flight) ran {rl['ran_seconds']:g} s and was stopped; the rate is counted over the first "
        f"{rl['measured_seconds']:g} s (whole windows) from its first request, on the simulator's clock.",
        "",
        "| requests | rate (req/s) | budget (req/s) | x budget | most in any window (server's view) "
        "| 429 answers |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {rl['requests']} | {rl['rate']:.1f} | {rl['budget_rate']:.1f} | {rl['ratio']:.1%} | "
        f"{rl['max_in_window']} of {rl['budget']} | {rl['answered_429']} |",
        "",
    ]
    fp = results["footprint"]
    per_check = results["throughput"][str(fp["accounts"])]
    lines += [
        f"## 3. Footprint: the daemon (`rotator run`) with {fp['accounts']:,} accounts",
        "",
        f"Goals from issue 13. Each measure the best of {results.get('footprint_rounds', 1)} run(s).",
        "",
        "| measure | value | goal |",
        "| --- | ---: | --- |",
        f"| time from start to /readyz answering 200 | {fp['ready_seconds']:.2f} s | under 1 s |",
        f"| first pass over every account done (from start) | {fp['first_pass_seconds']:.2f} s | |",
        f"| resident memory (RSS), idle after the first pass | {fp['idle_rss_mb']:.1f} MB | under 80 MB |",
        f"| CPU while idle between checks (over {fp['idle_seconds']:g} s, no scrape) | "
        f"{fp['idle_cpu_share']:.2%} of a core | under 1% |",
        f"| the first scrape of /metrics ({fp['scrape_mb']:.1f} MB of text) | "
        f"{fp['scrape_cpu_seconds']:.2f} s of CPU | under 0.15 s, off the event loop |",
        f"| the next scrape (nothing changed) | {fp['scrape_again_cpu_seconds']:.2f} s of CPU | |",
        f"| resident memory after the two scrapes | {fp['scraped_rss_mb']:.1f} MB | |",
        f"| CPU per check, `logging.level: warning` | "
        f"{per_check['rotator:warning']['cpu_seconds'] / fp['accounts'] * 1e6:.0f} µs | |",
        f"| CPU per check, `logging.level: info` | "
        f"{per_check['rotator:info']['cpu_seconds'] / fp['accounts'] * 1e6:.0f} µs | |",
        "",
        "CPU is read from /proc in clock ticks of 10 ms.",
        "",
        "## 4. Cost growth: rotator's pass (`logging.level: warning`)",
        "",
        "| accounts | pass (s) | ideal (s) | x ideal | pass per account (ms) | CPU per check (µs) "
        "| peak RSS (MB) | config load (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, r in results["growth"].items():
        n = int(size)
        ideal = math.ceil(n / CONCURRENCY) * args.latency
        lines.append(
            f"| {n:,} | {r['seconds']:.3f} | {ideal:.3f} | {r['seconds'] / ideal:.2f} | "
            f"{r['seconds'] / n * 1000:.3f} | {r['cpu_seconds'] / n * 1e6:.0f} | {r['peak_rss_mb']:.1f} | "
            f"{r['load_seconds'] - r['import_seconds']:.2f} |"
        )
    sizes = sorted(int(s) for s in results["growth"])
    growth_lines = []
    for small_n, large_n in itertools.pairwise(sizes[1:]):  # from 1,000 on: 100 is two round trips
        small, large = results["growth"][str(small_n)], results["growth"][str(large_n)]
        growth_lines.append(
            f"{small_n:,} to {large_n:,} accounts ({large_n / small_n:g}x), the pass takes "
            f"{large['seconds'] / small['seconds']:.1f}x as long, CPU per check changes "
            f"{large['cpu_seconds'] / large_n / (small['cpu_seconds'] / small_n):.2f}x, and peak RSS "
            f"grows by {(large['peak_rss_mb'] - small['peak_rss_mb']) / (large_n - small_n) * 1024:.1f} kB "
            "per account"
        )
    lines += [
        "",
        "From " + "; from ".join(growth_lines) + ". "
        f"(Ideal here is ceil(accounts / {CONCURRENCY}) x latency: at 100 accounts a pass is two round "
        f"trips. Sizes above {max(int(s) for s in results['throughput']):,}: the best of "
        f"{args.large_rounds} run(s), to keep the whole benchmark near ten minutes.)",
        "",
    ]
    lines += _start_up_report(results["start_up"], results.get("ready"))
    if "before" in results:
        lines += _side_by_side(results)
    lines += [
        "Raw figures: `bench/RESULTS.json`.",
        "",
    ]
    return "\n".join(lines)


def _goals(results: dict[str, Any]) -> list[str]:
    """Issue 13's goals, each with what this run measured and its ratio to the goal (under 1: met)."""
    rows: list[tuple[str, str, float, float]] = []  # (goal, where, measured, goal's bound)
    large = max(results.get("throughput", {"0": None}), key=int)
    if "throughput" in results:
        t = results["throughput"][large]
        n, rot, bare = int(large), t["rotator:warning"], t["aiohttp"]
        rows += [
            (
                f"CPU per check at most 2x the bare aiohttp loop's per GET ({n:,} accounts)",
                f"{rot['cpu_seconds'] / n * 1e6:.0f} µs vs {bare['cpu_seconds'] / n * 1e6:.0f} µs "
                f"= {rot['cpu_seconds'] / bare['cpu_seconds']:.2f}x",
                rot["cpu_seconds"] / bare["cpu_seconds"],
                2.0,
            ),
            (
                f"the pass over {n:,} accounts within 1.3x the ideal bound",
                f"{rot['seconds']:.2f} s vs {t['ideal']:.3f} s = {rot['seconds'] / t['ideal']:.2f}x",
                rot["seconds"] / t["ideal"],
                1.3,
            ),
            (
                f"the pass over {n:,} accounts within 1.1x the bare aiohttp loop",
                f"{rot['seconds']:.2f} s vs {bare['seconds']:.2f} s "
                f"= {rot['seconds'] / bare['seconds']:.2f}x",
                rot["seconds"] / bare["seconds"],
                1.1,
            ),
        ]
    if "footprint" in results:
        fp = results["footprint"]
        rows += [
            (
                f"idle RSS under 80 MB at {fp['accounts']:,} accounts",
                f"{fp['idle_rss_mb']:.1f} MB",
                fp["idle_rss_mb"],
                80.0,
            ),
            (
                f"a /metrics scrape at {fp['accounts']:,} accounts under 0.15 s of CPU (the first)",
                f"{fp['scrape_cpu_seconds']:.2f} s",
                fp["scrape_cpu_seconds"],
                0.15,
            ),
        ]
    if "footprint_small" in results:
        small = results["footprint_small"]
        rows.append(
            (
                f"idle RSS under 45 MB at {small['accounts']:,} accounts",
                f"{small['idle_rss_mb']:.1f} MB",
                small["idle_rss_mb"],
                45.0,
            )
        )
    if "ready" in results:
        ready = results["ready"]
        median = ready["this"]["median_seconds"]
        rows.append(
            (
                f"start to /readyz under 1 s at {ready['accounts']:,} accounts (median of {ready['runs']})",
                f"{median:.2f} s",
                median,
                1.0,
            )
        )
    if "start_up" in results:
        su = results["start_up"]["this"]
        for key, name in (
            ("version", "`rotator --version`"),
            ("validate", "`rotator validate` (small file)"),
        ):
            median = su[key]["median_seconds"] * 1000
            rows.append((f"{name} under 150 ms (median)", f"{median:.0f} ms", median, 150.0))
    if not rows:
        return []
    lines = [
        "## Goals of issue 13, as this run measured them",
        "",
        "Ratio: the measure over the goal's bound (at most 1.00 is met). Sections below give each "
        "measure's detail; section 4 shows the growth to 50,000 accounts.",
        "",
        "| goal | measured | ratio to the goal | met |",
        "| --- | --- | ---: | --- |",
    ]
    for goal, measured, value, bound in rows:
        ratio = value / bound
        lines.append(f"| {goal} | {measured} | {ratio:.2f} | {'yes' if ratio <= 1 else 'no'} |")
    return [*lines, ""]


def _load_note(results: dict[str, Any]) -> list[str]:
    """The load average at the start and end of the run: other work on the machine skews absolute
    figures (ratios within one run much less)."""
    if "load_start" not in results:
        return []
    start, end = (", ".join(f"{x:.2f}" for x in results[k]) for k in ("load_start", "load_end"))
    return [
        f"Load average (1, 5, 15 min) at the start of the run: {start}; at the end: {end} "
        f"(the machine's {results['machine']['nproc']} CPUs were shared with other work; compare "
        "ratios within this run, not absolute times with other runs).",
        "",
    ]


def _start_up_report(su: dict[str, Any], ready: dict[str, Any] | None) -> list[str]:
    this = su["this"]
    names = {
        "version": "`rotator --version`",
        "validate": "`rotator validate -c small.yaml` (one account)",
        "python": "`python -c pass` (the interpreter alone)",
    }
    lines = [
        "## 5. Start-up: quick commands, start to exit",
        "",
        f"The console script in the bench's virtualenv, {su['runs']} runs of each (interleaved).",
        "",
        "| command | median (ms) | best (ms) | CPU, median (ms) | goal |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for key, name in names.items():
        r = this[key]
        goal = "under 150 ms" if key != "python" else ""
        lines.append(
            f"| {name} | {r['median_seconds'] * 1000:.0f} | {r['best_seconds'] * 1000:.0f} | "
            f"{r['median_cpu_seconds'] * 1000:.0f} | {goal} |"
        )
    if ready is not None:
        r = ready["this"]
        lines.append(
            f"| `rotator run` with {ready['accounts']:,} accounts to /readyz answering 200 "
            f"({ready['runs']} starts) | {r['median_seconds'] * 1000:.0f} | {r['best_seconds'] * 1000:.0f} "
            "| - | under 1 s |"
        )
    return [*lines, ""]


def _side_by_side(results: dict[str, Any]) -> list[str]:
    """Section 6: the same measures with rotator as of an earlier commit, in the same run."""
    rows: list[tuple[str, float, float, str]] = []
    if "footprints" in results:
        before, this = results["footprints"]["before"], results["footprints"]["this"]
        for key, name, unit in (
            ("scrape_cpu_seconds", "CPU of the first scrape of /metrics", "s"),
            ("scrape_again_cpu_seconds", "CPU of the next scrape", "s"),
            ("ready_seconds", "start to /readyz answering 200", "s"),
            ("first_pass_seconds", "first pass over every account done (from start)", "s"),
            ("idle_rss_mb", "resident memory, idle after the first pass", "MB"),
            ("scraped_rss_mb", "resident memory after the two scrapes", "MB"),
        ):
            rows.append((name, before[key], this[key], unit))
    if "passes" in results:
        passes = results["passes"]
        n = passes["accounts"]
        for key, name, unit, scale in (
            ("seconds", f"the pass over {n:,} accounts", "s", 1.0),
            ("cpu_seconds", f"CPU per check, that pass ({n:,} accounts)", "µs", 1e6 / n),
            ("peak_rss_mb", f"peak RSS, that pass ({n:,} accounts)", "MB", 1.0),
        ):
            rows.append((name, passes["before"][key] * scale, passes["this"][key] * scale, unit))
    if "start_up" in results:
        before, this = results["start_up"]["before"], results["start_up"]["this"]
        for key, name in (
            ("version", "`rotator --version`, median"),
            ("validate", "`rotator validate`, median"),
        ):
            rows.append(
                (name, before[key]["median_seconds"] * 1000, this[key]["median_seconds"] * 1000, "ms")
            )
    if "ready" in results:
        ready = results["ready"]
        medians = (ready["before"]["median_seconds"], ready["this"]["median_seconds"])
        rows.append((f"start to /readyz, median of {ready['runs']} starts", *medians, "s"))
    lines = [
        "## 6. Side by side with an earlier commit",
        "",
        f"The same measures in the same run, rotator as of {results['before']} (`--before`) and as of "
        f"this tree: {results['footprint_rounds']} daemon run(s) each, interleaved (section 3's way, each "
        "measure's best), the quick commands interleaved (section 5's).",
        "",
        "| measure | before | this tree | before / this |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, before_value, this_value, unit in rows:
        ratio = f"{before_value / this_value:.2f}x" if this_value else "-"
        lines.append(f"| {name} | {before_value:.2f} {unit} | {this_value:.2f} {unit} | {ratio} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per figure (best kept)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the simulator adds per request")
    parser.add_argument("--sizes", default="2000,10000", help="accounts for the throughput part")
    parser.add_argument("--growth", default="100,1000,10000,50000", help="accounts for the growth part")
    parser.add_argument("--rate-seconds", type=float, default=35.0, help="how long the rate-limit run lasts")
    parser.add_argument("--idle-seconds", type=float, default=15.0, help="how long idle CPU is measured")
    parser.add_argument(
        "--large-rounds", type=int, default=1, help="runs per growth size above the throughput sizes"
    )
    parser.add_argument(
        "--footprint-rounds", type=int, default=1, help="daemon runs of part 3 (each measure's best kept)"
    )
    parser.add_argument("--start-up-runs", type=int, default=15, help="runs of each quick command")
    parser.add_argument("--ready-runs", type=int, default=5, help="starts of the daemon to /readyz (part 5)")
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run parts 3 and 5 with rotator as of this git commit, side by side (section 6)",
    )
    parser.add_argument("--only", default=",".join(PARTS), help="parts to run (a quick look: --only 1)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    sizes = [int(s) for s in args.sizes.split(",")]
    growth_sizes = [int(s) for s in args.growth.split(",")]
    started = time.perf_counter()
    # The machine may be shared: its load before and after says how far to trust absolute figures.
    results: dict[str, Any] = {"machine": machine(), "command": _command(argv), "load_start": os.getloadavg()}
    with (
        tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp,
        simulator(max(sizes + growth_sizes), args.latency) as sim,
    ):
        work = Path(tmp)
        trees: dict[str, Path | None] = {"this": None}
        if args.before:
            trees = {"before": _checkout(args.before, work / "before"), **trees}
            results["before"] = _describe(args.before)
        if "1" in parts:
            results["throughput"] = throughput(sim, work, sizes, args.rounds, args.latency)
            results["transports"] = transports(sim, work, sizes[0], args.rounds, args.latency)
            if args.before:
                results["passes"] = passes(sim, work, max(sizes), args.rounds, trees)
        if "2" in parts:
            _progress(f"rate limit: running the daemon {args.rate_seconds:g} s")
            results["rate_limit"] = rate_limit_adherence(work, args.latency, args.rate_seconds)
        if "3" in parts:
            runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
            for round_ in range(args.footprint_rounds):
                for tree, path in trees.items():
                    _progress(f"footprint ({tree}, round {round_ + 1}): {max(sizes):,} accounts")
                    runs[tree].append(footprint(sim, work, max(sizes), args.idle_seconds, path))
            # Each measure's best (lowest) over the rounds.
            results["footprints"] = {tree: _best_each(rs) for tree, rs in runs.items()}
            results["footprint"] = results["footprints"]["this"]
            results["footprint_rounds"] = args.footprint_rounds
            _progress(f"footprint (this): {SMALL_FOOTPRINT} accounts")
            results["footprint_small"] = footprint(sim, work, SMALL_FOOTPRINT, args.idle_seconds)
        if "4" in parts:
            known = results.get("throughput", {})
            results["growth"] = growth(
                sim, work, growth_sizes, args.rounds, known, large=max(sizes), large_rounds=args.large_rounds
            )
        if "5" in parts:
            _progress(f"start-up: {args.start_up_runs} runs of each command")
            results["start_up"] = start_up(work, args.start_up_runs, trees)
            _progress(f"start-up: {args.ready_runs} starts of the daemon to /readyz")
            results["ready"] = ready_times(sim, work, max(sizes), args.ready_runs, trees)
    results["duration_seconds"] = time.perf_counter() - started
    results["load_end"] = os.getloadavg()
    results["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(json.dumps(results, indent=2))
    if parts == set(PARTS):
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        args.out.write_text(report(results, args))
        _progress(f"wrote {args.out}")
    return 0


PARTS = ("1", "2", "3", "4", "5")


def _command(argv: Sequence[str] | None) -> str:
    arguments = " ".join(sys.argv[1:] if argv is None else argv)
    if not arguments:
        return COMMAND
    return f"make bench BENCH_ARGS='{arguments}'  # = .venv/bin/python bench/run.py {arguments}"


def _git(*args: str) -> bytes:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("--before needs git")
    return subprocess.run([git, "-C", str(ROOT), *args], capture_output=True, check=True).stdout


def _checkout(ref: str, into: Path) -> Path:
    """The rotator package as of ``ref``, extracted into ``into`` (put first on PYTHONPATH)."""
    with tarfile.open(fileobj=io.BytesIO(_git("archive", ref, "rotator"))) as archive:
        archive.extractall(into, filter="data")
    return into


def _describe(ref: str) -> str:
    return _git("log", "-1", "--format=%h (%s)", ref).decode().strip()


if __name__ == "__main__":
    sys.exit(main())
