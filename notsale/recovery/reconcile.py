"""Rebuilding a sale's Redis state from PostgreSQL, and checking that the two agree.

Redis decides, but PostgreSQL remembers: if Redis loses a sale's keys (restart without
persistence, FLUSHDB), every purchase answered 200 is still in PostgreSQL. sale.lua refuses
checkouts and purchases of a sale whose "ready" key is missing or names another Redis
server than the one running the script (a restart that may have reloaded older data, a
failover to a lagging replica); one worker, holding the sale's lease, then rebuilds it from
PostgreSQL here (also done by `notsale reconcile`), while the others wait. The rebuild
makes Redis agree with PostgreSQL both ways: what PostgreSQL stored is sold, and what Redis
alone sold (PostgreSQL refused it) is free again, so no item is sold twice, none stays
unsellable, and no user is counted short or long.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import coredis
import msgspec
from coredis.tokens import PureToken

from notsale import metrics, outbox
from notsale.clock import KEEP_AFTER_SALE_MS, now_ms, sale_window
from notsale.config import Settings
from notsale.connections import REDIS_DOWN, Client
from notsale.errors import Failed, Unavailable
from notsale.keys import sale_keys
from notsale.store.flusher import PURCHASE_REFUSED, Flusher
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S
from notsale.store.terms import TermsBook

log = logging.getLogger(__name__)

# reconcile.lua and mark_ahead.lua, beside this file.
SCRIPTS = Path(__file__).parent
# Operations per reconcile.lua run: keeps each run (which blocks Redis) to a few milliseconds.
CHUNK_OPS = 500
# Fields per HSCAN call while reading what Redis holds of the sale.
SCAN_COUNT = 1000
# One worker's callers share one rebuild, which ends within this long; after a failed one
# they are refused at once for this long before the next try.
REBUILD_DEADLINE_S = 10.0
REBUILD_RETRY_S = 1.0
# One rebuild of a sale at a time, among all workers and hosts: the lease outlives a worker's
# rebuild deadline, so only a process that died leaves it to expire; the others poll it.
LEASE_MS = int(2 * REBUILD_DEADLINE_S * 1000)
LEASE_POLL_S = 0.05
# Ends the lease if it is still this rebuild's (a failed rebuild lets the next one start).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RebuildUnderWay(coredis.exceptions.RedisError):
    """Another process took the sale's lease over from this rebuild."""


def epoch_ms(at: dt.datetime) -> int:
    return round(at.timestamp() * 1000)


def bought_in(user_state: str) -> int:
    """A user's bought count in sale.lua's users hash ("bought[/seqs],holds...")."""
    return int(user_state.split(",", 1)[0].split("/", 1)[0])


class Difference(msgspec.Struct, frozen=True):
    what: str
    detail: str


