"""The sale engine: every decision is one Lua script run in Redis, on Redis' clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import coredis
import msgspec

from notsale.config import Settings
from notsale.engine.batch import Batcher
from notsale.engine.clock import current_sale, now_ms
from notsale.engine.codes import new_code
from notsale.errors import ErrorCode, NotsaleError

SCRIPTS_DIR = Path(__file__).parent

# Keys outlive their sale by this long, so a late purchase retry is still answered from Redis;
# after that PostgreSQL answers it, and Redis memory does not grow sale after sale.
KEEP_AFTER_SALE_MS = 3_600_000

# A checkout may meet a sale rollover and an unready sale before it is decided.
CHECKOUT_TRIES = 3

# Raw values of a rejected request are stored cut to these lengths (they can be anything).
RAW_VALUE_CHARS = 128
RAW_QUERY_CHARS = 1024

# Redis and its clients' errors that mean "cannot reach Redis now", answered 503.
REDIS_DOWN = (coredis.exceptions.ConnectionError, TimeoutError, OSError)


class SaleKeys(NamedTuple):
    """The keys of one sale, in the KEYS order of sale.lua (its header says what each holds)."""

    hold: str
    hexp: str
    sold: str
    code: str
    users: str
    outbox: str
    ready: str


def sale_keys(sale_id: int) -> SaleKeys:
    """All under the hash tag {sale:<id>}, so that one sale's keys share a cluster slot."""
    return SaleKeys(*(f"{{sale:{sale_id}}}:{name}" for name in SaleKeys._fields))


class OutboxEvent(msgspec.Struct, array_like=True, frozen=True):
    """One outbox entry, as sale.lua writes it (a JSON array in the entry's field "e")."""

    kind: str  # "c" checkout attempt, "p" purchase
    user: str
    item: str
    outcome: str
    code: str
    time_ms: str
    query: str | None = None  # the raw query string of a malformed request


EVENT_ENCODER = msgspec.json.Encoder()
EVENT_DECODER = msgspec.json.Decoder(OutboxEvent)


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


class SaleEngine:
    """Runs the sale's Lua scripts. The one place that talks to Redis about a sale."""

    def __init__(
        self,
        redis: coredis.Redis[str],
        settings: Settings,
        prepare: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """`prepare(sale_id)` makes a sale ready when sale.lua finds it unready (a new sale,
        or Redis lost its data): see store/reconcile.py."""
        self.redis = redis
        self.settings = settings
        self._prepare = prepare
        self._sale = redis.register_script((SCRIPTS_DIR / "sale.lua").read_text())
        self._stats = redis.register_script((SCRIPTS_DIR / "stats.lua").read_text())
        self._batcher = Batcher(self._send)

    async def _run(self, script: Any, keys: Sequence[str], args: list[Any]) -> list[Any]:
        try:
            return list(await script(keys=keys, args=args))
        except REDIS_DOWN as exc:
            raise NotsaleError(ErrorCode.UNAVAILABLE) from exc

    async def _send(self, sale_id: int, ops: list[Any]) -> list[Any]:
        """One sale.lua run carrying a batch of operations (see batch.py)."""
        s = self.settings
        head = [sale_id, s.sale_seconds * 1000, s.hold_seconds * 1000, s.user_limit]
        return await self._run(self._sale, sale_keys(sale_id), [*head, KEEP_AFTER_SALE_MS, *ops])

    async def checkout(self, user_id: str, item_id: int) -> CheckoutDecision:
        sale_id = current_sale(self.settings.sale_seconds)
        for _ in range(CHECKOUT_TRIES):
            code = new_code(sale_id)
            reply = await self._batcher.submit(sale_id, ["c", item_id, user_id, code])
            if reply[0] == "wrong_sale":
                # This worker's clock and Redis' disagree on which sale runs: Redis' wins.
                sale_id = int(reply[1])
            elif reply[0] == "unready":
                if self._prepare is None:
                    break
                await self._prepare(sale_id)
            else:
                outcome = None if reply[0] == "ok" else ErrorCode(reply[0])
                return CheckoutDecision(outcome, sale_id, reply[1], int(reply[2]))
        raise NotsaleError(ErrorCode.UNAVAILABLE, "The sale is being prepared; retry.")

    async def purchase(self, sale_id: int, code: str) -> PurchaseDecision:
        reply = await self._batcher.submit(sale_id, ["p", code])
        if reply[0] != "ok":
            return PurchaseDecision(ErrorCode(reply[0]))
        return PurchaseDecision(None, int(reply[1]), reply[2], int(reply[3]))

    async def _stats_of(self, sale_id: int, item: int | str) -> list[Any]:
        k = sale_keys(sale_id)
        keys = [k.hold, k.hexp, k.sold, k.ready]
        reply = await self._run(self._stats, keys, [item])
        if reply[0] == "unready" and self._prepare is not None:
            await self._prepare(sale_id)  # Redis lost the sale: read it once rebuilt
            reply = await self._run(self._stats, keys, [item])
        if reply[0] == "unready":
            raise NotsaleError(ErrorCode.UNAVAILABLE, "The sale is being prepared; retry.")
        return reply

    async def counts(self, sale_id: int) -> tuple[int, int]:
        """(sold, held) of a sale."""
        sold, held = await self._stats_of(sale_id, "")
        return int(sold), int(held)

    async def item_status(self, sale_id: int, item_id: int) -> str:
        return str((await self._stats_of(sale_id, item_id))[0])

    async def record(self, sale_id: int, event: OutboxEvent) -> None:
        """Log a checkout refused before Redis was asked (bad input) as sale.lua logs its own."""
        try:
            await self.redis.xadd(sale_keys(sale_id).outbox, {"e": EVENT_ENCODER.encode(event)})
        except REDIS_DOWN as exc:
            raise NotsaleError(ErrorCode.UNAVAILABLE) from exc


def refused_event(outcome: ErrorCode, user_raw: str, item_raw: str, query: str) -> OutboxEvent:
    """The outbox entry of a checkout refused in Python, its raw values cut to bounded length."""
    return OutboxEvent(
        "c",
        user_raw[:RAW_VALUE_CHARS],
        item_raw[:RAW_VALUE_CHARS],
        outcome.value,
        "",
        str(now_ms()),
        query[:RAW_QUERY_CHARS],
    )
