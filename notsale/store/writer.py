"""Group commit: purchases (and attempts that cannot go through Redis) share one transaction.

A request hands its row over and awaits the commit that carries it. The writer starts a
batch as soon as a row is waiting, so a lone purchase is written at once; rows arriving while
a batch is being committed ride together in the next one. Durability costs latency, not
throughput.

Why the worker writes its own purchases instead of waiting for the outbox flusher: the
flusher reads the stream through a consumer group, which hands each entry to whichever
worker asks first, so the worker holding the HTTP request could not tell when its row was
committed. The outbox still carries every purchase, as the recovery log: if this worker dies
between Redis' decision and the commit, another worker's flusher writes the row (the client,
who never got a 200, retries and gets the same purchase back).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from notsale.errors import ErrorCode, NotsaleError
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S
from notsale.store.rows import AttemptRow, PurchaseRow, write_rows

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._attempts: list[AttemptRow] = []
        self._purchases: list[PurchaseRow] = []
        self._waiters: list[asyncio.Future[set[str]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="notsale-group-commit")

    async def close(self) -> None:
        """Refuse new rows, commit the ones waiting, then stop."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None

    async def write_purchase(self, row: PurchaseRow) -> None:
        """Returns once the row is committed; refuses a purchase clashing with a stored one."""
        clashes = await self._submit(purchase=row)
        if row.code in clashes:
            log.error(
                "purchase refused: item already stored under another code",
                extra={"sale_id": row.sale_id, "item_id": row.item_id},
            )
            raise NotsaleError(ErrorCode.ITEM_SOLD)

    async def write_attempt(self, row: AttemptRow) -> None:
        await self._submit(attempt=row)

    async def _submit(
        self, *, purchase: PurchaseRow | None = None, attempt: AttemptRow | None = None
    ) -> set[str]:
        if self._task is None or self._closing:
            raise NotsaleError(ErrorCode.UNAVAILABLE, "The service is shutting down.")
        if purchase is not None:
            self._purchases.append(purchase)
        if attempt is not None:
            self._attempts.append(attempt)
        waiter: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return await waiter

    async def _run(self) -> None:
        while not (self._closing and not self._waiters):
            await self._wake.wait()
            self._wake.clear()
            if self._waiters:
                await self._commit()

    async def _commit(self) -> None:
        attempts, purchases, waiters = self._attempts, self._purchases, self._waiters
        self._attempts, self._purchases, self._waiters = [], [], []
        outcome: set[str] | BaseException
        try:
            async with self._pool.acquire(timeout=QUERY_TIMEOUT_S) as conn:
                outcome = await write_rows(conn, attempts, purchases, QUERY_TIMEOUT_S)
        except PG_DOWN as exc:
            log.warning("group commit failed: PostgreSQL unreachable", extra={"error": repr(exc)})
            outcome = NotsaleError(ErrorCode.UNAVAILABLE)
        except Exception as exc:
            log.exception("group commit failed")
            outcome = exc
        for w in waiters:
            if w.done():
                continue
            if isinstance(outcome, BaseException):
                w.set_exception(outcome)
            else:
                w.set_result(outcome)
