"""A crowd far larger than the stock rushes a real multi-worker server over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from notsale.config import Settings
from notsale.connections import connect
from tests.stampede import (
    BUYERS,
    SALE_SIZE,
    USER_LIMIT,
    Tally,
    assert_every_attempt_recorded,
    assert_sold_exactly_once_within_limits,
    crowd,
)


async def test_stampede_sells_exactly_the_stock_and_records_every_attempt(
    serve: Callable[..., Any], db: asyncpg.Connection
) -> None:
    server = await serve(sale_size=SALE_SIZE, user_limit=USER_LIMIT, workers=2)
    tally = Tally()
    current = await crowd(server, range(BUYERS), tally, seed=7)
    await assert_sold_exactly_once_within_limits(db, tally, current)


async def test_redis_flushed_between_two_bursts_sells_nothing_twice(
    serve: Callable[..., Any], db: asyncpg.Connection, settings: Settings
) -> None:
    server = await serve(sale_size=SALE_SIZE, user_limit=USER_LIMIT, workers=2)
    tally = Tally()
    first = await crowd(server, range(10), tally, seed=1)  # ten buyers: 20 of the 30 items
    assert first["sold"] == 10 * USER_LIMIT
    await assert_every_attempt_recorded(db, tally)
    async with connect(settings.redis_url) as redis:
        await redis.flushdb()  # Redis loses everything; PostgreSQL still has the 20 sales
    # The same ten come back with the crowd: they are at their limit already.
    current = await crowd(server, range(BUYERS), tally, seed=2)
    await assert_sold_exactly_once_within_limits(db, tally, current)
