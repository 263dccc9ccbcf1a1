"""One measured pass, run in a process of its own: ``python bench/loops.py KIND ...``.

KIND is what does the pass over the accounts, one GET of the Access key configuration each, at most
``--concurrency`` in flight:

- ``rotator``: rotator's own pass, as ``rotator run --once`` does it (config loaded from YAML, logging
  configured, ``Daemon.run(once=True)``), timed from just before the config is read;
- ``httpx``: a bare asyncio loop over ``httpx.AsyncClient()`` with its default settings;
- ``aiohttp``: a bare asyncio loop over ``aiohttp.ClientSession()``;
- ``sdk``: Cloudflare's official SDK, ``AsyncCloudflare.zero_trust.access.keys.get``.

Prints one JSON line: the pass's wall seconds and CPU seconds, this process's peak RSS, and how many
GETs succeeded. The bare loops are timed from the first request, with their client already built, so
imports and set-up never count against them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

TOKEN_ENV = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - a variable name


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM): ru_maxrss would carry the parent's over fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _loop(
    account_ids: list[str], concurrency: int, get: Callable[[str], Awaitable[bool]]
) -> tuple[float, float, int]:
    slots = asyncio.Semaphore(concurrency)

    async def one(account_id: str) -> bool:
        async with slots:
            try:
                return await get(account_id)
            except Exception:
                return False

    wall, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(one(a) for a in account_ids))
    return time.perf_counter() - wall, time.process_time() - cpu, sum(results)


async def bare_httpx(args: argparse.Namespace, account_ids: list[str]) -> tuple[float, float, int]:
    import httpx

    headers = {"Authorization": f"Bearer {args.token}"}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers) as client:

        async def get(account_id: str) -> bool:
            response = await client.get(f"/accounts/{account_id}/access/keys")
            return response.status_code == 200 and "result" in response.json()

        return await _loop(account_ids, args.concurrency, get)


async def bare_aiohttp(args: argparse.Namespace, account_ids: list[str]) -> tuple[float, float, int]:
    import aiohttp

    headers = {"Authorization": f"Bearer {args.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def get(account_id: str) -> bool:
            async with session.get(f"{args.base_url}/accounts/{account_id}/access/keys") as response:
                return response.status == 200 and "result" in await response.json()

        return await _loop(account_ids, args.concurrency, get)


async def sdk(args: argparse.Namespace, account_ids: list[str]) -> tuple[float, float, int]:
    from cloudflare import AsyncCloudflare

    async with AsyncCloudflare(api_token=args.token, base_url=args.base_url) as client:

        async def get(account_id: str) -> bool:
            key = await client.zero_trust.access.keys.get(account_id=account_id)
            return key is not None

        return await _loop(account_ids, args.concurrency, get)


class ShardedTransport:
    """httpcore kept to small pools: requests spread over several, each to the least busy."""

    def __init__(self, connections: int, shards: int) -> None:
        import httpx

        per_shard = max(1, connections // shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._shards = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
        self._busy = [0] * shards

    async def handle_async_request(self, request: Any) -> Any:
        shard = self._busy.index(min(self._busy))
        self._busy[shard] += 1
        try:
            response = await self._shards[shard].handle_async_request(request)
            await response.aread()
            return response
        finally:
            self._busy[shard] -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def transport(name: str, connections: int) -> Any:
    """The transport under rotator's httpx client, for part 1's comparison of transports."""
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    if name == "rotator":
        return None  # rotator's own choice (rotator/cloudflare/transport.py)
    if name == "httpcore":
        return httpx.AsyncHTTPTransport(limits=limits)
    if name == "httpcore-sharded":
        return ShardedTransport(connections, shards=8)
    if name == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=limits)
    raise ValueError(f"unknown transport {name}")


def rotator_pass(args: argparse.Namespace) -> dict[str, Any]:
    """rotator's pass as ``rotator.cli._run`` does it, with the config load and the pass timed apart."""
    os.environ[TOKEN_ENV] = args.token
    wall, cpu = time.perf_counter(), time.process_time()
    import gc

    from rotator.cli import long_lived
    from rotator.config.credentials import Credential, load_credentials
    from rotator.config.model import load_config
    from rotator.daemon import Daemon
    from rotator.logs import configure_logging

    imported = time.perf_counter() - wall
    # As `rotator run` builds the daemon (--gc start-up-on: with the collector on, as before).
    with long_lived() if args.gc != "start-up-on" else contextlib.nullcontext():
        config = load_config(Path(args.config))
        configure_logging(config.settings.logging.level, config.settings.logging.format, sys.stderr)
        credentials = {
            k: v for k, v in load_credentials(config.accounts).items() if isinstance(v, Credential)
        }
        daemon = Daemon(config, credentials, transport=transport(args.transport, args.concurrency))
    load_seconds = time.perf_counter() - wall
    if args.gc.startswith("t"):
        gc.set_threshold(*(int(x) for x in args.gc[1:].split(",")))
    elif args.gc == "off":
        gc.disable()
    pass_wall, pass_cpu = time.perf_counter(), time.process_time()
    code = asyncio.run(daemon.run(once=True))
    return {
        "seconds": time.perf_counter() - pass_wall,
        "cpu_seconds": time.process_time() - pass_cpu,
        "import_seconds": imported,
        "load_seconds": load_seconds,
        "total_cpu_seconds": time.process_time() - cpu,
        "ok": len(config.accounts) if code == 0 else -1,
    }


KINDS = {"httpx": bare_httpx, "aiohttp": bare_aiohttp, "sdk": sdk}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=[*KINDS, "rotator"])
    parser.add_argument("--base-url", default="")
    parser.add_argument("--token", required=True)
    parser.add_argument("--accounts", type=Path, help="JSON list of account ids (bare loops)")
    parser.add_argument("--config", type=Path, help="rotator config (kind rotator)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--gc",
        default="on",
        help="on (as rotator runs), start-up-on (not frozen), off, or tN,N,N: thresholds (kind rotator)",
    )
    parser.add_argument("--transport", default="rotator", help="under rotator's pass (kind rotator)")
    args = parser.parse_args()
    if args.kind == "rotator":
        result = rotator_pass(args)
    else:
        account_ids = json.loads(args.accounts.read_text())
        seconds, cpu, ok = asyncio.run(KINDS[args.kind](args, account_ids))
        result = {"seconds": seconds, "cpu_seconds": cpu, "ok": ok}
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
