"""A stampede: a crowd of buyers rushing one small sale over HTTP, and the checks that it sold
exactly the stock, within the limits, with every attempt recorded (tests/test_stampede.py,
tests/test_cluster.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from typing import Any

import asyncpg
import httpx

from tests.support import wait_for

SALE_SIZE = 30
USER_LIMIT = 2
BUYERS = 250  # demand: 250 buyers x 2 items = 500, for 30 items
GIVE_UP_CHECK_EVERY = 5  # after every 5 refusals a buyer looks whether all is sold
# Longer than a test of one sale takes (seen: a crowd crossing the hour sold both sales).
SALE_CHANGE_MARGIN_S = 60


class Tally:
    def __init__(self) -> None:
        self.checkouts = 0
        self.purchased: dict[str, tuple[int, str]] = {}  # code -> (item, user) answered 200
        self.unexpected: list[str] = []


async def buyer(http: httpx.AsyncClient, user: str, tally: Tally, rng: random.Random) -> None:
    """Walks the items in a random order and buys each one it can hold; leaves at the limit,
    or when refusals pile up and the sale turns out to be sold out."""
    items = list(range(1, SALE_SIZE + 1))
    rng.shuffle(items)
    refused = 0
    for item in items:
        tally.checkouts += 1
        response = await http.post("/checkout", params={"user_id": user, "id": item})
        if response.status_code == 429:
            return
        if response.status_code == 409:
            refused += 1
            if refused % GIVE_UP_CHECK_EVERY == 0:
                sale = (await http.get("/sales/current")).json()
                if sale["sold"] == sale["size"]:
                    return
            continue
        if response.status_code != 200:
            tally.unexpected.append(f"checkout {response.status_code} {response.text}")
            continue
        code = response.json()["code"]
        bought = await http.post("/purchase", params={"code": code})
        if bought.status_code == 200:
            tally.purchased[code] = (item, user)
        else:
            tally.unexpected.append(f"purchase {bought.status_code} {bought.text}")


async def crowd(
    server: Any, users: range, tally: Tally, seed: int, local_address: str | None = None
) -> dict[str, Any]:
    """Runs buyers user<n> for n in `users` at once, from `local_address` if given; returns
    /sales/current afterwards. A crowd that would meet the next sale's start waits for it:
    every buyer of a test then rushes the same sale (an unnamed checkout is for the running
    one)."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=100)
    transport = httpx.AsyncHTTPTransport(limits=limits, local_address=local_address)
    async with httpx.AsyncClient(base_url=server.base_url, transport=transport, timeout=30) as http:
        ends = dt.datetime.fromisoformat((await http.get("/sales/current")).json()["ends_at"])
        left_s = (ends - dt.datetime.now(dt.UTC)).total_seconds()
        if left_s < SALE_CHANGE_MARGIN_S:
            await asyncio.sleep(left_s + 1)
        await asyncio.gather(*(buyer(http, f"buyer{n}", tally, rng) for n in users))
        return dict((await http.get("/sales/current")).json())


async def assert_every_attempt_recorded(db: asyncpg.Connection, tally: Tally) -> None:
    async def attempts() -> int:
        return int(await db.fetchval("SELECT count(*) FROM checkout_attempts"))

    assert await wait_for(attempts, tally.checkouts) == tally.checkouts


async def assert_sold_exactly_once_within_limits(
    db: asyncpg.Connection, tally: Tally, current: dict[str, Any]
) -> None:
    assert tally.unexpected == []
    assert len(tally.purchased) == SALE_SIZE
    rows = await db.fetch("SELECT sale_id, item_id, user_id, code FROM purchases")
    assert len(rows) == SALE_SIZE
    assert {r["item_id"] for r in rows} == set(range(1, SALE_SIZE + 1))
    assert {r["sale_id"] for r in rows} == {current["sale_id"]}
    assert max(Counter(r["user_id"] for r in rows).values()) <= USER_LIMIT
    assert {r["code"]: (r["item_id"], r["user_id"]) for r in rows} == tally.purchased
    assert (current["sold"], current["held"], current["remaining"]) == (SALE_SIZE, 0, 0)
    await assert_every_attempt_recorded(db, tally)
    ok = await db.fetchval("SELECT count(*) FROM checkout_attempts WHERE outcome = 'ok'")
    assert ok == SALE_SIZE
