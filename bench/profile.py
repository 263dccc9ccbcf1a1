"""Profile rotator's pass with pyinstrument: ``.venv/bin/python bench/profile.py [--accounts N]``.

Starts the simulator (its own process, 20 ms added latency), runs ``Daemon.run(once=True)`` over N
accounts under pyinstrument in this process, and prints the call tree (``--html FILE`` for the
interactive view). What it showed, and what was done about it, is in bench/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from pyinstrument import Profiler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/ is not a package


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--level", default="warning", help="logging.level of the pass")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--html", type=Path, help="write pyinstrument's HTML view here too")
    parser.add_argument("--show-all", action="store_true", help="show library frames too")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval (s)")
    args = parser.parse_args()
    os.environ[bench.TOKEN_ENV] = bench.TOKEN

    from rotator.config.credentials import Credential, load_credentials
    from rotator.config.model import load_config
    from rotator.daemon import Daemon
    from rotator.logs import configure_logging

    with tempfile.TemporaryDirectory() as tmp, bench.simulator(args.accounts, args.latency) as sim:
        path = bench.write_config(Path(tmp) / "profile.yaml", sim, args.accounts, level=args.level)
        profiler = Profiler(interval=args.interval, async_mode="disabled")
        profiler.start()
        config = load_config(path)
        configure_logging(config.settings.logging.level, "json", open(os.devnull, "w"))  # noqa: SIM115
        loaded = load_credentials(config.accounts)
        credentials = {k: v for k, v in loaded.items() if isinstance(v, Credential)}
        code = asyncio.run(Daemon(config, credentials).run(once=True))
        profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=args.show_all))
    if args.html:
        args.html.write_text(profiler.output_html())
    return code


if __name__ == "__main__":
    sys.exit(main())
