"""How many of rotator's modules one rotation runs code in: ``python bench/crossings.py``.

A measure of the layout, not of speed: a new maintainer following one rotation reads every module
it crosses. Two paths, each in this process against the simulator on loopback, under
``sys.setprofile``: ``rotator rotate NAME`` (the command) and ``rotator run --once`` with one due
account (the daemon's check, rotation and what follows it). A module counts when a function of its
own runs; what runs at import time does not. ``check`` counts the modules run with the checker's
``check`` on the stack (the check that rotates: read, decide, record, send, confirm); ``command``
everything the command ran (config loading and what follows the check included). Prints one JSON
line per path.

Run it against another tree with ``PYTHONPATH=/that/tree python bench/crossings.py`` (the
simulator is found as ``cloudflare_sim`` or, in older trees, ``rotator.simulator``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

try:
    from cloudflare_sim import Simulator, SimulatorThread
except ImportError:  # a tree from before the simulator had a package of its own
    from rotator.simulator import Simulator, SimulatorThread  # type: ignore[no-redef]

TOKEN = "crossings-token"  # noqa: S105 - the simulator's own


@contextlib.contextmanager
def _modules_run() -> Iterator[tuple[set[str], set[str]]]:
    """Every rotator module with a function called while the block runs, and those called with the
    checker's ``check`` on the stack."""
    root = str(Path(__import__("rotator").__file__).parent)
    seen: set[str] = set()
    in_check: set[str] = set()

    def checking(frame: FrameType | None) -> bool:
        while frame is not None:
            code = frame.f_code
            if code.co_name == "check" and code.co_filename.endswith("checker.py"):
                return True
            frame = frame.f_back
        return False

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name != "<module>":
            filename = frame.f_code.co_filename
            if filename.startswith(root):
                module = os.path.relpath(filename, root)
                seen.add(module)
                if module not in in_check and checking(frame):
                    in_check.add(module)

    sys.setprofile(profile)
    import threading

    threading.setprofile(profile)
    try:
        yield seen, in_check
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


def _config(path: Path, sim: SimulatorThread, account_id: str) -> Path:
    config = {
        "cloudflare": {"base_url": sim.base_url, "timeout": "2s"},
        "schedule": {"check_interval": "1h", "jitter": "0s"},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"format": "json"},
        "publication": {"enabled": False},
        "accounts": [{"name": "due", "account_id": account_id}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _measure(name: str, argv: Callable[[Path], list[str]]) -> dict[str, Any]:
    from rotator.cli import main

    sim = Simulator.with_accounts(1, token=TOKEN)
    with SimulatorThread(sim) as running, tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp) / "config.yaml", running, sim.account_ids[0])
        os.environ["CLOUDFLARE_API_TOKEN"] = TOKEN
        quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
        with quiet[0], quiet[1], _modules_run() as (seen, in_check):
            code = main(argv(config))
        rotations = len(sim.rotations(sim.account_ids[0]))
    return {
        "path": name,
        "exit": code,
        "rotations": rotations,
        "check": len(in_check),
        "command": len(seen),
        "in check": sorted(in_check),
    }


def main() -> None:
    for name, argv in (
        ("rotator rotate", lambda config: ["rotate", "due", "-c", str(config)]),
        ("rotator run --once", lambda config: ["run", "--once", "-c", str(config)]),
    ):
        print(json.dumps(_measure(name, argv)))


if __name__ == "__main__":
    main()
