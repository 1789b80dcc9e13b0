"""The sale engine: every decision is one Lua script run in Redis, on Redis' clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from notsale import metrics
from notsale.clock import KEEP_AFTER_SALE_MS, current_sale, now_ms, sale_window
from notsale.config import Settings, Terms
from notsale.connections import REDIS_DOWN, Client
from notsale.engine.batch import Batcher, Sender
from notsale.engine.codes import new_code
from notsale.engine.lane import Lane
from notsale.errors import ErrorCode, Failed, Unavailable
from notsale.keys import HOLDS_PREFIX, OUTBOX_REGISTRY, holds_key, queue_keys, sale_keys

SCRIPTS_DIR = Path(__file__).parent

# Past this share of Redis' maxmemory, checkouts are refused before anything is decided
# (503): a flood of junk while PostgreSQL is away fills the outbox with rows, and Redis would
# otherwise refuse every write (OOM) once full, decisions included.
MEMORY_HIGH = 0.9
# Redis' memory, as the node holding a sale's keys sees it (on a cluster, its master).
MEMORY = """
local info = redis.call('INFO', 'memory')
return {tonumber(string.match(info, 'used_memory:(%d+)')),
        tonumber(string.match(info, 'maxmemory:(%d+)'))}
"""

# A user's live holds across all open sales (keys.holds_key), on Redis' clock. On a single
# Redis sale.lua reads and writes them as it decides. On a cluster they are in another slot:
# read when sale.lua is about to make a new hold (their count in the other sales caps it),
# added to after a hold is made (as sale.lua's ledger_add does), taken from when bought.
HOLDS_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
"""
HOLDS_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or now + ttl < tonumber(ARGV[1]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
"""

# A checkout may meet a sale rollover, an unready sale and its user's ledger unread before
# it is decided.
CHECKOUT_TRIES = 4


def script_keys(sale_id: int) -> list[str]:
    """sale.lua's KEYS."""
    return [*sale_keys(sale_id), queue_keys(sale_id).active]


class CheckoutDecision(msgspec.Struct, frozen=True):
    outcome: ErrorCode | None  # None = ok
    sale_id: int
    code: str
    expires_ms: int


class PurchaseDecision(msgspec.Struct, frozen=True):
    outcome: ErrorCode | None  # None = ok
    item_id: int = 0
    user_id: str = ""
    purchased_ms: int = 0
    seq: int = 0


class SaleEngine:
    """Runs the sale's Lua scripts. The one place that talks to Redis about a sale."""

    def __init__(
        self,
        redis: Client,
        settings: Settings,
        prepare: Callable[[int], Awaitable[None]] | None = None,
        through: Callable[[Sender], Sender] | None = None,
        terms: Callable[[int], Awaitable[Terms]] | None = None,
    ) -> None:
        """`prepare(sale_id)` makes a sale ready when sale.lua finds it unready (a new sale,
        or Redis lost data): see recovery/reconcile.py. `through`, a seam for tests: wraps
        what carries each batch to Redis (`send_ops`). `terms(sale_id)`: the sale's terms,
        fixed when it started (store/terms.py; default: the settings)."""
        self.redis = redis
        self.settings = settings
        self._prepare = prepare
        self._terms = terms
        # The scripts run over a connection of their own on a single Redis (lane.py).
        self._lane = Lane.of(redis)
        self.sale_script = redis.register_script((SCRIPTS_DIR / "sale.lua").read_text())
        self._read = redis.register_script((SCRIPTS_DIR / "read.lua").read_text())
        self._memory = redis.register_script(MEMORY)
        self._holds_live = redis.register_script(HOLDS_LIVE)
        self._holds_add = redis.register_script(HOLDS_ADD)
        self._batcher = Batcher(self.send_ops if through is None else through(self.send_ops))
        # Request ids: unique per worker start (72 random bits), then a counter.
        self._request_prefix = secrets.token_urlsafe(9)
        self._requests = itertools.count(1)
        self._registered: set[int] = set()  # sales whose outbox this worker has registered
        # Entries waiting for PostgreSQL in every sale's outbox, and whether Redis is near its
        # maxmemory, as last measured (watch.py): past NOTSALE_OUTBOX_MAX in all, or past
        # MEMORY_HIGH, checkouts are refused before anything is decided.
        self.waiting = 0
        self.memory_high = False

    def close(self) -> None:
        if self._lane is not None:
            self._lane.close()

    def new_request_id(self) -> str:
        return f"{self._request_prefix}.{next(self._requests)}"

    async def _run(self, script: Any, keys: Sequence[str], args: list[Any]) -> list[Any]:
        """A script run, exactly once: any failure is 503, and it is never sent again."""
        try:
            if self._lane is not None:
                return list(await self._lane.evalsha(script.sha, script.script, keys, args))
            return list(await script(keys=keys, args=args))
        except REDIS_DOWN as exc:
            raise Unavailable(Failed.REDIS) from exc

    async def terms(self, sale_id: int) -> Terms:
        return self.settings.terms() if self._terms is None else await self._terms(sale_id)

    def head(self, sale_id: int, terms: Terms) -> list[int | str]:
        """sale.lua's ARGV before the operations (its header says what each is)."""
        s, t = self.settings, terms
        head: list[int | str] = [sale_id, t.sale_seconds * 1000, t.sale_open_seconds * 1000]
        head += [t.sale_size, t.hold_seconds * 1000, t.user_limit, KEEP_AFTER_SALE_MS]
        ledger = "" if self._lane is None else HOLDS_PREFIX  # the lane: a single Redis
        queueing = "1" if s.admission == "queue" else ""
        return [*head, s.outbox_max, s.cooldown_seconds * 1000, s.holds_max, ledger, queueing]

    async def register(self, sale_id: int) -> None:
        """Before a sale's first entry from this worker: the flushers find every outbox in
        the registry. Only checkouts (of an open sale, or the running one's log) register a
        sale; a purchase needs a hold, whose checkout registered its sale. So no request can
        make the flushers read a sale nobody checked out in."""
        if sale_id not in self._registered:
            try:
                await self.redis.sadd(OUTBOX_REGISTRY, [str(sale_id)])
            except REDIS_DOWN as exc:
                raise Unavailable(Failed.REDIS) from exc
            self._registered.add(sale_id)

    async def send_ops(self, sale_id: int, ops: list[Any]) -> list[Any]:
        """One sale.lua run carrying a batch of operations (see batch.py)."""
        started = time.perf_counter()
        head = self.head(sale_id, await self.terms(sale_id))
        replies = await self._run(self.sale_script, script_keys(sale_id), [*head, *ops])
        metrics.batch(len(replies), time.perf_counter() - started)
        return replies

    async def checkout(
        self,
        user_id: str,
        item_id: int,
        request_id: str | None = None,
        sale_id: int | None = None,
        network: str | None = None,
    ) -> CheckoutDecision:
        """An item of `sale_id` (default: the running sale, on Redis' clock). `request_id`
        keys the attempt's row (default: a new one); `network`, the client's, is logged
        with it."""
        request_id = request_id or self.new_request_id()
        if self.waiting >= self.settings.outbox_max or self.memory_high:
            raise Unavailable(Failed.BACKLOG, "Too many decisions wait for PostgreSQL; retry.")
        named = "0" if sale_id is None else "1"
        if sale_id is None:
            sale_id = current_sale(self.settings.sale_seconds)
        # The user's live holds, sale:item -> expires_ms, once their ledger is read.
        held: dict[str, int] | None = None
        for _ in range(CHECKOUT_TRIES):
            await self.register(sale_id)
            code = new_code(sale_id)
            others: int | str = "?"
            if held is not None:
                others = sum(1 for hold in held if not hold.startswith(f"{sale_id}:"))
            op = ["c", request_id, item_id, user_id, code, named, others, network or ""]
            reply = await self._batcher.submit(sale_id, op)
            if reply[0] == "wrong_sale":
                # This worker's clock and Redis' disagree on which sale runs: Redis' wins.
                sale_id = int(reply[1])
            elif reply[0] == "unready":
                if self._prepare is None:
                    break
                await self._prepare(sale_id)
            elif reply[0] == "backlog":
                raise Unavailable(Failed.BACKLOG, "Too many decisions wait for PostgreSQL; retry.")
            elif reply[0] == "ledger":
                live = await self._run(self._holds_live, [holds_key(user_id)], [])
                held = dict(zip(live[::2], (int(float(ms)) for ms in live[1::2]), strict=True))
            elif reply[0] == "ok":
                if held is not None:  # a cluster's ledger, read for this hold
                    await self._add_hold(user_id, f"{sale_id}:{item_id}", int(reply[2]))
                return CheckoutDecision(None, sale_id, reply[1], int(reply[2]))
            elif reply[0] == "holds_max":  # expires_ms: when the first of them expires
                known = [ms for ms in (int(reply[2]), *(held or {}).values()) if ms]
                first = min(known, default=now_ms() + 1000)
                return CheckoutDecision(ErrorCode.HOLDS_MAX, sale_id, "", first)
            else:
                return CheckoutDecision(ErrorCode(reply[0]), sale_id, reply[1], int(reply[2]))
        raise Unavailable(Failed.REDIS, "The sale is being prepared; retry.")

    async def _add_hold(self, user_id: str, hold: str, expires_ms: int) -> None:
        """Into the user's ledger of holds (again, for a hold asked for twice: the same).
        The hold is made whatever happens here: a ledger Redis did not write counts it
        nowhere, and the user may hold one more elsewhere until it expires."""
        with contextlib.suppress(*REDIS_DOWN):
            await self._holds_add(keys=[holds_key(user_id)], args=[expires_ms, hold])

    async def purchase(self, sale_id: int, code: str) -> PurchaseDecision:
        reply = await self._batcher.submit(sale_id, ["p", code])
        if reply[0] == "unready" and self._prepare is not None:
            await self._prepare(sale_id)
            reply = await self._batcher.submit(sale_id, ["p", code])
        if reply[0] == "unready":
            raise Unavailable(Failed.REDIS, "The sale is being prepared; retry.")
        if reply[0] != "ok":
            return PurchaseDecision(ErrorCode(reply[0]))
        if self._lane is None:  # a cluster's ledger: bought, no longer a hold
            with contextlib.suppress(*REDIS_DOWN):
                await self.redis.zrem(holds_key(reply[2]), [f"{sale_id}:{reply[1]}"])
        return PurchaseDecision(None, int(reply[1]), reply[2], int(reply[3]), int(reply[4]))

    async def log(self, sale_id: int, entry: bytes) -> bool:
        """Append an entry to the sale's outbox; False when the outbox is full, or Redis
        near its maxmemory (the row is then the caller's to keep)."""
        if self.memory_high:
            return False
        await self.register(sale_id)
        reply = await self._batcher.submit(sale_id, ["r", entry])
        return bool(reply[0] == "ok")

    async def read(self, sale_id: int, first: int | str = "", count: int = 1) -> list[Any] | None:
        """read.lua: the sale's (sold, held) counts, or the statuses of `count` items from
        `first`; None when Redis does not hold the sale complete (reads never rebuild a
        sale: PostgreSQL answers them instead)."""
        keys = sale_keys(sale_id)
        reply = await self._run(
            self._read, [keys.hold, keys.hexp, keys.sold, keys.ready], [first, count]
        )
        return None if reply == ["unready"] else reply

    async def register_again(self) -> None:
        """Write this worker's entries of the outbox registry again, for its sales still open:
        a Redis that lost them (a rollback; on a cluster, a failover of the registry's own
        master, which may not hold the sale) would leave their outboxes unread."""
        now = now_ms()
        self._registered = {
            s for s in self._registered if sale_window(s, await self.terms(s)).closes_ms > now
        }
        if self._registered:
            try:
                await self.redis.sadd(OUTBOX_REGISTRY, [str(s) for s in self._registered])
            except REDIS_DOWN as exc:
                raise Unavailable(Failed.REDIS) from exc

    async def registered(self) -> list[int]:
        """The sales with an outbox: every sale a decision was ever logged for (until its
        stream is cleaned up after its close). Redis knows no other sale's state."""
        try:
            members = await self.redis.smembers(OUTBOX_REGISTRY)
        except REDIS_DOWN as exc:
            raise Unavailable(Failed.REDIS) from exc
        return sorted(int(m) for m in members if m.isdigit())

    async def backlogs(self) -> dict[int, int]:
        """Entries waiting in each registered sale's outbox (written entries are deleted);
        their sum is kept as `waiting`, and whether the running sale's Redis nears its
        maxmemory as `memory_high`."""
        sales = await self.registered()
        running = sale_keys(current_sale(self.settings.sale_seconds)).outbox
        try:
            lengths = await asyncio.gather(*(self.redis.xlen(sale_keys(s).outbox) for s in sales))
            used, most = await self._run(self._memory, [running], [])
        except REDIS_DOWN as exc:
            raise Unavailable(Failed.REDIS) from exc
        self.waiting = sum(lengths)
        self.memory_high = most > 0 and used >= MEMORY_HIGH * most
        return dict(zip(sales, lengths, strict=True))
