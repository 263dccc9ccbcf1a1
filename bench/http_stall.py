"""Can page readers stall the daemon? /healthz latency under 20 concurrent readers of / and /status.

``.venv/bin/python bench/http_stall.py [--before /work/base]`` writes bench/HTTP_STALL.md and
bench/HTTP_STALL.json: for 5,000 and 10,000 accounts, the daemon (after its first pass) is read by
20 clients at once, half asking for the status page and half for /status, each asking again as soon
as its answer is whole (in a process of their own); meanwhile /healthz is asked every 50 ms for
``--seconds`` and its latency recorded (median, p99, max), and how many pages were served.
``--before TREE`` runs the same with the rotator package of that tree (PYTHONPATH) in the same
run, side by side. Idle: the same /healthz figures with no reader.

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HERE, _rotator_run, _wait_ready, free_port, machine, simulator, write_config

READERS = 20
SIZES = (5_000, 10_000)


def _readers(url: str, stop_at: float, served: Any) -> None:
    """In a process of its own: READERS clients reading / and /status back to back."""
    import httpx

    async def read(path: str) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while time.time() < stop_at:
                try:
                    answer = await client.get(url + path)
                    await answer.aread()
                    with served.get_lock():
                        served.value += 1
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)

    async def main() -> None:
        await asyncio.gather(*(read("/" if i % 2 else "/status") for i in range(READERS)))

    asyncio.run(main())


def _healthz(url: str, seconds: float) -> list[float]:
    latencies = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=60) as answer:  # noqa: S310 - loopback
                answer.read()
        except OSError:
            latencies.append(math.inf)  # no answer: counted as the slowest
        else:
            latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    return latencies


def _figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "failed": sum(1 for x in ordered if x == math.inf),
    }


def measure(accounts: int, tree: Path | None, seconds: float, work: Path) -> dict[str, Any]:
    with simulator(accounts, latency=0.02) as sim:
        port = free_port()
        config = write_config(work / f"config-{accounts}.yaml", sim, accounts, listen=f"127.0.0.1:{port}")
        with (work / f"rotator-{accounts}-{'before' if tree else 'after'}.log").open("w") as log:
            daemon = _rotator_run(config, log, tree)
            try:
                _wait_ready(port, time.perf_counter(), daemon)
                url = f"http://127.0.0.1:{port}"
                idle = _figures(_healthz(url, min(5.0, seconds)))
                served = multiprocessing.Value("i", 0)
                stop_at = time.time() + seconds + 2
                readers = multiprocessing.Process(target=_readers, args=(url, stop_at, served))
                readers.start()
                time.sleep(2)  # every reader connected and asking
                loaded = _figures(_healthz(url, seconds))
                readers.join(timeout=120)
                return {"idle": idle, "loaded": loaded, "pages_served": served.value}
            finally:
                daemon.terminate()
                daemon.wait(30)


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# /healthz under 20 concurrent page readers",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/http_stall.py', *sys.argv[1:]])}` on {machine()['cpu']}"
        f" ({machine()['nproc']} cores, shared), {args.seconds:g} s of /healthz every 50 ms per row;"
        " 10 readers of `/`, 10 of `/status`, each asking again as soon as its answer is whole.",
        "",
        "| accounts | rotator | /healthz idle median / p99 | under readers median / p99 / max"
        " | pages served |",
        "|---:|---|---:|---:|---:|",
    ]
    for key, row in results.items():
        accounts, which = key.split(":")
        idle, loaded = row["idle"], row["loaded"]
        lines.append(
            f"| {int(accounts):,} | {which} | {idle['median_ms']} / {idle['p99_ms']} ms"
            f" | {loaded['median_ms']} / {loaded['p99_ms']} / {loaded['max_ms']} ms"
            f" ({loaded['failed']} failed) | {row['pages_served']} |"
        )
    lines += [
        "",
        "before: the page and /status made on the event loop for every reader; after: made in a thread"
        " at most once a second and shared (rotator/web/snapshot.py), sent in 64 KiB chunks.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a tree whose rotator package is the 'before'")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for accounts in args.sizes:
            for which, tree in (("before", args.before), ("after", None)):
                if which == "before" and tree is None:
                    continue
                print(f"http_stall: {accounts} accounts, {which}", file=sys.stderr, flush=True)
                results[f"{accounts}:{which}"] = measure(accounts, tree, args.seconds, Path(tmp))
    (HERE / "HTTP_STALL.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (HERE / "HTTP_STALL.md").write_text(report(results, args), encoding="utf-8")
    print(report(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
