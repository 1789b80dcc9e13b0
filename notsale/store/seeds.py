"""Each sale's queue seed (sql/011): drawn by the first worker that opens the sale's queue,
read by every other from PostgreSQL, kept in memory after that (a seed never changes)."""

from __future__ import annotations

import asyncpg

from notsale.admission import new_seed
from notsale.errors import Failed, Unavailable
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S

# Whichever worker's seed was written first is the sale's (see store/terms.py's FIX_AND_READ).
DRAW_AND_READ = """
WITH drawn AS (
  INSERT INTO queue_seeds (sale_id, seed) VALUES ($1, $2)
  ON CONFLICT (sale_id) DO NOTHING
  RETURNING seed
)
SELECT seed FROM drawn
UNION ALL
SELECT seed FROM queue_seeds WHERE sale_id = $1
"""


class SeedBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._known: dict[int, str] = {}

    async def of(self, sale_id: int) -> str:
        known = self._known.get(sale_id)
        if known is None:
            try:
                known = await self._pool.fetchval(
                    DRAW_AND_READ, sale_id, new_seed(), timeout=QUERY_TIMEOUT_S
                )
            except PG_DOWN as exc:
                raise Unavailable(Failed.POSTGRES) from exc
            self._known[sale_id] = known
        return known
