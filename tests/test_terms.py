"""A sale's terms are fixed when it starts: a restart with other settings changes only the
sales that start later (docs/api.md, "The sale")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.store.terms import UNFIXED_S, TermsBook
from tests.faultproxy import in_front_of
from tests.support import Stores, assert_error, checkout

SALE_S = 4


async def test_a_restart_with_other_settings_keeps_the_running_sales_terms(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    first = make_settings(sale_seconds=SALE_S, sale_size=50, user_limit=3)
    if SALE_S - time.time() % SALE_S < 2.5:  # the whole test in one sale, then the next
        await asyncio.sleep(SALE_S - time.time() % SALE_S + 0.1)
    sale = current_sale(SALE_S)
    async with AsyncTestClient(app=create_app(first)) as client:
        assert (await checkout(client, "ann", 45)).status_code == 200
    later = make_settings(sale_seconds=SALE_S, sale_size=40, user_limit=5)
    async with AsyncTestClient(app=create_app(later)) as client:
        running = (await client.get("/sales/current")).json()
        assert (running["sale_id"], running["size"], running["user_limit"]) == (sale, 50, 3)
        assert_error(await checkout(client, "bob", 45), 409, "item_held")  # not gone
        page = (await client.get(f"/sales/{sale}/items", params={"from": 41})).json()
        assert [i["item_id"] for i in page["items"]] == list(range(41, 51))
        for item in (1, 2):
            assert (await checkout(client, "ann", item)).status_code == 200
        assert_error(await checkout(client, "ann", 3), 429, "user_limit")  # 3, not 5
        await asyncio.sleep(SALE_S - time.time() % SALE_S + 0.1)  # the next sale starts
        assert current_sale(SALE_S) == sale + 1
        assert_error(await checkout(client, "cat", 45), 404, "item_not_found")
        new = (await client.get("/sales/current")).json()
        assert (new["sale_id"], new["size"], new["user_limit"]) == (sale + 1, 40, 5)
        listed = {s["sale_id"]: s for s in (await client.get("/sales")).json()["sales"]}
        assert (listed[sale]["size"], listed[sale]["user_limit"]) == (50, 3)
    stored = await db.fetch("SELECT sale_id, sale_size, user_limit FROM sale_terms ORDER BY 1")
    assert [tuple(r) for r in stored] == [(sale, 50, 3), (sale + 1, 40, 5)]


async def test_a_sale_starting_while_postgres_hangs_sells_on_the_settings(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, stores: Stores
) -> None:
    """Its terms cannot be fixed: its first checkouts wait for that at most TERMS_WAIT_S,
    then go on with the worker's settings, and the terms are fixed once PostgreSQL is back."""
    with in_front_of(stores.database_url, 5432) as (postgres, database_url):
        settings = make_settings(sale_seconds=SALE_S, sale_size=30, database_url=database_url)
        async with AsyncTestClient(app=create_app(settings)) as client:
            assert (await checkout(client, "ann", 1)).status_code == 200
            sale = current_sale(SALE_S)
            with postgres.stalled():
                await asyncio.sleep(SALE_S - time.time() % SALE_S + 0.1)  # the next sale
                for user in ("bob", "cat", "dan"):
                    started = time.monotonic()
                    assert (await checkout(client, user, 2)).status_code in (200, 409)
                    assert time.monotonic() - started < 1.0
            assert current_sale(SALE_S) == sale + 1
            assert_error(await checkout(client, "eve", 31), 404, "item_not_found")


async def test_a_read_of_a_sale_without_terms_asks_postgresql_once_a_second(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Pages and made-up purchase codes of a sale no worker used yet are told the settings
    and write nothing; such a read asks PostgreSQL again only UNFIXED_S later."""
    book = TermsBook(pool, settings)
    sale = current_sale(settings.sale_seconds)
    assert await book.of(sale, fix=False) == settings.terms()
    assert await db.fetchval("SELECT count(*) FROM sale_terms") == 0
    await db.execute(  # another worker fixes it
        "INSERT INTO sale_terms (sale_id, sale_size, user_limit, hold_seconds, sale_open_seconds)"
        " VALUES ($1, 7, 1, 60, 3600)",
        sale,
    )
    assert await book.of(sale, fix=False) == settings.terms()  # not asked again yet
    await asyncio.sleep(UNFIXED_S + 0.1)
    assert (await book.of(sale, fix=False)).sale_size == 7
