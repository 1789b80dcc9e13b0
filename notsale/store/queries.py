"""The reads PostgreSQL answers: purchases that outlived Redis' keys, and users' lists.

They run on the read pool, each waiting at most ACQUIRE_TIMEOUT_S for a connection, so a
flood of reads answers 503 rather than starving the writers (see pool.py)."""

from __future__ import annotations

from typing import Any

import asyncpg

from notsale.store.pool import ACQUIRE_TIMEOUT_S, QUERY_TIMEOUT_S
from notsale.store.rows import PurchaseRow

PURCHASE_FIELDS = "sale_id, item_id, user_id, code, purchased_at, user_seq"


async def fetch(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
        return list(await conn.fetch(query, *args, timeout=QUERY_TIMEOUT_S))


async def purchase_by_code(pool: asyncpg.Pool, code: str) -> PurchaseRow | None:
    rows = await fetch(pool, f"SELECT {PURCHASE_FIELDS} FROM purchases WHERE code = $1", code)
    return PurchaseRow(*rows[0]) if rows else None


async def code_was_issued(pool: asyncpg.Pool, code: str) -> bool:
    query = "SELECT 1 FROM checkout_attempts WHERE code = $1 LIMIT 1"
    return bool(await fetch(pool, query, code))


async def user_purchases(pool: asyncpg.Pool, sale_id: int, user_id: str) -> list[PurchaseRow]:
    rows = await fetch(
        pool,
        f"SELECT {PURCHASE_FIELDS} FROM purchases WHERE sale_id = $1 AND user_id = $2"
        " ORDER BY purchased_at, item_id",
        sale_id,
        user_id,
    )
    return [PurchaseRow(*r) for r in rows]


async def sold_items(pool: asyncpg.Pool, sale_id: int, first: int, count: int) -> set[int]:
    """The items of first..first+count-1 that are sold."""
    query = "SELECT item_id FROM purchases WHERE sale_id = $1 AND item_id BETWEEN $2 AND $3"
    return {r["item_id"] for r in await fetch(pool, query, sale_id, first, first + count - 1)}


async def sold_counts(pool: asyncpg.Pool, sale_ids: list[int]) -> dict[int, int]:
    """Items sold in each of these sales (absent: none)."""
    query = "SELECT sale_id, count(*) FROM purchases WHERE sale_id = ANY($1) GROUP BY sale_id"
    return {r["sale_id"]: r["count"] for r in await fetch(pool, query, sale_ids)}


async def first_run_ms(pool: asyncpg.Pool) -> int:
    """When this deployment first ran (sql/005), in Unix milliseconds."""
    [row] = await fetch(pool, "SELECT first_at FROM deployment")
    return int(row["first_at"].timestamp() * 1000)
