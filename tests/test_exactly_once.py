"""Exactly once under the faults production Redis and PostgreSQL really have.

Each test causes one fault with real processes (a private redis-server, a private
PostgreSQL, a TCP proxy that stalls or cuts) and checks the two promises: every checkout
request is exactly one attempt row, and nothing is sold past the stock or the user limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import coredis
import httpx
import pytest
from litestar.testing import AsyncTestClient

from notsale import clock as clock_module
from notsale import outbox
from notsale.api import checkout as checkout_module
from notsale.app import create_app
from notsale.clock import CLOCK_SKEW_MS, current_sale
from notsale.config import Settings
from notsale.connections import connect
from notsale.keys import OUTBOX_REGISTRY, sale_keys
from notsale.recovery.reconcile import REBUILD_DEADLINE_S, Reconciler
from notsale.recovery.watch import WATCH_EVERY_S
from notsale.store import flusher as flusher_module
from notsale.store.flusher import Flusher
from notsale.store.migrations import migrate
from tests.faultproxy import in_front_of
from tests.redisserver import RedisServer
from tests.support import (
    DEPLOYED_DAYS_AGO,
    Stores,
    Throwaway,
    assert_error,
    backdate_deployment,
    checkout,
    notsale_cli,
    purchase,
    wait_for,
)

Client = AsyncTestClient[Any]
PG_PORT = 5432  # PostgreSQL's, when a URL names none

# Lua that keeps Redis busy (it answers nobody meanwhile) for ARGV[1] milliseconds.
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000 + t[2] / 1000
repeat t = redis.call('TIME') until t[1] * 1000 + t[2] / 1000 - start > tonumber(ARGV[1])
return 1
"""


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def attempt_rows(db: asyncpg.Connection, user: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT id, outcome, decided, code FROM checkout_attempts WHERE user_id = $1", user
        )
    )


async def rows_settled(db: asyncpg.Connection, user: str, count: int) -> list[asyncpg.Record]:
    async def probe() -> int:
        return len(await attempt_rows(db, user))

    await wait_for(probe, count)
    return await attempt_rows(db, user)


