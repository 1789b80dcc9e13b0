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
import contextlib
import logging
from typing import NamedTuple

import asyncpg

from notsale import metrics
from notsale.errors import Failed, NotsaleError, Unavailable
from notsale.store.batches import write_groups
from notsale.store.faults import usable
from notsale.store.pool import QUERY_TIMEOUT_S
from notsale.store.rows import AttemptRow, PurchaseRow, Refused

log = logging.getLogger(__name__)

# One commit, connection wait included, ends within this long, or its rows are answered 503.
COMMIT_DEADLINE_S = 2 * QUERY_TIMEOUT_S
# Attempt rows that no store took (both failed at once) are kept in the worker and retried
# this often until PostgreSQL takes them; at most this many (~300 bytes each): past that
# they are dropped, counted in the log.
LATER_RETRY_S = 1.0
LATER_MAX = 100_000
# The writer keeps its connection from one commit to the next (taking one from the pool and
# handing it back cost a lone purchase ~0.14 ms here), and hands it back after this long
# without a commit, so that the pool's own care of idle connections applies.
KEEP_CONNECTION_S = 1.0


class Waiting(NamedTuple):
    attempt: AttemptRow | None
    purchase: PurchaseRow | None
    waiter: asyncio.Future[Refused] | None  # None: a row written later, nobody waits


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool, user_limit: int) -> None:
        self._pool = pool
        self._user_limit = user_limit
        self._waiting: list[Waiting] = []
        self._later: list[Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._conn: asyncpg.Connection | None = None

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
        """Returns once the row is committed. PostgreSQL refuses a purchase whose item it has
        stored under another code (409) or that would take its user past the limit (429)."""
        metrics.WAITING.inc()
        try:
            refused = (await self._submit(None, row)).get(row.code)
        finally:
            metrics.WAITING.dec()
        if refused is not None:
            log.error(
                "purchase refused by PostgreSQL: Redis is out of step with it",
                extra={"sale_id": row.sale_id, "item_id": row.item_id, "refused": refused},
            )
            raise NotsaleError(refused)

    async def write_attempt(self, row: AttemptRow) -> None:
        await self._submit(row, None)

    def write_later(self, row: AttemptRow) -> None:
        """Keep the row and write it once PostgreSQL takes it (lost if the worker dies)."""
        self._keep([Waiting(row, None, None)])
        self._wake.set()

    def _keep(self, rows: list[Waiting]) -> None:
        room = LATER_MAX - len(self._later)
        if len(rows) > room:
            log.error(
                "attempt rows dropped: too many wait for PostgreSQL",
                extra={"dropped": len(rows) - room},
            )
        self._later[:0] = rows[: max(room, 0)]

    async def _submit(self, attempt: AttemptRow | None, purchase: PurchaseRow | None) -> Refused:
        if self._task is None or self._closing:
            raise Unavailable(Failed.POSTGRES, "The service is shutting down.")
        waiter: asyncio.Future[Refused] = asyncio.get_running_loop().create_future()
        self._waiting.append(Waiting(attempt, purchase, waiter))
        self._wake.set()
        return await waiter

    async def _run(self) -> None:
        while not (self._closing and not self._waiting):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    LATER_RETRY_S if self._later else KEEP_CONNECTION_S if self._conn else None
                ):
                    await self._wake.wait()
            self._wake.clear()
            if self._waiting or self._later:
                await self._commit()
            else:
                await self._hand_back()
        await self._hand_back()
        if self._later:
            log.error(
                "attempt rows lost at shutdown: PostgreSQL did not take them",
                extra={"count": len(self._later)},
            )

    async def _commit(self) -> None:
        batch = [*self._waiting, *self._later]
        self._waiting, self._later = [], []
        outcomes: list[Refused | BaseException]
        failed = False
        try:
            async with asyncio.timeout(COMMIT_DEADLINE_S):
                if self._conn is not None and not usable(self._conn):
                    await self._hand_back()
                if self._conn is None:
                    self._conn = await self._pool.acquire(timeout=QUERY_TIMEOUT_S)
                outcomes = await self._write(self._conn, batch)
        except Exception as exc:
            # Down, read-only, out of connections, shutting down: the outcome is unknown.
            log.warning("group commit failed", extra={"error": repr(exc)})
            outcomes = [Unavailable(Failed.POSTGRES)] * len(batch)
            self._keep([w for w in batch if w.waiter is None])
            failed = True
        for (_, _, waiter), outcome in zip(batch, outcomes, strict=True):
            if waiter is None or waiter.done():
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        if failed:
            await self._hand_back()  # never used again: the pool replaces it if broken

    async def _hand_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=QUERY_TIMEOUT_S)

    async def _write(
        self, conn: asyncpg.Connection, batch: list[Waiting]
    ) -> list[Refused | BaseException]:
        """The batch in one commit; a row at fault fails only its own request."""
        groups = [
            ([] if w.attempt is None else [w.attempt], [] if w.purchase is None else [w.purchase])
            for w in batch
        ]
        outcomes: list[Refused | BaseException] = []
        for outcome in await write_groups(conn, groups, self._user_limit, QUERY_TIMEOUT_S):
            if isinstance(outcome, Exception):
                log.error("row refused by PostgreSQL", extra={"error": repr(outcome)})
                outcome = Unavailable(Failed.POSTGRES)
            outcomes.append(outcome)
        return outcomes
