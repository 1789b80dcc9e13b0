"""The rebuild storm: a sold-out 10,000-item sale that Redis must rebuild, under a crowd.

    python -m bench.rebuild [--servers 2] [--workers 2] [--against REV]

PostgreSQL holds the running sale's 10,000 purchases (1,000 users at the limit of 10). Redis
is told the sale is unready (as after a rollback), and a crowd of checkouts at every server
makes the workers rebuild it. Printed: how long until the first checkout was decided again,
how many rebuilds ran (every worker's `notsale_rebuilds_total`), and how many reconcile.lua
runs and how much CPU they cost Redis. `--against REV` runs the same with that git revision
served instead, for the before and after of one change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from bench.run import PORT, checkout_of, fresh_stores, running
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import connect
from notsale.keys import sale_keys

SIZE, LIMIT = 10_000, 10
CROWD = 200  # checkouts sent at once, spread over the servers
STORE_PURCHASES = """
INSERT INTO purchases (sale_id, item_id, user_id, code, purchased_at, user_seq)
SELECT $1::bigint, i, 'u' || ((i - 1) / 10), 'code' || i || 'x' || $1::text, now(), (i - 1) % 10 + 1
FROM generate_series(1, $2) AS i
"""


async def store_purchases(database_url: str, sale: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(STORE_PURCHASES, sale, SIZE)
    finally:
        await conn.close()


async def redis_cpu_s(redis_url: str) -> float:
    """The CPU Redis has spent so far (its one thread decides every sale)."""
    async with connect(redis_url) as redis:
        cpu = await redis.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def rebuilds(http: httpx.AsyncClient, urls: list[str]) -> float:
    """Rebuilds so far, every worker's (each server's /metrics sums its workers')."""
    total = 0.0
    for url in urls:
        for line in (await http.get(f"{url}/metrics")).text.splitlines():
            if line.startswith("notsale_rebuilds_total"):
                total += float(line.split()[-1])
    return total


async def storm(urls: list[str], redis_url: str, sale: int) -> dict[str, float]:
    async with connect(redis_url) as redis:
        ready = sale_keys(sale).ready
        for _ in range(600):  # the servers' own rebuild at start, over first
            if await redis.exists([ready]):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        await redis.delete([ready])
    decided: list[float] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None)) as http:
        before = await rebuilds(http, urls)
        cpu_s = await redis_cpu_s(redis_url)
        started = time.monotonic()

        async def one(n: int) -> None:
            while True:  # 503 "being prepared": retry, as a client would
                url = urls[n % len(urls)]
                params = {"user_id": f"w{n}", "id": str(n % SIZE + 1)}
                answer = await http.post(f"{url}/checkout", params=params)
                if answer.status_code != 503:
                    decided.append(time.monotonic() - started)
                    return
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one(n) for n in range(CROWD)))
        return {
            "first decided (s)": min(decided),
            "all decided (s)": max(decided),
            "rebuilds": await rebuilds(http, urls) - before,
            "Redis CPU (s)": await redis_cpu_s(redis_url) - cpu_s,
        }


def measure(servers: int, workers: int, code: Path | None) -> dict[str, float]:
    base = Settings.from_env()
    database_url, redis_url = fresh_stores(base)
    sale = current_sale(base.sale_seconds)
    asyncio.run(store_purchases(database_url, sale))
    env = {
        **os.environ,
        "NOTSALE_DATABASE_URL": database_url,
        "NOTSALE_REDIS_URL": redis_url,
        "NOTSALE_WORKERS": str(workers),
        "NOTSALE_SALE_SIZE": str(SIZE),
        "NOTSALE_USER_LIMIT": str(LIMIT),
        "NOTSALE_LOG_FORMAT": "json",
    }
    if code is not None:
        env["PYTHONPATH"] = str(code)
    urls = [f"http://127.0.0.1:{PORT + n}" for n in range(servers)]
    with contextlib.ExitStack() as stack:
        for n, url in enumerate(urls):
            serve = [sys.executable, "-m", "notsale", "serve"]
            server_env = {**env, "NOTSALE_PORT": str(PORT + n)}
            stack.enter_context(running(serve, server_env, f"{url}/health", cwd=code))
        return asyncio.run(storm(urls, redis_url, sale))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--against", help="a git revision to measure first, for comparison")
    args = parser.parse_args()
    runs: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        if args.against:
            runs[args.against] = measure(
                args.servers, args.workers, checkout_of(args.against, stack)
            )
        runs["this code"] = measure(args.servers, args.workers, None)
    print(
        f"rebuild of a sold-out {SIZE}-item sale, {args.servers} servers x {args.workers}"
        f" workers, {CROWD} checkouts at once"
    )
    for name, figures in runs.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
