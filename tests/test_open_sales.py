"""Sales stay open until sold out or SALE_OPEN_SECONDS after their start (docs/api.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.clock import KEEP_AFTER_SALE_MS, current_sale, now_ms, rfc3339, sale_window
from notsale.config import Settings
from notsale.keys import sale_keys
from tests.support import Client, assert_error, purchase, wait_for

SALE_S, OPEN_S = 2, 6


async def checkout(client: Client, user: str, item: int, sale: int | str | None = None) -> Any:
    query = {"user_id": user, "id": str(item)}
    if sale is not None:
        query["sale_id"] = str(sale)
    return await client.post("/checkout", params=query)


async def at_sale_start(offset_s: float = 0.05) -> int:
    """Wait for the next sale's start (plus offset_s) and return its id."""
    await asyncio.sleep(SALE_S - time.time() % SALE_S + offset_s)
    return current_sale(SALE_S)


async def test_an_old_sale_sells_until_sold_out_with_its_own_limit(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    settings = make_settings(
        sale_seconds=SALE_S, sale_open_seconds=OPEN_S, sale_size=3, user_limit=2
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        first = await at_sale_start()
        bought = (await checkout(client, "alice", 1)).json()
        assert bought["sale_id"] == first
        assert (await purchase(client, bought["code"])).status_code == 200
        await at_sale_start()  # sale N+1 runs; N is still open

        # An item of N, checked out and bought while N+1 runs; its hold is cut at N's close.
        held = await checkout(client, "alice", 2, sale=first)
        assert held.status_code == 200, held.text
        body = held.json()
        assert body["sale_id"] == first and body["code"].endswith(str(first))
        closes = sale_window(first, settings).closes_ms
        assert body["expires_at"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(closes // 1000)
        )
        assert (await purchase(client, body["code"])).status_code == 200
        # Redis keeps an open sale's state until its close (and KEEP_AFTER_SALE_MS more).
        ttl = await redis_ttl_ms(settings, sale_keys(first).code)
        assert abs(now_ms() + ttl - (closes + KEEP_AFTER_SALE_MS)) < 2000

        # The limit counts per sale: alice is at 2 in N, at 0 in N+1.
        assert_error(await checkout(client, "alice", 3, sale=first), 429, "user_limit")
        assert (await checkout(client, "alice", 3)).json()["sale_id"] == first + 1

        # Open sales, newest first; N closes when its last item is sold.
        listed = (await client.get("/sales")).json()["sales"]
        assert [s["sale_id"] for s in listed[:2]] == [first + 1, first]
        assert listed[1]["remaining"] == 1 and listed[1]["sold"] == 2
        assert listed[1]["closes_at"] == rfc3339(closes)
        last = (await checkout(client, "bob", 3, sale=first)).json()
        assert (await purchase(client, last["code"])).status_code == 200
        assert_error(await checkout(client, "carol", 1, sale=first), 410, "sale_closed")
        # A sold-out sale's keys go KEEP_AFTER_SALE_MS after it sold out, not after its close.
        assert await redis_ttl_ms(settings, sale_keys(first).sold) <= KEEP_AFTER_SALE_MS
        await asyncio.sleep(1.1)  # past the list's cache
        listed = (await client.get("/sales")).json()["sales"]
        assert first not in [s["sale_id"] for s in listed]
        assert first + 1 in [s["sale_id"] for s in listed]

    rows = await attempts(db, 6)
    assert (first, "carol", "sale_closed") in rows
    assert (first, "alice", "user_limit") in rows
    assert [r for r in rows if r[1] == "alice" and r[2] == "ok"] == [
        (first, "alice", "ok"),
        (first, "alice", "ok"),
        (first + 1, "alice", "ok"),
    ]
    sold = await db.fetch("SELECT sale_id, item_id, user_id FROM purchases ORDER BY 1, 2")
    assert [tuple(r) for r in sold] == [(first, 1, "alice"), (first, 2, "alice"), (first, 3, "bob")]


async def test_a_sale_closes_at_its_deadline_and_future_sales_are_not_found(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    settings = make_settings(sale_seconds=SALE_S, sale_open_seconds=OPEN_S)
    async with AsyncTestClient(app=create_app(settings)) as client:
        first = await at_sale_start()
        assert (await checkout(client, "dan", 1, sale=first)).status_code == 200
        assert_error(await checkout(client, "dan", 2, sale=first + 1), 404, "item_not_found")
        assert_error(await checkout(client, "dan", 2, sale="x"), 400, "invalid_request")
        await asyncio.sleep(sale_window(first, settings).closes_ms / 1000 - time.time())
        await asyncio.sleep(0.1)
        assert_error(await checkout(client, "dan", 2, sale=first), 410, "sale_closed")
        listed = [s["sale_id"] for s in (await client.get("/sales")).json()["sales"]]
        assert first not in listed and current_sale(SALE_S) in listed
        assert len(listed) == OPEN_S // SALE_S  # none of them sold anything

    # Each row names the sale the checkout named, once it is one that may have started
    # (Redis' clock decided the next one had not); the running one otherwise.
    rows = await attempts(db, 4)
    outcomes = [(first, "ok"), (first + 1, "item_not_found"), (first, "invalid_request")]
    outcomes.append((first, "sale_closed"))
    assert sorted(rows) == sorted((sale, "dan", outcome) for sale, outcome in outcomes)


async def attempts(db: asyncpg.Connection, count: int) -> list[tuple[Any, ...]]:
    async def written() -> int:
        return int(await db.fetchval("SELECT count(*) FROM checkout_attempts"))

    assert await wait_for(written, count) == count
    rows = await db.fetch(
        "SELECT sale_id, user_id, outcome FROM checkout_attempts ORDER BY attempted_at, id"
    )
    return [tuple(r) for r in rows]


async def redis_ttl_ms(settings: Settings, key: str) -> int:
    from notsale.connections import connect

    async with connect(settings.redis_url) as redis:
        return int(await redis.pttl(key))


async def test_a_page_of_items_in_one_request(client: Client, settings: Settings) -> None:
    sale = current_sale(settings.sale_seconds)
    await checkout(client, "amy", 2)
    code = (await checkout(client, "amy", 3)).json()["code"]
    await purchase(client, code)
    page = (await client.get(f"/sales/{sale}/items", params={"from": "1", "count": "5"})).json()
    assert page["sale_id"] == sale
    assert [(i["item_id"], i["status"]) for i in page["items"]] == [
        (1, "available"),
        (2, "held"),
        (3, "sold"),
        (4, "available"),
        (5, "available"),
    ]
    assert page["items"][0]["image_url"] == f"/sales/{sale}/items/1/image.svg"
    assert page["items"][0]["name"] == (await client.get(f"/sales/{sale}/items/1")).json()["name"]
    whole = (await client.get(f"/sales/{sale}/items")).json()["items"]  # from 1, up to 100
    assert [i["item_id"] for i in whole] == list(range(1, 21))
    tail = (await client.get(f"/sales/{sale}/items", params={"from": "19", "count": "10"})).json()
    assert [i["item_id"] for i in tail["items"]] == [19, 20]
    # An older sale, closed or not known to Redis, is read from PostgreSQL.
    older = (await client.get(f"/sales/{sale - 200}/items", params={"count": "2"})).json()
    assert [i["status"] for i in older["items"]] == ["available", "available"]
    for query, status, error in (
        ({"count": "0"}, 400, "invalid_request"),
        ({"count": "501"}, 400, "invalid_request"),
        ({"count": "x"}, 400, "invalid_request"),
        ({"from": "0"}, 404, "item_not_found"),
        ({"from": "21"}, 404, "item_not_found"),
    ):
        assert_error(await client.get(f"/sales/{sale}/items", params=query), status, error)
    assert_error(await client.get(f"/sales/{sale + 1}/items"), 404, "item_not_found")


async def test_pictures_are_immutable_and_revalidated_by_etag(
    client: Client, settings: Settings
) -> None:
    url = f"/sales/{current_sale(settings.sale_seconds)}/items/7/image.svg"
    first = await client.get(url)
    assert first.status_code == 200
    assert "immutable" in first.headers["cache-control"]
    again = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
