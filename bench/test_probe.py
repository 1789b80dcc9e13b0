"""The probe that times one buyer during the sim crowd: a smoke run against a real server."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import asyncpg

from bench.probe import probe, summary
from bench.run import COMMIT, REDIS_FLOOR, one_buyer, running
from tests.started import free_port


async def test_probe_times_checkouts_and_the_purchases_they_lead_to(
    serve: Callable[..., Any], db: asyncpg.Connection
) -> None:
    server = await serve(sale_size=20, user_limit=3, workers=1)
    took = await asyncio.to_thread(probe, server.base_url, 0.5)
    bought = await db.fetchval("SELECT count(*) FROM purchases WHERE user_id LIKE 'probe%'")
    # Every code the probe got was bought, and is in PostgreSQL.
    assert len(took["purchase"]) == bought > 0
    assert f"probe checkout: {len(took['checkout'])} requests" in summary(took)


async def test_one_buyer_times_each_kind_of_request_and_buys_what_it_checks_out(
    serve: Callable[..., Any], db: asyncpg.Connection, stores: Any
) -> None:
    server = await serve(sale_size=20, user_limit=3, workers=1)
    beside = await serve(sale_size=20, user_limit=3, workers=1)  # on the same stores
    port = free_port()
    hello = [sys.executable, "-m", "granian", "--interface", "asgi", "--port", str(port)]
    hello_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NOTSALE_REDIS_URL": stores.redis_url}
    with running([*hello, "bench.hello:app"], env, hello_url):
        took = await asyncio.to_thread(
            one_buyer, server.base_url, hello_url, stores.database_url, 5, beside.base_url
        )
    kinds = {"hello", REDIS_FLOOR, "checkout", "purchase", COMMIT, "checkout?id=0", "GET /health"}
    # The server beside is sent every request the first is: one sent more runs warmer.
    served = kinds - {"hello", REDIS_FLOOR, COMMIT}
    assert set(took) == kinds | {kind + " beside" for kind in served}
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE user_id LIKE 'solo%'") == 10
    assert await db.fetchval("SELECT count(*) FROM bench_commit") == 5