async def test_a_stalled_redis_decides_a_checkout_once_and_its_503_row_keeps_the_outcome(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Case 1: a read timeout never re-sends the script (coredis would, by default); the 503
    row and the decision Redis made after all are one row."""
    with RedisServer() as server:
        settings = make_settings(redis_url=server.url)
        async with (
            app_client(settings) as client,
            coredis.Redis.from_url(server.url, stream_timeout=10) as admin,
        ):
            assert (await checkout(client, "ann", 1)).status_code == 200  # the sale is ready
            stream = outbox.stream(current_sale(settings.sale_seconds))
            added = (await admin.xinfo_stream(stream))["entries-added"]
            busy = asyncio.ensure_future(admin.eval(BUSY, [], [2500]))
            await asyncio.sleep(0.1)
            assert_error(await checkout(client, "bea", 2), 503, "unavailable")
            await busy
            await asyncio.sleep(0.5)  # a replay, if any, would have run by now

            async def decisions() -> Any:
                return (await admin.xinfo_stream(stream))["entries-added"] - added

            assert await decisions() == 1
            [row] = await rows_settled(db, "bea", 1)

            async def decided() -> Any:
                return (await attempt_rows(db, "bea"))[0]["decided"]

            # The script ran once the stall ended: the row says so, and the code it made...
            assert await wait_for(decided, "ok") == "ok"
            [row] = await attempt_rows(db, "bea")
            assert row["outcome"] == "unavailable" and row["code"]
            # ...is what the client's retry gets back.
            retry = await checkout(client, "bea", 2)
            assert retry.status_code == 200 and retry.json()["code"] == row["code"]
    assert len(await rows_settled(db, "bea", 2)) == 2


@pytest.mark.parametrize("refusal", ["oom", "readonly"])
async def test_a_redis_that_refuses_writes_is_a_503_with_one_row_and_unhealthy(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, refusal: str
) -> None:
    """Case 2: OOM at maxmemory, READONLY after a failover: 503 (never 500), one attempt row
    each (written to PostgreSQL), /health says Redis is down; healed, it sells again (within
    a watch tick: one that measured maxmemory 1 refuses checkouts until the next)."""
    with RedisServer() as server:
        settings = make_settings(redis_url=server.url)
        async with app_client(settings) as client, connect(server.url) as admin:
            assert (await checkout(client, "cat", 1)).status_code == 200
            if refusal == "oom":
                await admin.config_set({"maxmemory": "1"})
            else:
                await admin.replicaof("127.0.0.1", server.port + 1)  # nobody there
            assert_error(await checkout(client, "dan", 2), 503, "unavailable")
            assert_error(await checkout(client, "dan", "x"), 400, "invalid_request")
            health = await client.get("/health")
            assert health.status_code == 503 and health.json()["redis"] == "down"
            if refusal == "oom":
                await admin.config_set({"maxmemory": "0"})
            else:
                await admin.replicaof()
            sent = 2

            async def healed() -> int:
                nonlocal sent
                sent += 1
                return (await checkout(client, "dan", 2)).status_code

            assert await wait_for(healed, 200) == 200
    outcomes = sorted(r["outcome"] for r in await rows_settled(db, "dan", sent))
    assert outcomes == ["invalid_request", "ok"] + ["unavailable"] * (sent - 2)


async def test_start_up_warns_when_redis_may_evict_sale_keys(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    watch_log = logging.getLogger("notsale.recovery.watch")
    watch_log.addHandler(handler)
    try:
        with RedisServer() as server:
            async with connect(server.url) as admin:
                await admin.config_set({"maxmemory-policy": "volatile-lru"})
            async with app_client(make_settings(redis_url=server.url)):
                pass
    finally:
        watch_log.removeHandler(handler)
    warned = [r for r in records if "maxmemory-policy noeviction" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING


async def test_an_outbox_older_than_two_sales_is_drained_then_deleted(
    throwaway: Callable[..., Throwaway],
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Case 3: PostgreSQL is down from sale N until N+2 runs; sale N's attempts are written
    when it returns, and its stream is then deleted (Redis does not grow sale after sale).
    Sales N+1 and N+2 open although PostgreSQL is down (marked ready ahead of their start)."""
    monkeypatch.setattr(flusher_module, "ENDED_GRACE_MS", 0)
    monkeypatch.setattr(flusher_module, "CLEANUP_EVERY_S", 0.2)
    servers = throwaway(postgres=True)
    await migrate(servers.database_url)
    settings = make_settings(database_url=servers.database_url, sale_seconds=2, sale_open_seconds=2)
    async with app_client(settings) as client, connect(settings.redis_url) as redis:
        first = current_sale(2)
        if time.time() % 2 > 1.2:  # not too close to a rollover
            await asyncio.sleep(2 - time.time() % 2 + 0.05)
            first = current_sale(2)
        assert (await checkout(client, "eve", 1)).status_code == 200
        await asyncio.to_thread(servers.services, "down", "postgres")
        assert (await checkout(client, "eve", 2)).status_code == 200
        await asyncio.sleep((first + 2) * 2 - time.time() + 0.05)  # sale N+2 runs
        # A sale that started while PostgreSQL was down.
        assert (await checkout(client, "fay", 3)).status_code == 200
        assert first in {int(s) for s in await redis.smembers(OUTBOX_REGISTRY)}
        await asyncio.to_thread(servers.services, "up")
        conn = await asyncpg.connect(servers.database_url)
        try:

            async def rows() -> int:
                return int(await conn.fetchval("SELECT count(*) FROM checkout_attempts"))

            assert await wait_for(rows, 3) == 3
            by_sale = await conn.fetch("SELECT sale_id, user_id FROM checkout_attempts")
            assert sorted(tuple(r) for r in by_sale)[:2] == [(first, "eve"), (first, "eve")]
        finally:
            await conn.close()

        async def gone() -> bool:
            registered = {int(s) for s in await redis.smembers(OUTBOX_REGISTRY)}
            exists = await redis.exists([outbox.stream(first)])
            return first not in registered and not exists

        assert await wait_for(gone, True) is True


async def test_redis_restarted_from_an_older_snapshot_is_rebuilt_and_sells_nothing_twice(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Case 4: Redis comes back with less than it had (a snapshot restore; an AOF written
    with everysec or a lagging replica does the same): its `ready` key survived, its last
    purchases did not. The new server id makes the sale rebuild from PostgreSQL first."""
    with RedisServer() as server:
        settings = make_settings(redis_url=server.url, user_limit=2)
        async with app_client(settings) as client:
            first = (await checkout(client, "gus", 1)).json()["code"]
            assert (await purchase(client, first)).status_code == 200
            async with connect(server.url) as admin:
                await admin.save()  # the snapshot Redis will come back with
            second = (await checkout(client, "gus", 2)).json()["code"]
            assert (await purchase(client, second)).status_code == 200
            await asyncio.to_thread(server.restart)  # SIGKILL, then start from the snapshot

            async def sold() -> Any:
                response = await client.get("/sales/current")
                return response.json()["sold"] if response.status_code == 200 else None

            # Within WATCH_EVERY_S the workers see the new server id, and the sale is rebuilt
            # (until then PostgreSQL refuses what Redis gets wrong: the next test).
            assert await wait_for(sold, 2) == 2
            assert_error(await checkout(client, "gus", 3), 429, "user_limit")
            assert_error(await checkout(client, "hal", 2), 409, "item_sold")
            # The purchase Redis lost is answered from PostgreSQL, not with 410.
            retry = await purchase(client, second)
            assert retry.status_code == 200 and retry.json()["item_id"] == 2
        check = notsale_cli(settings, "reconcile", "--check")
        assert "missing_in_redis" not in check.stdout and "user_count" not in check.stdout
    assert await db.fetchval("SELECT count(*) FROM purchases") == 2


async def test_after_a_rollback_nothing_is_decided_or_read_on_the_older_state(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Holes 2, 3 and 4: Redis restarts from a snapshot taken while the user (limit 3) had
    bought item 1 and held item 2, which they bought after it. At once (no worker has had
    time to notice the restart), item 2 reads sold and another user's checkout of it is
    refused as sold, not held: the sale was rebuilt first. The user is counted once for item
    2 (bought, no longer held): one more checkout is theirs, the next one past the limit."""
    with RedisServer() as server:
        settings = make_settings(redis_url=server.url, user_limit=3)
        sale = current_sale(settings.sale_seconds)
        async with app_client(settings) as client:
            codes = [(await checkout(client, "una", item)).json()["code"] for item in (1, 2)]
            assert (await purchase(client, codes[0])).status_code == 200
            async with connect(server.url) as admin:
                await admin.save()  # the snapshot Redis will come back with
            assert (await purchase(client, codes[1])).status_code == 200
            await asyncio.to_thread(server.restart)  # SIGKILL, then start from the snapshot
            item = await client.get(f"/sales/{sale}/items/2")
            assert item.status_code == 200 and item.json()["status"] == "sold"
            assert_error(await checkout(client, "vic", 2), 409, "item_sold")
            assert (await checkout(client, "una", 3)).status_code == 200
            assert_error(await checkout(client, "una", 4), 429, "user_limit")
            retry = await purchase(client, codes[1])
            assert retry.status_code == 200 and retry.json()["item_id"] == 2
            check = notsale_cli(settings, "reconcile", "--check")
            assert check.returncode == 0, check.stdout
    assert await db.fetchval("SELECT count(*) FROM purchases") == 2


async def test_postgres_refuses_what_redis_gets_wrong_before_it_notices(
    settings: Settings, client: Client, db: asyncpg.Connection
) -> None:
    """Case 4, the window before a rollback is seen: Redis counts a user short and forgot a
    sale. PostgreSQL refuses both purchases (429, 409) and the sale is rebuilt."""
    codes = []
    for item in (1, 2, 3):  # the test limit is 3
        codes.append((await checkout(client, "ida", item)).json()["code"])
        assert (await purchase(client, codes[-1])).status_code == 200
    keys = sale_keys(current_sale(settings.sale_seconds))
    async with connect(settings.redis_url) as redis:
        await redis.hset(keys.users, {"ida": "2"})  # as if the third purchase was lost
        await redis.hdel(keys.sold, ["3"])
        await redis.hdel(keys.code, [codes[2]])
        extra = (await checkout(client, "ida", 4)).json()["code"]
        assert_error(await purchase(client, extra), 429, "user_limit")
        # The refusal made the sale rebuild: Redis knows all three again, and item 4,
        # which Redis alone had sold, is free (its code's user is at the limit).
        assert_error(await checkout(client, "ida", 5), 429, "user_limit")
        assert_error(await checkout(client, "jo", 3), 409, "item_sold")
        assert (await checkout(client, "jo", 4)).status_code == 200
        assert_error(await purchase(client, extra), 410, "code_expired")
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE user_id = 'ida'") == 3
    check = notsale_cli(settings, "reconcile", "--check")
    assert check.returncode == 0, check.stdout


async def test_one_bad_entry_in_a_copy_batch_is_set_aside_and_the_rest_written(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Case 5: a value out of a column's range fails COPY in the driver (OverflowError, not a
    PostgreSQL error); the batch is written row by row and that entry kept aside."""
    sale = current_sale(settings.sale_seconds)
    stream = outbox.stream(sale)
    good = [
        outbox.entry(outbox.Checkout(f"r{n}", f"u{n}", "5", "item_held", "", "1795482486613", 0))
        for n in range(1000)
    ]
    # An item beyond PostgreSQL's integer.
    bad = outbox.entry(outbox.Purchase("", "u", "99999999999", "ok", "c0de", "1795482486613", 1))
    async with connect(settings.redis_url) as redis:
        for entry in [*good[:500], bad, *good[500:]]:
            await redis.xadd(stream, entry)
        flusher = Flusher(redis, pool, settings)
        assert await flusher.flush_once(block_ms=1) == 1000
        assert await flusher.flush_once(block_ms=1) == 1
        assert await redis.xlen(stream) == 0
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 1000
    [reject] = await db.fetch("SELECT payload, error FROM outbox_rejects")
    assert "99999999999" in reject["payload"] and reject["error"]


async def test_an_entry_handed_out_many_times_is_written_not_set_aside(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Hole 1: Redis counts every re-read of a pending entry as a delivery, and a flusher
    re-reads its own every RETRY_DELAY_S while PostgreSQL is away. However often it was
    handed out, an entry PostgreSQL takes is written, never set aside (here by a drain, which
    claims every pending entry at once, as `notsale reconcile` does)."""
    sale = current_sale(settings.sale_seconds)
    stream = outbox.stream(sale)
    entry = outbox.entry(outbox.Checkout("r1", "u", "5", "item_held", "", "1795482486613", 0))
    async with connect(settings.redis_url) as redis:
        await redis.xgroup_create(stream, outbox.GROUP, "0", mkstream=True)
        entry_id = await redis.xadd(stream, entry)
        await redis.xreadgroup(outbox.GROUP, "dead-0", streams={stream: ">"})
        for n in range(1, 20):
            await redis.xclaim(stream, outbox.GROUP, f"dead-{n}", 0, [entry_id])
        assert await Reconciler(redis, pool, settings).drain(sale) == 1
        assert await redis.xlen(stream) == 0
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox_rejects") == 0


async def test_rows_of_killed_workers_survive_a_postgres_outage_and_none_is_set_aside(
    serve: Callable[..., Any], settings: Settings, stores: Stores, db: asyncpg.Connection
) -> None:
    """Hole 1, as found: two workers behind a proxy, PostgreSQL refusing for seconds (their
    flushers re-read the pending entries meanwhile), both SIGKILLed, PostgreSQL back, then
    `notsale reconcile` drains the outbox: every answered checkout has its row."""
    with in_front_of(stores.database_url, PG_PORT) as (pg, url):
        server = await serve(database_url=url, workers=2)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            pg.refuse()
            answers = [
                await http.post("/checkout", params={"user_id": f"k{n}", "id": str(n)})
                for n in range(1, 21)
            ]
            assert [a.status_code for a in answers] == [200] * 20
            await asyncio.sleep(4)  # > MAX_DELIVERIES (5) re-reads at RETRY_DELAY_S, as was
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        pg.refuse(False)
    check = notsale_cli(settings, "reconcile")
    assert check.returncode == 0, check.stdout + check.stderr
    users = await db.fetchval(
        "SELECT count(DISTINCT user_id) FROM checkout_attempts WHERE outcome = 'ok'"
    )
    assert users == 20
    assert await db.fetchval("SELECT count(*) FROM outbox_rejects") == 0


async def test_a_full_outbox_refuses_checkouts_while_postgres_is_down_and_loses_no_row(
    throwaway: Callable[..., Throwaway],
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
) -> None:
    """Case 6 and hole 6: with PostgreSQL down the outboxes stop at NOTSALE_OUTBOX_MAX in
    all, whichever open sales fill them, instead of filling Redis: checkouts get 503 before
    anything is decided, and their rows still go through Redis."""
    servers = throwaway(postgres=True)
    await migrate(servers.database_url)
    await backdate_deployment(servers.database_url, DEPLOYED_DAYS_AGO)  # the older sale ran
    settings = make_settings(database_url=servers.database_url, outbox_max=3)
    running = current_sale(settings.sale_seconds)
    async with app_client(settings) as client, connect(settings.redis_url) as redis:
        older = {"user_id": "kay", "sale_id": running - 1}
        assert (await client.post("/checkout", params={**older, "id": 1})).status_code == 200
        await asyncio.to_thread(servers.services, "down", "postgres")
        for item in (2, 3):
            answer = await client.post("/checkout", params={**older, "id": item})
            assert answer.status_code == 200
        assert (await checkout(client, "kay", 4)).status_code == 200
        await asyncio.sleep(WATCH_EVERY_S + 0.2)  # the watch counts every outbox
        assert_error(await checkout(client, "kay", 5), 503, "unavailable")
        assert_error(await checkout(client, "kay", "x"), 400, "invalid_request")
        assert await redis.xlen(outbox.stream(running)) == 3  # one decision, two rows
        await asyncio.to_thread(servers.services, "up")
        conn = await asyncpg.connect(servers.database_url)
        try:

            async def outcomes() -> list[str]:
                rows = await conn.fetch("SELECT outcome FROM checkout_attempts")
                return sorted(r["outcome"] for r in rows)

            expected = ["invalid_request", "ok", "ok", "ok", "ok", "unavailable"]
            assert await wait_for(outcomes, expected) == expected

            async def sells() -> int:
                return int((await checkout(client, "lea", 5)).status_code)

            assert await wait_for(sells, 200) == 200  # drained: decisions flow again
        finally:
            await conn.close()


async def test_a_checkout_answered_503_while_both_stores_fail_keeps_its_row_and_decision(
    make_settings: Callable[..., Settings], stores: Stores, db: asyncpg.Connection
) -> None:
    """Both stores fail at once: Redis stalls past the timeout (the script runs later), and
    PostgreSQL refuses connections. The row waits in the worker, then meets the decision."""
    with RedisServer() as server, in_front_of(stores.database_url, PG_PORT) as (pg, url):
        settings = make_settings(redis_url=server.url, database_url=url)
        async with (
            app_client(settings) as client,
            coredis.Redis.from_url(server.url, stream_timeout=10) as admin,
        ):
            assert (await checkout(client, "ann", 1)).status_code == 200
            pg.refuse()
            busy = asyncio.ensure_future(admin.eval(BUSY, [], [2500]))
            await asyncio.sleep(0.1)
            assert_error(await checkout(client, "bob", 2), 503, "unavailable")
            await busy
            pg.refuse(False)

            async def rows() -> list[tuple[str, str | None]]:
                return [(r["outcome"], r["decided"]) for r in await attempt_rows(db, "bob")]

            expected = [("unavailable", "ok")]
            assert await wait_for(rows, expected, timeout=15) == expected


async def test_a_read_only_postgres_is_a_503_for_purchases_then_heals(
    settings: Settings, client: Client, db: asyncpg.Connection
) -> None:
    """Case 7: the group commit answers 503, not 500, for PostgreSQL refusing writes."""
    name = settings.database_url.rsplit("/", 1)[1]
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()"
    )
    code = (await checkout(client, "lou", 1)).json()["code"]
    await db.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        await db.execute(terminate, name)
        assert_error(await purchase(client, code), 503, "unavailable")
        assert_error(await purchase(client, code), 503, "unavailable")
    finally:
        await db.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await db.execute(terminate, name)

    async def bought() -> int:
        return int((await purchase(client, code)).status_code)

    assert await wait_for(bought, 200) == 200
    assert await db.fetchval("SELECT count(*) FROM purchases") == 1


async def test_a_checkout_refused_for_postgres_is_recorded_through_the_outbox(
    throwaway: Callable[..., Throwaway],
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
) -> None:
    """Case 7: PostgreSQL is what failed (the sale cannot be rebuilt), so the attempt's row
    goes through Redis, and reaches PostgreSQL when it returns."""
    servers = throwaway(postgres=True)
    await migrate(servers.database_url)
    settings = make_settings(database_url=servers.database_url)
    async with app_client(settings) as client, connect(settings.redis_url) as redis:
        await asyncio.to_thread(servers.services, "down", "postgres")
        await redis.delete([sale_keys(current_sale(settings.sale_seconds)).ready])
        assert_error(await checkout(client, "max", 1), 503, "unavailable")
        await asyncio.to_thread(servers.services, "up")
        conn = await asyncpg.connect(servers.database_url)
        try:

            async def outcomes() -> list[str]:
                rows = await conn.fetch("SELECT outcome FROM checkout_attempts")
                return [r["outcome"] for r in rows]

            assert await wait_for(outcomes, ["unavailable"]) == ["unavailable"]
        finally:
            await conn.close()


async def test_a_flood_of_reads_does_not_starve_purchases(
    serve: Callable[..., Any], stores: Stores, db: asyncpg.Connection
) -> None:
    """Case 7: reads have their own pool and a bounded wait for it, so a purchase is not
    queued behind them."""
    with in_front_of(stores.database_url, PG_PORT) as (proxy, url):
        server = await serve(database_url=url, workers=1)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            codes = []
            for item in ("1", "2"):
                params = {"user_id": "ned", "id": item}
                codes.append((await http.post("/checkout", params=params)).json()["code"])
            await http.post("/purchase", params={"code": codes[0]})  # a warm connection
            proxy.delay(0.1)  # every query now takes 0.2 s or more
            limits = httpx.Limits(max_connections=None)
            async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as crowd:
                flood = asyncio.gather(*(crowd.get("/users/ned/purchases") for _ in range(300)))
                await asyncio.sleep(0.5)
                started = time.monotonic()
                bought = await http.post("/purchase", params={"code": codes[1]})
                took = time.monotonic() - started
                statuses = [r.status_code for r in await flood]
    assert bought.status_code == 200
    assert took < 1.0, took
    assert set(statuses) <= {200, 503}


async def test_callers_waiting_on_a_rebuild_share_it_and_fail_fast(
    make_settings: Callable[..., Settings], stores: Stores, db: asyncpg.Connection
) -> None:
    """Case 7: with PostgreSQL stalled, a sale that must be rebuilt answers all its waiting
    checkouts within one rebuild's deadline, not one after another, and the next at once."""
    with in_front_of(stores.database_url, PG_PORT) as (proxy, url):
        settings = make_settings(database_url=url)
        async with app_client(settings) as client, connect(settings.redis_url) as redis:
            assert (await checkout(client, "oz", 1)).status_code == 200
            proxy.stall()
            await redis.delete([sale_keys(current_sale(settings.sale_seconds)).ready])
            started = time.monotonic()
            answers = await asyncio.gather(*(checkout(client, f"w{n}", 2) for n in range(10)))
            took = time.monotonic() - started
            assert {a.status_code for a in answers} == {503}
            assert took < REBUILD_DEADLINE_S + 2, took
            started = time.monotonic()
            assert_error(await checkout(client, "w0", 2), 503, "unavailable")
            assert time.monotonic() - started < 0.5
            proxy.resume()

            async def sells() -> int:
                return int((await checkout(client, "w0", 2)).status_code)

            assert await wait_for(sells, 200, timeout=20) == 200
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") >= 12


@pytest.mark.parametrize("offset_s", [-3.5, 3.5])
async def test_a_named_checkout_is_decided_on_redis_clock_not_the_workers(
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    offset_s: float,
) -> None:
    """Hole 5: a worker's clock behind Redis' (the running sale is still to come on it) or
    ahead of it (the running sale has closed on it): Redis' clock decides, the checkout of
    the running sale it names is sold, and so is its purchase. A code of a sale no clock
    skew could have started is unknown."""
    settings = make_settings(sale_seconds=4, sale_open_seconds=4)
    if time.time() % 4 > 3.5:  # not too close to a rollover
        await asyncio.sleep(4 - time.time() % 4 + 0.05)
    sale = current_sale(4)
    real = clock_module.now_ms
    monkeypatch.setattr(checkout_module, "now_ms", lambda: real() + int(offset_s * 1000))
    monkeypatch.setattr(clock_module, "now_ms", lambda: real() + int(offset_s * 1000))
    async with app_client(settings) as client:
        answer = await client.post("/checkout", params={"user_id": "cy", "id": 1, "sale_id": sale})
        assert answer.status_code == 200, answer.text
        assert (await purchase(client, answer.json()["code"])).status_code == 200
        later = sale + 1 + CLOCK_SKEW_MS // 4000
        assert_error(await purchase(client, "A" * 22 + str(later)), 404, "code_not_found")