class Reconciler:
    def __init__(
        self,
        redis: Client,
        pool: asyncpg.Pool,
        settings: Settings,
        terms: TermsBook | None = None,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._settings = settings
        self._terms = terms or TermsBook(pool, settings)
        self._script = redis.register_script((SCRIPTS / "reconcile.lua").read_text())
        self._ahead = redis.register_script((SCRIPTS / "mark_ahead.lua").read_text())
        self._release = redis.register_script(RELEASE)
        self._rebuilds: dict[int, asyncio.Future[None]] = {}
        self._failed_at: dict[int, float] = {}

    async def ensure_ready(self, sale_id: int) -> None:
        """Rebuild the sale (sale.lua found it unready). The callers of one worker share one
        rebuild, and one worker of all rebuilds a sale at a time (its lease in Redis): the
        others wait for it to end. After a failed one they are refused at once for
        REBUILD_RETRY_S, so a slow PostgreSQL is asked once, not once per caller."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._failed_at.get(sale_id, -REBUILD_RETRY_S) < REBUILD_RETRY_S:
            raise Unavailable(Failed.POSTGRES, "The sale is being prepared; retry.")
        rebuild = self._rebuilds.get(sale_id)
        if rebuild is None:
            rebuild = self._rebuilds[sale_id] = loop.create_task(self._prepare(sale_id))
            rebuild.add_done_callback(lambda _: self._rebuilds.pop(sale_id, None))
        await asyncio.shield(rebuild)

    async def _prepare(self, sale_id: int) -> None:
        try:
            async with asyncio.timeout(REBUILD_DEADLINE_S):
                restored = await self.rebuild(sale_id)
        except (*PG_DOWN, *REDIS_DOWN) as exc:
            # The sale cannot be known complete now: refuse, having changed nothing.
            self._failed_at[sale_id] = asyncio.get_running_loop().time()
            # Only Redis' own errors are surely Redis': a bare timeout may be either's, and
            # naming PostgreSQL then makes the attempt's row try Redis first (see outbox.py).
            redis_failed = isinstance(exc, coredis.exceptions.RedisError)
            failed = Failed.REDIS if redis_failed else Failed.POSTGRES
            raise Unavailable(failed, "The sale is being prepared; retry.") from exc
        self._failed_at.pop(sale_id, None)
        if restored:
            log.warning(
                "sale rebuilt from PostgreSQL",
                extra={"sale_id": sale_id, "purchases_restored": restored},
            )

    async def mark_ahead(self, sale_id: int) -> bool:
        """Mark a sale that has not started yet ready (see mark_ahead.lua); False once it has."""
        window = sale_window(sale_id, self._settings)  # not started: the settings are its terms
        args = [window.starts_ms, window.closes_ms + KEEP_AFTER_SALE_MS]
        return bool(await self._ahead(keys=[sale_keys(sale_id).ready], args=args))

    async def invalidate(self, sale_id: int) -> None:
        """Make the next checkout of the sale rebuild it (PostgreSQL refused what Redis
        decided: Redis lost writes)."""
        await self._redis.delete([sale_keys(sale_id).ready])

    async def drain(self, sale_id: int) -> int:
        """Write every entry still in the sale's outbox, whoever's it was. Returns how many.
        A sale without an outbox has nothing to write, and is not given one (nor a place in
        the registry: a made-up code of an old sale must not make the flushers read it)."""
        if not await self._redis.exists([outbox.stream(sale_id)]):
            return 0
        flusher = Flusher(
            self._redis,
            self._pool,
            self._settings,
            sale_ids=[sale_id],
            claim_idle_ms=0,
            terms=self._terms,
        )
        total = 0
        while written := await flusher.flush_once(block_ms=1):
            total += written
        return total

    async def rebuild(self, sale_id: int) -> int:
        """Make the sale's Redis state what PostgreSQL stored and mark it ready; returns the
        number of purchases Redis did not know. Under the sale's lease: when another process
        holds it, wait for its rebuild to end instead (returns 0)."""
        keys = sale_keys(sale_id)
        token = secrets.token_hex(8)
        if not await self._redis.set(keys.lease, token, px=LEASE_MS, condition=PureToken.NX):
            while True:
                await asyncio.sleep(LEASE_POLL_S)
                if not await self._redis.exists([keys.lease]):
                    return 0
        try:
            return await self._rebuild(sale_id, token)
        except BaseException:
            with contextlib.suppress(*REDIS_DOWN):
                await self._release(keys=[keys.lease], args=[token])
            raise

    async def _rebuild(self, sale_id: int, token: str) -> int:
        keys = sale_keys(sale_id)
        # Nothing decides on the sale from here on (sale.lua finds it unready): what Redis
        # decided before is in its outbox, written to PostgreSQL by the drain.
        await self._redis.delete([keys.ready])
        await self.drain(sale_id)
        rows = await self._pool.fetch(
            "SELECT item_id, user_id, code, purchased_at, user_seq FROM purchases"
            " WHERE sale_id = $1",
            sale_id,
            timeout=QUERY_TIMEOUT_S,
        )
        ops: list[list[int | str]] = [
            ["p", r["item_id"], r["user_id"], r["code"], epoch_ms(r["purchased_at"]), r["user_seq"]]
            for r in rows
        ]
        # What Redis holds beyond that: items it sold and codes it marked paid that
        # PostgreSQL refused or never got, users it counted purchases for.
        stored_items = {str(r["item_id"]) for r in rows}
        stored_codes = {r["code"] for r in rows}
        sold = await self._redis.hkeys(keys.sold)
        ops += [["f", item] for item in sold if item not in stored_items]
        seqs: dict[str, list[int]] = {}
        for r in rows:
            seqs.setdefault(r["user_id"], []).append(r["user_seq"])
        async for user, state in self._redis.hscan_iter(keys.users, count=SCAN_COUNT):
            if bought_in(state):
                seqs.setdefault(user, [])
        for user, taken in seqs.items():
            taken.sort()
            gapless = taken == list(range(1, len(taken) + 1))
            ops.append(["u", user, len(taken), "" if gapless else ".".join(map(str, taken))])
        async for code, record in self._redis.hscan_iter(keys.code, count=SCAN_COUNT):
            if record.split("\t")[3] != "0" and code not in stored_codes:
                ops.append(["x", code])
        terms = await self._terms.of(sale_id)
        expires = sale_window(sale_id, terms).closes_ms + KEEP_AFTER_SALE_MS
        if len(rows) >= terms.sale_size:  # sold out: closed now
            expires = now_ms() + KEEP_AFTER_SALE_MS
        restored = 0
        for start in range(0, max(len(ops), 1), CHUNK_OPS):
            chunk = ops[start : start + CHUNK_OPS]
            last = start + CHUNK_OPS >= len(ops)
            args: list[int | str] = [expires, token, int(last), terms.user_limit]
            args += [w for op in chunk for w in op]
            reply: Any = await self._script(keys=keys, args=args)
            if reply == ["lost"]:
                raise RebuildUnderWay(f"sale {sale_id}: the rebuild's lease was lost")
            restored += int(reply)
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
            in_redis = bought_in(users[user]) if user in users else 0
            if in_redis != bought[user]:
                found.append(
                    Difference("user_count", f"{user}: PostgreSQL {bought[user]}, Redis {in_redis}")
                )
        if pending:
            found.append(Difference("outbox", f"{pending} decisions not yet in PostgreSQL"))
        rejected = await self._pool.fetchval(
            "SELECT count(*) FROM outbox_rejects WHERE stream = $1 AND error NOT LIKE $2",
            keys.outbox,
            PURCHASE_REFUSED + "%",
            timeout=QUERY_TIMEOUT_S,
        )
        if rejected:
            found.append(
                Difference("rejected", f"{rejected} outbox entries kept in outbox_rejects")
            )
        return found
