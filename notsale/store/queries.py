"""The reads PostgreSQL answers: purchases that outlived Redis' keys, and users' lists."""

from __future__ import annotations

import asyncpg

from notsale.store.pool import QUERY_TIMEOUT_S
from notsale.store.rows import PurchaseRow

PURCHASE_FIELDS = "sale_id, item_id, user_id, code, purchased_at"


async def purchase_by_code(pool: asyncpg.Pool, code: str) -> PurchaseRow | None:
    row = await pool.fetchrow(
        f"SELECT {PURCHASE_FIELDS} FROM purchases WHERE code = $1", code, timeout=QUERY_TIMEOUT_S
    )
    return None if row is None else PurchaseRow(*row)


async def code_was_issued(pool: asyncpg.Pool, code: str) -> bool:
    found = await pool.fetchval(
        "SELECT 1 FROM checkout_attempts WHERE code = $1 LIMIT 1", code, timeout=QUERY_TIMEOUT_S
    )
    return found is not None


async def user_purchases(pool: asyncpg.Pool, sale_id: int, user_id: str) -> list[PurchaseRow]:
    rows = await pool.fetch(
        f"SELECT {PURCHASE_FIELDS} FROM purchases WHERE sale_id = $1 AND user_id = $2"
        " ORDER BY purchased_at, item_id",
        sale_id,
        user_id,
        timeout=QUERY_TIMEOUT_S,
    )
    return [PurchaseRow(*r) for r in rows]


async def item_is_sold(pool: asyncpg.Pool, sale_id: int, item_id: int) -> bool:
    found = await pool.fetchval(
        "SELECT 1 FROM purchases WHERE sale_id = $1 AND item_id = $2",
        sale_id,
        item_id,
        timeout=QUERY_TIMEOUT_S,
    )
    return found is not None
