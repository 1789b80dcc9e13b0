"""What a stranger can cost the service: each finding of the hardening review, replayed.

    python -m bench.attacks [--against REV]
    python -m bench.attacks --pages-beside-stampede ROUNDS
    python -m bench.attacks --against REV --stampede-pairs PAIRS

Serves this code (and, with `--against`, that git revision first, on a fresh database and
Redis DB index of its own) and replays every attack of the review once, printing what each
cost. Redis CPU is the server's own counter: run nothing else against it meanwhile.

`--pages-beside-stampede`: finding 3 under load. ROUNDS rounds of three checkout stampedes
(wrk, bench/wrk/checkout.lua), each on a fresh sale: one alone, one with 1,000 item pages a
second of varied `from` and `count` beside it (bench/wrk/pages.lua), and one with 1,000 GETs
a second of no route (404): what any request costs the stampede at that rate on this
machine. Prints what each cost the stampede.

`--against REV --stampede-pairs PAIRS`: plain checkout stampedes of this code and of REV
(served from a clone), alternating which goes first, each on fresh stores: the ratios of
their medians, for a change that must cost the hot path nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import asyncpg
import httpx

from bench.rebuild import redis_cpu_s
from bench.run import (
    PORT,
    WRK,
    WRK_LINE,
    checkout_of,
    cpu_budget,
    fresh_stores,
    running,
    worker_cpu_s,
    wrk,
)
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import connect
from notsale.keys import OUTBOX_REGISTRY
from tests.support import closed_after

REQUESTS = 1000  # of each attack
AT_ONCE = 50
SILENT_WAIT_S = 15.0  # how long a silent connection is watched at most
HOLD_S = 2  # the holds of the attacked server: finding 7 lets one expire
JUNK = {"user_id": "\x01" * 300, "id": "x" * 300, "pad": "y" * 3000}
TAB_POLLS = 200  # finding 10: polls of one tab, as a browser sends them


async def tab_polls(http: httpx.AsyncClient, sale: int, polls: int) -> tuple[int, int]:
    """Bytes received by a page's first poll (the open sales and a grid page of 60, asked
    with Accept-Encoding as a browser does), and by each later one of the unchanged sale
    (with the ETags it got, if any)."""
    asked = [("/sales", {}), (f"/sales/{sale}/items", {"count": 60})]
    gzip = {"Accept-Encoding": "gzip"}
    first = [await http.get(path, params=q, headers=gzip) for path, q in asked]
    tags = [{**gzip, "If-None-Match": r.headers.get("etag", "")} for r in first]
    again = 0
    for _ in range(polls):
        await asyncio.sleep(1.0 / polls)  # across the answers' 1 s cache, to be realistic
        for (path, q), headers in zip(asked, tags, strict=True):
            again += (await http.get(path, params=q, headers=headers)).num_bytes_downloaded
    return sum(r.num_bytes_downloaded for r in first), again // polls


async def flood(http: httpx.AsyncClient, requests: list[tuple[str, str, Any]]) -> None:
    """Send (method, path, params) requests, AT_ONCE at a time."""
    for start in range(0, len(requests), AT_ONCE):
        await asyncio.gather(
            *(http.request(m, p, params=q) for m, p, q in requests[start : start + AT_ONCE])
        )


async def attacks(
    url: str, port: int, redis_url: str, database_url: str, server: subprocess.Popen[bytes]
) -> dict[str, str]:
    sale = current_sale(Settings.from_env().sale_seconds)
    rng = random.Random(1)
    found: dict[str, str] = {}
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        connect(redis_url) as redis,
    ):
        mine = await http.get("/users/alice@example.com/purchases")
        found["1. a buyer's purchases: Cache-Control"] = mine.headers.get("cache-control", "-")

        before = await redis.scard(OUTBOX_REGISTRY)
        codes = [("POST", "/purchase", {"code": "A" * 22 + str(sale - n)}) for n in range(REQUESTS)]
        started = time.monotonic()
        await flood(http, codes)
        found["2. made-up codes of older sales: registry entries added"] = str(
            await redis.scard(OUTBOX_REGISTRY) - before
        )
        found["2. ... and their time (s)"] = f"{time.monotonic() - started:.1f}"
        scrape = time.monotonic()
        await http.get("/metrics")
        found["2. ... then one /metrics scrape (ms)"] = f"{(time.monotonic() - scrape) * 1000:.0f}"

        pages = [
            (
                "GET",
                f"/sales/{sale}/items",
                {"from": rng.randint(1, 9900), "count": rng.randint(1, 100)},
            )
            for _ in range(REQUESTS)
        ]
        cpu = await redis_cpu_s(redis_url)
        await flood(http, pages)
        per_page_us = (await redis_cpu_s(redis_url) - cpu) / REQUESTS * 1e6
        found["3. item pages, from and count varied: Redis CPU per page (µs)"] = (
            f"{per_page_us:.0f}"
        )

        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM checkout_attempts")
            size = await conn.fetchval("SELECT pg_total_relation_size('checkout_attempts')")
            await flood(http, [("POST", "/checkout", JUNK)] * REQUESTS)
            for _ in range(100):
                if await conn.fetchval("SELECT count(*) FROM checkout_attempts") >= rows + REQUESTS:
                    break
                await asyncio.sleep(0.1)
            grown = await conn.fetchval("SELECT pg_total_relation_size('checkout_attempts')")
            stored = await conn.fetchval(
                "SELECT avg(octet_length(user_id) + coalesce(octet_length(raw_query), 0))"
                " FROM checkout_attempts WHERE outcome = 'invalid_request'"
            )
        finally:
            await conn.close()
        found["4. junk checkouts: raw bytes stored per attempt"] = f"{stored:.0f}"
        found["4. ... table growth per attempt (bytes)"] = f"{(grown - size) / REQUESTS:.0f}"

        silent = await asyncio.to_thread(closed_after, port, b"", SILENT_WAIT_S)
        found["5. a silent connection: closed after (s)"] = (
            f"{silent:.1f}" if silent < SILENT_WAIT_S else f"still open at {SILENT_WAIT_S:.0f}"
        )

        listed = len((await http.get("/sales")).json()["sales"])
        found["6. a fresh deployment: sales listed"] = str(listed)
        found["6. ... GET /sales/0/items/1"] = str((await http.get("/sales/0/items/1")).status_code)
        found["6. ... GET /sales/{sale}/items/007"] = str(
            (await http.get(f"/sales/{sale}/items/007")).status_code
        )

        await http.post("/checkout", params={"user_id": "retaker", "id": "2"})
        await asyncio.sleep(HOLD_S + 0.2)
        retaken = await http.post("/checkout", params={"user_id": "retaker", "id": "2"})
        found["7. a hold let expire, retaken at once by its user: status"] = str(
            retaken.status_code
        )

        page = await http.get("/")
        policy = page.headers.get("content-security-policy", "")
        found["8. the page: inline script allowed"] = "yes" if "unsafe-inline" in policy else "no"
        found["8. ... framing forbidden"] = "yes" if "frame-ancestors 'none'" in policy else "no"
        found["8. ... nosniff"] = page.headers.get("x-content-type-options", "-")

        held = await http.post("/checkout", params={"user_id": "bodyuser", "id": "1"})
        body = await http.post("/purchase", json={"code": held.json()["code"]})
        found["9. the code in a JSON body: purchase status"] = str(body.status_code)

        cpu = worker_cpu_s(server)
        first, again = await tab_polls(http, sale, TAB_POLLS)
        found["10. a tab's first poll: bytes received"] = str(first)
        found["10. ... each poll of the unchanged sale: bytes received"] = str(again)
        found["10. ... and its server CPU (µs)"] = (
            f"{(worker_cpu_s(server) - cpu) / TAB_POLLS * 1e6:.0f}"
        )
    return found


STAMPEDE_S = 8
PAGE_CONNECTIONS = 40  # sharing one schedule (pages.lua): 1,000 requests a second
# What runs beside each stampede of a round: nothing, item pages, and as many requests for
# no route (404, answered by Litestar's router): the floor any request costs at that rate.
BESIDE = {"alone": None, "pages": "/sales/{sale}/items", "404s": "/no-such-route"}


def stampede(env: dict[str, str], beside: str | None, code: Path | None = None) -> dict[str, float]:
    """A checkout stampede on a fresh sale, with 1,000 GETs a second of `beside` (varied
    `from` and `count`) or nothing beside it: checkouts a second, and the server's and
    Redis' CPU per checkout; the rate the GETs reached."""
    url = f"http://127.0.0.1:{PORT}"
    sale = current_sale(Settings.from_env().sale_seconds)
    serve = [sys.executable, "-m", "notsale", "serve"]
    driver = ["wrk", "-t1", f"-c{PAGE_CONNECTIONS}", f"-d{STAMPEDE_S}s", "-s"]
    if code is not None:  # another revision's code, served from its clone
        env = {**env, "PYTHONPATH": str(code)}
    with running(serve, env, f"{url}/health", cwd=code) as server, contextlib.ExitStack() as stack:
        if beside is not None:
            gets = subprocess.Popen(
                [*driver, str(WRK / "pages.lua"), url + beside.format(sale=sale)],
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(gets.wait)
        with cpu_budget(server) as spent:
            got = wrk(url, STAMPEDE_S, "checkout.lua")
        rate = WRK_LINE.search(gets.communicate()[0]) if beside is not None else None
    return {
        "rps": got["rps"],
        "server_us": spent["server"] / got["requests"] * 1e6,
        "redis_us": spent["Redis"] / got["requests"] * 1e6,
        "redis_ms_per_s": spent["Redis"] / got["seconds"] * 1e3,
        "gets": float(rate[1]) if rate else 0.0,
    }


def fresh_env() -> dict[str, str]:
    """The environment of a server of 2 workers on this bench's port, on fresh stores."""
    database_url, redis_url = fresh_stores(Settings.from_env())
    return {
        **os.environ,
        "NOTSALE_DATABASE_URL": database_url,
        "NOTSALE_REDIS_URL": redis_url,
        "NOTSALE_WORKERS": "2",
        "NOTSALE_PORT": str(PORT),
    }


def pages_beside_stampede(rounds: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {what: [] for what in BESIDE}
    for round_ in range(rounds):
        order = list(BESIDE)
        for what in order[round_ % 3 :] + order[: round_ % 3]:  # each goes first in turn
            runs[what].append(stampede(fresh_env(), BESIDE[what]))
            got = runs[what][-1]
            print(
                f"round {round_ + 1}, {what}: {got['rps']:.0f} checkouts/s, server"
                f" {got['server_us']:.0f} µs and Redis {got['redis_us']:.1f} µs per checkout;"
                f" Redis {got['redis_ms_per_s']:.0f} ms/s; beside it {got['gets']:.0f} GETs/s",
                flush=True,
            )
    for what in ("rps", "server_us", "redis_us", "redis_ms_per_s"):
        for beside in ("pages", "404s"):
            ratios = [w[what] / a[what] for a, w in zip(runs["alone"], runs[beside], strict=True)]
            print(
                f"{what}: with {beside} / alone, median of {rounds} rounds: x{median(ratios):.3f}"
            )


def stampede_against(rev: str, pairs: int) -> None:
    """PAIRS pairs of plain checkout stampedes, this code and `rev`'s, alternating which goes
    first, each on fresh stores: what this code costs against that revision."""
    runs: dict[str, list[dict[str, float]]] = {"this code": [], rev: []}
    with contextlib.ExitStack() as stack:
        other = checkout_of(rev, stack)
        for pair in range(pairs):
            for name in ("this code", rev) if pair % 2 == 0 else (rev, "this code"):
                got = stampede(fresh_env(), None, None if name == "this code" else other)
                runs[name].append(got)
                print(
                    f"pair {pair + 1}, {name}: {got['rps']:.0f} checkouts/s, server"
                    f" {got['server_us']:.0f} µs and Redis {got['redis_us']:.1f} µs per checkout",
                    flush=True,
                )
    for what in ("rps", "server_us", "redis_us"):
        ratios = [a[what] / b[what] for a, b in zip(runs["this code"], runs[rev], strict=True)]
        print(f"{what}: this code / {rev}, median of {pairs} pairs: x{median(ratios):.3f}")


def measure(code: Path | None) -> dict[str, str]:
    env = {**fresh_env(), "NOTSALE_LOG_FORMAT": "json", "NOTSALE_HOLD_SECONDS": str(HOLD_S)}
    redis_url, database_url = env["NOTSALE_REDIS_URL"], env["NOTSALE_DATABASE_URL"]
    if code is not None:
        env["PYTHONPATH"] = str(code)
    url = f"http://127.0.0.1:{PORT}"
    serve = [sys.executable, "-m", "notsale", "serve"]
    with running(serve, env, f"{url}/health", cwd=code) as server:
        return asyncio.run(attacks(url, PORT, redis_url, database_url, server))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__)
    parser.add_argument("--against", help="a git revision to attack first, for comparison")
    parser.add_argument("--pages-beside-stampede", type=int, metavar="ROUNDS")
    parser.add_argument(
        "--stampede-pairs",
        type=int,
        metavar="PAIRS",
        help="with --against: instead, pairs of checkout stampedes of this code and REV",
    )
    args = parser.parse_args()
    if args.pages_beside_stampede:
        pages_beside_stampede(args.pages_beside_stampede)
        return 0
    if args.stampede_pairs:
        if not args.against:
            parser.error("--stampede-pairs needs --against REV")
        stampede_against(args.against, args.stampede_pairs)
        return 0
    runs: dict[str, dict[str, str]] = {}
    with contextlib.ExitStack() as stack:
        if args.against:
            runs[args.against] = measure(checkout_of(args.against, stack))
        runs["this code"] = measure(None)
    names = list(runs)
    print("| attack | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for what in runs[names[-1]]:
        print(f"| {what} | " + " | ".join(run.get(what, "-") for run in runs.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
