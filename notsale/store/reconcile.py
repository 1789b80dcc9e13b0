"""Rebuilding a sale's Redis state from PostgreSQL, and checking that the two agree.

Redis decides, but PostgreSQL remembers: if Redis loses a sale's keys (restart without
persistence, FLUSHDB), every purchase answered 200 is still in PostgreSQL. sale.lua refuses
checkouts of a sale whose "ready" key is missing; the first worker to see that rebuilds
the sale from PostgreSQL here (also done by `notsale reconcile`), so no item is sold twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg
import coredis
import msgspec

from notsale.config import Settings
from notsale.engine.clock import sale_window
from notsale.engine.sale import KEEP_AFTER_SALE_MS, REDIS_DOWN, SCRIPTS_DIR, sale_keys
from notsale.errors import ErrorCode, NotsaleError
from notsale.store.flusher import Flusher
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S

log = logging.getLogger(__name__)

# Purchases per reconcile.lua run: keeps each run (which blocks Redis) to a few milliseconds.
CHUNK_PURCHASES = 500
SCRIPT = SCRIPTS_DIR / "reconcile.lua"


class Difference(msgspec.Struct, frozen=True):
    what: str
    detail: str


class Reconciler:
    def __init__(self, redis: coredis.Redis[str], pool: asyncpg.Pool, settings: Settings) -> None:
        self._redis = redis
        self._pool = pool
        self._settings = settings
        self._script = redis.register_script(SCRIPT.read_text())
        self._locks: dict[int, asyncio.Lock] = {}

    async def ensure_ready(self, sale_id: int) -> None:
        """Rebuild the sale unless it is marked ready; one rebuild at a time per sale."""
        lock = self._locks.setdefault(sale_id, asyncio.Lock())
        async with lock:
            try:
                if await self._redis.exists([sale_keys(sale_id).ready]):
                    return
                restored = await self.rebuild(sale_id)
            except (*PG_DOWN, *REDIS_DOWN) as exc:
                # The sale cannot be known complete now: refuse, having changed nothing.
                raise NotsaleError(ErrorCode.UNAVAILABLE) from exc
            if restored:
                log.warning(
                    "sale rebuilt from PostgreSQL",
                    extra={"sale_id": sale_id, "purchases_restored": restored},
                )

    async def drain(self, sale_id: int) -> int:
        """Write every entry still in the sale's outbox, whoever's it was. Returns how many."""
        flusher = Flusher(
            self._redis, self._pool, self._settings, sale_ids=[sale_id], claim_idle_ms=0
        )
        total = 0
        while written := await flusher.flush_once(block_ms=1):
            total += written
        return total

    async def rebuild(self, sale_id: int) -> int:
        """Replay the outbox, then restore the sale's purchases and user counts in Redis and
        mark it ready. Returns the number of purchases Redis did not know."""
        await self.drain(sale_id)
        rows = await self._pool.fetch(
            "SELECT item_id, user_id, code, purchased_at FROM purchases WHERE sale_id = $1",
            sale_id,
            timeout=QUERY_TIMEOUT_S,
        )
        ops: list[list[object]] = [
            [
                "p",
                r["item_id"],
                r["user_id"],
                r["code"],
                round(r["purchased_at"].timestamp() * 1000),
            ]
            for r in rows
        ]
        ops += [["u", user, n] for user, n in Counter(r["user_id"] for r in rows).items()]
        expires = sale_window(sale_id, self._settings.sale_seconds).ends_ms + KEEP_AFTER_SALE_MS
        restored = 0
        for start in range(0, max(len(ops), 1), CHUNK_PURCHASES):
            chunk = ops[start : start + CHUNK_PURCHASES]
            last = start + CHUNK_PURCHASES >= len(ops)
            args = [expires, "1" if last else "0", *(w for op in chunk for w in op)]
            restored += int(await self._script(keys=sale_keys(sale_id), args=args))
        return restored

    async def differences(self, sale_id: int) -> list[Difference]:
        """What Redis and PostgreSQL disagree on for a sale; changes nothing."""
        keys = sale_keys(sale_id)
        stored = {
            str(r["item_id"]): r["user_id"]
            for r in await self._pool.fetch(
                "SELECT item_id, user_id FROM purchases WHERE sale_id = $1",
                sale_id,
                timeout=QUERY_TIMEOUT_S,
            )
        }
        sold = await self._redis.hgetall(keys.sold)
        pending = await self._redis.xlen(keys.outbox)
        found: list[Difference] = []
        if len(stored) != len(sold):
            found.append(
                Difference(
                    "count", f"PostgreSQL has {len(stored)} purchases, Redis {len(sold)} sold items"
                )
            )
        for item in sorted(stored.keys() - sold.keys(), key=int):
            found.append(Difference("missing_in_redis", f"item {item} (bought by {stored[item]})"))
        for item in sorted(sold.keys() - stored.keys(), key=int):
            found.append(Difference("missing_in_postgres", f"item {item} (sold to {sold[item]})"))
        for item in sorted(stored.keys() & sold.keys(), key=int):
            if stored[item] != sold[item]:
                found.append(
                    Difference(
                        "buyer", f"item {item}: PostgreSQL says {stored[item]}, Redis {sold[item]}"
                    )
                )
        bought = Counter(stored.values())
        users = await self._redis.hgetall(keys.users)
        for user in sorted(bought.keys() | users.keys()):
            in_redis = int(users[user].split(",", 1)[0]) if user in users else 0
            if in_redis != bought[user]:
                found.append(
                    Difference("user_count", f"{user}: PostgreSQL {bought[user]}, Redis {in_redis}")
                )
        if pending:
            found.append(Difference("outbox", f"{pending} decisions not yet in PostgreSQL"))
        rejected = await self._pool.fetchval(
            "SELECT count(*) FROM outbox_rejects WHERE stream = $1",
            keys.outbox,
            timeout=QUERY_TIMEOUT_S,
        )
        if rejected:
            found.append(
                Difference("rejected", f"{rejected} outbox entries kept in outbox_rejects")
            )
        return found
