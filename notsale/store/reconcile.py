"""Rebuilding a sale's Redis state from PostgreSQL, and checking that the two agree.

Redis decides, but PostgreSQL remembers: if Redis loses a sale's keys (restart without
persistence, FLUSHDB), every purchase answered 200 is still in PostgreSQL. sale.lua refuses
checkouts of a sale whose "ready" key is missing or names another Redis server (a restart
that may have reloaded older data, a failover to a lagging replica); the first worker to see
that rebuilds the sale from PostgreSQL here (also done by `notsale reconcile`), so no item
is sold twice and no user counted short.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg
import coredis
import msgspec

from notsale import metrics
from notsale.config import Settings
from notsale.engine.client import REDIS_DOWN, Client
from notsale.engine.clock import now_ms, sale_window
from notsale.engine.keys import sale_keys
from notsale.engine.sale import KEEP_AFTER_SALE_MS, SCRIPTS_DIR
from notsale.errors import Store, Unavailable
from notsale.store.flusher import Flusher
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S

log = logging.getLogger(__name__)

# Purchases per reconcile.lua run: keeps each run (which blocks Redis) to a few milliseconds.
CHUNK_PURCHASES = 500
# One worker's callers share one rebuild, which ends within this long; after a failed one
# they are refused at once for this long before the next try.
REBUILD_DEADLINE_S = 10.0
REBUILD_RETRY_S = 1.0


class Difference(msgspec.Struct, frozen=True):
    what: str
    detail: str


class Reconciler:
    def __init__(self, redis: Client, pool: asyncpg.Pool, settings: Settings) -> None:
        self._redis = redis
        self._pool = pool
        self._settings = settings
        self._script = redis.register_script((SCRIPTS_DIR / "reconcile.lua").read_text())
        self._ahead = redis.register_script((SCRIPTS_DIR / "ahead.lua").read_text())
        self._rebuilds: dict[int, asyncio.Future[None]] = {}
        self._failed_at: dict[int, float] = {}

    async def ensure_ready(self, sale_id: int, server: str) -> None:
        """Rebuild the sale unless it is marked ready under this Redis server id. The callers
        of one worker share one rebuild; after a failed one they are refused at once for
        REBUILD_RETRY_S, so a slow PostgreSQL is asked once, not once per caller."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._failed_at.get(sale_id, -REBUILD_RETRY_S) < REBUILD_RETRY_S:
            raise Unavailable(Store.POSTGRES, "The sale is being prepared; retry.")
        rebuild = self._rebuilds.get(sale_id)
        if rebuild is None:
            rebuild = self._rebuilds[sale_id] = loop.create_task(self._prepare(sale_id, server))
            rebuild.add_done_callback(lambda _: self._rebuilds.pop(sale_id, None))
        await asyncio.shield(rebuild)

    async def _prepare(self, sale_id: int, server: str) -> None:
        try:
            async with asyncio.timeout(REBUILD_DEADLINE_S):
                if await self._redis.get(sale_keys(sale_id).ready) == server:
                    return
                restored = await self.rebuild(sale_id, server)
        except (*PG_DOWN, *REDIS_DOWN) as exc:
            # The sale cannot be known complete now: refuse, having changed nothing.
            self._failed_at[sale_id] = asyncio.get_running_loop().time()
            # Only Redis' own errors are surely Redis': a bare timeout may be either's, and
            # naming PostgreSQL then makes the attempt's row try Redis first (see outbox.py).
            redis_failed = isinstance(exc, coredis.exceptions.RedisError)
            store = Store.REDIS if redis_failed else Store.POSTGRES
            raise Unavailable(store, "The sale is being prepared; retry.") from exc
        self._failed_at.pop(sale_id, None)
        if restored:
            log.warning(
                "sale rebuilt from PostgreSQL",
                extra={"sale_id": sale_id, "purchases_restored": restored},
            )

    async def mark_ahead(self, sale_id: int, server: str) -> bool:
        """Mark a sale that has not started yet ready (see ahead.lua); False once it has."""
        window = sale_window(sale_id, self._settings)
        args: list[int | str] = [window.starts_ms, server, window.closes_ms + KEEP_AFTER_SALE_MS]
        return bool(await self._ahead(keys=[sale_keys(sale_id).ready], args=args))

    async def invalidate(self, sale_id: int) -> None:
        """Make the next checkout of the sale rebuild it (PostgreSQL refused what Redis
        decided: Redis lost writes)."""
        await self._redis.delete([sale_keys(sale_id).ready])

    async def drain(self, sale_id: int) -> int:
        """Write every entry still in the sale's outbox, whoever's it was. Returns how many."""
        flusher = Flusher(
            self._redis, self._pool, self._settings, sale_ids=[sale_id], claim_idle_ms=0
        )
        total = 0
        while written := await flusher.flush_once(block_ms=1):
            total += written
        return total

    async def rebuild(self, sale_id: int, server: str) -> int:
        """Replay the outbox, then restore the sale's purchases and user counts in Redis and
        mark it ready under `server`. Returns the number of purchases Redis did not know."""
        await self.drain(sale_id)
        rows = await self._pool.fetch(
            "SELECT item_id, user_id, code, purchased_at, user_seq FROM purchases"
            " WHERE sale_id = $1",
            sale_id,
            timeout=QUERY_TIMEOUT_S,
        )
        ops: list[list[int | str]] = [
            [
                "p",
                r["item_id"],
                r["user_id"],
                r["code"],
                round(r["purchased_at"].timestamp() * 1000),
                r["user_seq"],
            ]
            for r in rows
        ]
        # A user's count is their highest seq: after a lost purchase it is above the number
        # of rows, and counting from there never reuses a seq PostgreSQL has (sql/003).
        highest: dict[str, int] = {}
        for r in rows:
            highest[r["user_id"]] = max(highest.get(r["user_id"], 0), r["user_seq"])
        ops += [["u", user, n] for user, n in highest.items()]
        expires = sale_window(sale_id, self._settings).closes_ms + KEEP_AFTER_SALE_MS
        if len(rows) >= self._settings.sale_size:  # sold out: closed now
            expires = now_ms() + KEEP_AFTER_SALE_MS
        restored = 0
        for start in range(0, max(len(ops), 1), CHUNK_PURCHASES):
            chunk = ops[start : start + CHUNK_PURCHASES]
            last = start + CHUNK_PURCHASES >= len(ops)
            args: list[int | str] = [expires, server if last else ""]
            args += [w for op in chunk for w in op]
            restored += int(await self._script(keys=sale_keys(sale_id), args=args))
        metrics.REBUILDS.inc()
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
