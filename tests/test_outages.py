"""A store goes away mid-sale and comes back: bounded 503s, no lie, no loss, self-healing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.store.migrations import migrate
from notsale.store.writer import COMMIT_DEADLINE_S
from tests.faultproxy import in_front_of
from tests.started import free_port
from tests.support import (
    Stores,
    Throwaway,
    assert_error,
    checkout,
    health_status,
    log_tail,
    purchase,
    server_env,
    spawn_server,
    wait_for,
)

# An outage is answered within this long: bounded waits, never a hang.
OUTAGE_ANSWER_S = 6.0


async def timed(request: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_postgres_outage_checkouts_go_on_purchases_503_then_everything_is_written(
    throwaway: Callable[..., Throwaway],
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,  # empties the run's Redis, which this test shares
) -> None:
    servers = throwaway(postgres=True)
    await migrate(servers.database_url)
    settings = make_settings(database_url=servers.database_url)
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await checkout(client, "ann", 1)).status_code == 200
        await asyncio.to_thread(servers.services, "down", "postgres")
        # Redis still decides checkouts; their attempts wait in the outbox.
        held = await checkout(client, "bea", 2)
        assert held.status_code == 200
        code = held.json()["code"]
        # No 200 without a commit: the purchase is refused, in bounded time. Redis keeps it
        # decided, and the flusher writes it once PostgreSQL is back.
        response, took = await timed(purchase(client, code))
        assert_error(response, 503, "unavailable")
        assert took < OUTAGE_ANSWER_S
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["postgres"] == "down"
        # The buyers' reads that PostgreSQL answers (sales Redis does not hold): 503, bounded.
        sale = held.json()["sale_id"]
        for read in (f"/sales/{sale - 5}/items", "/sales"):
            response, took = await timed(client.get(read))
            assert_error(response, 503, "unavailable")
            assert took < OUTAGE_ANSWER_S
        assert (await client.get("/metrics")).status_code == 200
        await asyncio.to_thread(servers.services, "up")

        async def retried() -> int:
            return int((await purchase(client, code)).status_code)

        assert await wait_for(retried, 200) == 200
        conn = await asyncpg.connect(servers.database_url)
        try:

            async def attempts() -> int:
                return int(await conn.fetchval("SELECT count(*) FROM checkout_attempts"))

            assert await wait_for(attempts, 2) == 2
            rows = await conn.fetch("SELECT item_id, user_id, code FROM purchases")
            assert [tuple(r) for r in rows] == [(2, "bea", code)]
        finally:
            await conn.close()


async def test_redis_outage_is_a_quick_503_and_the_service_heals_when_it_returns(
    throwaway: Callable[..., Throwaway],
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
) -> None:
    servers = throwaway(redis=True)
    settings = make_settings(redis_url=servers.redis_url)
    async with AsyncTestClient(app=create_app(settings)) as client:
        code = (await checkout(client, "cid", 1)).json()["code"]
        assert (await purchase(client, code)).status_code == 200
        await asyncio.to_thread(servers.services, "down", "redis")
        response, took = await timed(checkout(client, "dot", 2))
        assert_error(response, 503, "unavailable")
        assert took < OUTAGE_ANSWER_S
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "redis": "down", "postgres": "ok"}
        sale = current_sale(settings.sale_seconds)
        for read in ("/sales", f"/sales/{sale}/items"):
            response, took = await timed(client.get(read))
            assert_error(response, 503, "unavailable")
            assert took < OUTAGE_ANSWER_S
        named = {"user_id": "dot", "id": "3", "sale_id": str(sale)}
        response, took = await timed(client.post("/checkout", params=named))
        assert_error(response, 503, "unavailable")
        assert took < OUTAGE_ANSWER_S
        metrics = (await client.get("/metrics")).text
        assert "notsale_redis_up 0.0" in metrics
        # It comes back empty (no persistence): the sale is rebuilt from PostgreSQL.
        await asyncio.to_thread(servers.services, "up")

        async def item_one() -> int:
            return int((await checkout(client, "dot", 1)).status_code)

        assert await wait_for(item_one, 409) == 409
        assert (await checkout(client, "dot", 2)).status_code == 200
        assert (await client.get("/health")).status_code == 200
    rows = await db.fetch("SELECT outcome, item_id FROM checkout_attempts WHERE user_id = 'dot'")
    # Both refused checkouts have their row, the one naming the sale included.
    assert {("unavailable", 2), ("unavailable", 3)} <= {tuple(r) for r in rows}


async def test_a_blackholed_postgres_answers_a_purchase_503_within_the_commit_deadline(
    make_settings: Callable[..., Settings], stores: Stores, db: asyncpg.Connection
) -> None:
    """PostgreSQL stops answering without closing anything (a blackhole, not a refusal): a
    purchase is answered 503 once the commit deadline passes, never left hanging, and its
    retry gets 200 once PostgreSQL answers again."""
    with in_front_of(stores.database_url, 5432) as (pg, url):
        settings = make_settings(database_url=url)
        async with AsyncTestClient(app=create_app(settings)) as client:
            first, code = [(await checkout(client, "bo", n)).json()["code"] for n in (1, 2)]
            assert (await purchase(client, first)).status_code == 200  # a connection kept
            with pg.stalled():
                response, took = await timed(purchase(client, code))
            assert_error(response, 503, "unavailable")
            assert took < COMMIT_DEADLINE_S + 0.5, took

            async def retried() -> int:
                return int((await purchase(client, code)).status_code)

            assert await wait_for(retried, 200, timeout=20) == 200


async def test_a_server_started_while_postgres_is_away_sells_and_migrates_when_it_returns(
    make_settings: Callable[..., Settings],
    stores: Stores,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """A redeploy during a PostgreSQL outage: `notsale serve` does not wait for it. Redis,
    which holds the running sale, decides; the rows wait in the outbox; once PostgreSQL
    answers, the migrations are applied and every row is written."""
    with in_front_of(stores.database_url, 5432) as (pg, url):
        settings = make_settings(database_url=url, port=free_port(), workers=1)
        async with AsyncTestClient(app=create_app(settings)) as client:
            assert (await checkout(client, "ray", 1)).status_code == 200  # the sale ready
        pg.refuse()
        log_path = str(tmp_path / "serve.log")
        server = spawn_server(server_env(settings), log_path)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
                assert await wait_for(lambda: health_status(http), 503, timeout=30) == 503, (
                    log_tail(log_path)
                )
                params = {"user_id": "ray", "id": "2"}
                assert (await http.post("/checkout", params=params)).status_code == 200
                pg.refuse(False)
                assert await wait_for(lambda: health_status(http), 200, timeout=30) == 200, (
                    log_tail(log_path)
                )

                async def rows() -> int:
                    return int(await db.fetchval("SELECT count(*) FROM checkout_attempts"))

                assert await wait_for(rows, 2) == 2

                async def migrated() -> bool:
                    return "migrations done" in log_tail(log_path, 100_000)

                assert await wait_for(migrated, True) is True
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            assert await asyncio.to_thread(server.wait, 30) == 0
