"""A sale's terms (size, user limit, hold time, open window) are fixed when it starts: the
first worker to use a started sale writes the settings it runs with to `sale_terms`
(sql/010), and every worker reads them from there ever after, whatever its own settings say.
A restart with other settings changes only the sales that start later.

PostgreSQL is the one record. Redis keeps no copy: each script run gets its sale's terms
from the worker (sale.lua's ARGV), and Redis state is rebuilt from PostgreSQL anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg

from notsale.clock import current_sale
from notsale.config import Settings, Terms
from notsale.store.pool import ACQUIRE_TIMEOUT_S, PG_DOWN, QUERY_TIMEOUT_S

FIELDS = "sale_size, user_limit, hold_seconds, sale_open_seconds"
# Fix the terms of sales that have none yet (the settings this worker runs with), and read
# every asked sale's: whichever worker wrote a sale's row first, all read the same. (The
# outer SELECT sees the table as it was when the statement began, hence the RETURNING.)
FIX_AND_READ = f"""
WITH fixed AS (
  INSERT INTO sale_terms (sale_id, {FIELDS})
  SELECT unnest($1::bigint[]), $2, $3, $4, $5
  ON CONFLICT (sale_id) DO NOTHING
  RETURNING sale_id, {FIELDS}
)
SELECT * FROM fixed
UNION ALL
SELECT sale_id, {FIELDS} FROM sale_terms WHERE sale_id = ANY($1)
"""
READ = f"SELECT sale_id, {FIELDS} FROM sale_terms WHERE sale_id = ANY($1)"
# PostgreSQL answers a fixing in about a millisecond. A use of a sale waits for it at most
# this long, then goes on with this worker's settings (the fixing goes on meanwhile), and
# after PostgreSQL failed to answer it is not asked again for RETRY_AFTER_S: while it is
# down, a sale not fixed yet still sells, its checkouts slowed by at most TERMS_WAIT_S.
TERMS_WAIT_S = 0.1
RETRY_AFTER_S = 5.0
# A started sale that a read found without terms (no worker used it yet) is told the
# settings, and PostgreSQL is asked about it again only this much later: pages and made-up
# purchase codes of such a sale cost PostgreSQL a query a second per worker, not one each.
UNFIXED_S = 1.0
UNFIXED_MAX = 10_000


class TermsBook:
    """One worker's memory of the sales' terms. Fixed terms never change, so once read they
    are kept. While PostgreSQL cannot answer, a sale not read yet gets this worker's
    settings, not kept: its terms are fixed when PostgreSQL is back."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._known: dict[int, Terms] = {}
        # The one fixing under way per sale: a new sale's first checkouts, arriving all at
        # once, share it.
        self._fixing: dict[int, asyncio.Future[dict[int, Terms]]] = {}
        self._down_until = 0.0
        self._unfixed_until: dict[int, float] = {}

    async def of(self, sale_id: int, fix: bool = True) -> Terms:
        """A sale's terms. `fix`: a sale that has started gets them now if it has none yet
        (what uses a sale: a checkout, a rebuild); else (what only reads: a page, a made-up
        purchase code) such a sale is told the settings, and nothing is written."""
        known = self._known.get(sale_id)
        if known is not None:
            return known
        if not fix:
            return (await self.of_many([sale_id], fix=False))[sale_id]
        fixing = self._fixing.get(sale_id)
        if fixing is None:
            fixing = self._fixing[sale_id] = asyncio.ensure_future(self.of_many([sale_id]))
            fixing.add_done_callback(lambda _: self._fixing.pop(sale_id, None))
        try:
            return (await asyncio.wait_for(asyncio.shield(fixing), TERMS_WAIT_S))[sale_id]
        except TimeoutError:
            return self._settings.terms()

    async def of_many(self, sale_ids: Iterable[int], fix: bool = True) -> dict[int, Terms]:
        wanted = set(sale_ids)
        found = {s: self._known[s] for s in wanted if s in self._known}
        missing = sorted(wanted - found.keys())
        now = self._settings.terms()
        # Only a started sale is fixed: one not started yet (a future sale made ready ahead
        # of its start) takes the settings it will start with.
        asked_at = time.monotonic()
        started = [
            s
            for s in missing
            if s <= current_sale(now.sale_seconds)
            and (fix or self._unfixed_until.get(s, 0.0) <= asked_at)
        ]
        rows: list[asyncpg.Record] = []
        if started and asked_at >= self._down_until:
            fixing = (now.sale_size, now.user_limit, now.hold_seconds, now.sale_open_seconds)
            query, args = (FIX_AND_READ, fixing) if fix else (READ, ())
            try:
                async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                    rows = await conn.fetch(query, started, *args, timeout=QUERY_TIMEOUT_S)
            except PG_DOWN:
                self._down_until = time.monotonic() + RETRY_AFTER_S
            for row in rows:
                fixed = {name: row[name] for name in FIELDS.split(", ")}
                terms = Terms(sale_seconds=now.sale_seconds, **fixed)
                self._known[row["sale_id"]] = found[row["sale_id"]] = terms
            if not fix and asked_at >= self._down_until:
                if len(self._unfixed_until) > UNFIXED_MAX:
                    self._unfixed_until.clear()
                for sale in started:
                    if sale not in found:
                        self._unfixed_until[sale] = asked_at + UNFIXED_S
        return {s: found.get(s, now) for s in wanted}
