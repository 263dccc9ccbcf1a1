"""CPU per check of rotator's pass, this tree and another commit side by side in one run.

    .venv/bin/python bench/side_by_side.py REF [--accounts 2000] [--rounds 8]

The pass of ``bench/run.py``'s part 1 (``run_loop``: a fresh ``rotator run --once`` over N accounts
against the simulator, 20 ms latency, no account due), the two trees interleaved, the order swapped
every round (the simulator's log grows, and the machine's load changes). Prints each tree's CPU per
check (minimum, median, every round) and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import run  # bench/run.py, beside this file


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref", help="the commit to compare with (git archive REF rotator)")
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp,
        run.simulator(args.accounts, 0.02) as sim,
    ):
        work = Path(tmp)
        trees = [("before", run._checkout(args.ref, work / "before")), ("this", None)]
        cpu: dict[str, list[float]] = {name: [] for name, _ in trees}
        for round_ in range(args.rounds):
            for name, tree in trees if round_ % 2 == 0 else trees[::-1]:
                result = run.run_loop("rotator", sim, work, args.accounts, "warning", tree=tree)
                cpu[name].append(result["cpu_seconds"] / args.accounts * 1e6)
    print(f"rotator as of {run._describe(args.ref)} (before) and this tree, {args.accounts} accounts")
    for name, values in cpu.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        median = statistics.median(values)
        print(f"{name}: min {min(values):.1f} µs, median {median:.1f} µs CPU per check ({rounds})")
    minima = min(cpu["this"]) / min(cpu["before"])
    medians = statistics.median(cpu["this"]) / statistics.median(cpu["before"])
    print(f"this / before: {minima:.3f} (minima), {medians:.3f} (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
