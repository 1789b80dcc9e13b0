"""The outbox flusher: moves the decisions Redis logged into PostgreSQL, in batches.

Every worker runs one. They share a consumer group per sale stream, so each entry is written
by one of them; an entry stays pending until its batch is committed, and only then is it
acknowledged and deleted. Entries left pending by a worker that died are claimed by another
after CLAIM_IDLE_MS. Rows are keyed so that writing an entry twice is harmless. An entry that
cannot become its row (it does not decode, or PostgreSQL refuses the row) is kept in
outbox_rejects and acknowledged: one bad entry never blocks the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg
import coredis
import msgspec

from notsale.config import Settings
from notsale.engine.clock import current_sale
from notsale.engine.sale import REDIS_DOWN, sale_keys
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S
from notsale.store.rows import (
    ENTRY_UNREADABLE,
    ROW_REFUSED,
    AttemptRow,
    PurchaseRow,
    RejectRow,
    rows_from_entry,
    write_rejects,
    write_rows,
)

log = logging.getLogger(__name__)

GROUP = "flushers"
# Up to this many entries per stream go into one batch: large enough to keep up with a
# stampede in a few commits a second, small enough to keep one transaction short.
BATCH_MAX = 1000
# After a batch that emptied the outbox, wait this long before reading again, so the next
# write carries what arrived meanwhile. Measured under a stampede (bench/RESULTS.md): batches
# of ~55 rows became a few hundred, PostgreSQL's share of the cores halved and throughput
# rose ~15 %. Rows still reach PostgreSQL within about this long after their decision.
SETTLE_S = 0.05
# How long one read waits for new entries; also how often the flusher notices a new sale.
BLOCK_MS = 100
# A pending entry idle this long belongs to a worker presumed dead (a batch commits in
# milliseconds); another takes it over. Taking over a live worker's entry is harmless: rows
# are keyed, so one written twice is dropped.
CLAIM_IDLE_MS = 5_000
CLAIM_EVERY_S = 2.0
# After a failure (store unreachable), wait this long before trying again.
RETRY_DELAY_S = 0.5
# On shutdown, keep draining the outbox this long at most (granian waits for the lifespan).
DRAIN_TIMEOUT_S = 5.0

# NOGROUP, or "the stream key no longer exists" while blocked: the stream vanished (Redis
# restarted empty, keys flushed); its group is made anew.
STREAM_GONE = (coredis.exceptions.StreamConsumerGroupError, coredis.exceptions.UnblockedError)


class Logged(NamedTuple):
    """An outbox entry and the row it logs."""

    stream: str
    entry_id: str
    fields: dict[str, str]
    attempt: AttemptRow | None
    purchase: PurchaseRow | None


def reject(stream: str, entry_id: str, fields: dict[str, str], exc: Exception) -> RejectRow:
    return RejectRow(stream, entry_id, msgspec.json.encode(fields).decode(), repr(exc))


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Flusher:
    def __init__(
        self,
        redis: coredis.Redis[str],
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        sale_ids: Sequence[int] | None = None,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        """`sale_ids` pins the sales whose outboxes it reads (default: the running sale and
        the one before); `claim_idle_ms` 0 takes over every pending entry (reconcile)."""
        self._redis = redis
        self._pool = pool
        self._settings = settings
        self._sale_ids = sale_ids
        self._claim_idle_ms = claim_idle_ms
        self.consumer = consumer_name()
        self._groups: set[str] = set()
        # True while this consumer may own pending entries it has not written yet (after a
        # start, a failed batch or a claim): they are read again from id 0 before new ones.
        self._backlog = True
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_claim = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notsale-flusher")

    async def close(self) -> None:
        """Stop reading new batches, then drain what is waiting, for at most DRAIN_TIMEOUT_S;
        what is still left then stays pending in Redis for the other workers to claim."""
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None
        with contextlib.suppress(TimeoutError, *REDIS_DOWN, *PG_DOWN):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while True:
                    try:
                        if not await self.flush_once(block_ms=1):
                            break
                    except STREAM_GONE:
                        self._groups.clear()

    def _streams(self) -> dict[int, str]:
        # Decisions land in the running sale's stream; just after a rollover, late ones may
        # still land in the previous sale's.
        if self._sale_ids is not None:
            return {s: sale_keys(s).outbox for s in self._sale_ids}
        sale = current_sale(self._settings.sale_seconds)
        return {s: sale_keys(s).outbox for s in (sale - 1, sale)}

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if 0 < await self.flush_once() < BATCH_MAX:
                    # Caught up: let the next batch gather for a moment (see SETTLE_S).
                    await asyncio.sleep(SETTLE_S)
                continue
            except STREAM_GONE:
                log.warning("outbox group missing; creating it again")
                self._groups.clear()
                continue
            except (*REDIS_DOWN, *PG_DOWN) as exc:
                log.warning("flusher paused: a store is unreachable", extra={"error": repr(exc)})
            except Exception:
                # Never let the flusher die with the worker still serving: log, wait, retry.
                log.exception("flusher batch failed")
            self._backlog = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETRY_DELAY_S)

    async def flush_once(self, block_ms: int = BLOCK_MS) -> int:
        """Read one batch, commit it, acknowledge it. Returns how many entries it wrote."""
        streams = self._streams()
        for key in streams.values():
            await self._ensure_group(key)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + CLAIM_EVERY_S
            await self._claim(streams.values())
        reply = None
        if self._backlog:
            # Entries this consumer owns but has not written (claimed, or a failed batch).
            reply = await self._read(streams.values(), "0", None)
            self._backlog = any(reply.values()) if reply else False
        if not self._backlog:
            reply = await self._read(streams.values(), ">", block_ms)
        by_key = {key: sale for sale, key in streams.items()}
        logged: list[Logged] = []
        rejects: list[RejectRow] = []
        done: dict[str, list[str]] = {}
        for key, entries in (reply or {}).items():
            sale_id = by_key[key]
            for entry in entries:
                done.setdefault(key, []).append(entry.identifier)
                if not entry.field_values:
                    continue  # deleted while pending: nothing left to write, only to ack
                fields = entry.field_values
                try:
                    attempt, purchase = rows_from_entry(sale_id, entry.identifier, fields["e"])
                except ENTRY_UNREADABLE as exc:
                    rejects.append(reject(key, entry.identifier, fields, exc))
                    continue
                logged.append(Logged(key, entry.identifier, fields, attempt, purchase))
        if not done:
            return 0
        async with self._pool.acquire(timeout=QUERY_TIMEOUT_S) as conn:
            clashes = await self._write(conn, logged, rejects)
            if rejects:
                await write_rejects(conn, rejects)
                log.error(
                    "outbox entries refused; kept in outbox_rejects",
                    extra={"count": len(rejects), "first": rejects[0].error},
                )
        if clashes:
            log.error("outbox purchases clash with stored ones", extra={"codes": sorted(clashes)})
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ids in done.items():
                pipe.xack(key, GROUP, ids)
                pipe.xdel(key, ids)
        return sum(len(ids) for ids in done.values())

    async def _write(
        self, conn: asyncpg.Connection, logged: list[Logged], rejects: list[RejectRow]
    ) -> set[str]:
        """Write the batch; if PostgreSQL refuses a row of it, write its rows one by one and
        add the refused ones to `rejects`, so that one bad entry never blocks the outbox."""
        try:
            return await write_rows(
                conn,
                [e.attempt for e in logged if e.attempt is not None],
                [e.purchase for e in logged if e.purchase is not None],
                QUERY_TIMEOUT_S,
            )
        except ROW_REFUSED:
            log.warning("a row of the batch was refused; writing them one by one")
        clashes: set[str] = set()
        for e in logged:
            try:
                clashes |= await write_rows(
                    conn,
                    [] if e.attempt is None else [e.attempt],
                    [] if e.purchase is None else [e.purchase],
                    QUERY_TIMEOUT_S,
                )
            except ROW_REFUSED as exc:
                rejects.append(reject(e.stream, e.entry_id, e.fields, exc))
        return clashes

    async def _read(self, keys: Iterable[str], start: str, block_ms: int | None) -> Any:
        return await self._redis.xreadgroup(
            GROUP,
            self.consumer,
            streams=dict.fromkeys(keys, start),
            count=BATCH_MAX,
            block=block_ms,
        )

    async def _ensure_group(self, key: str) -> None:
        if key in self._groups:
            return
        # From id 0, so entries logged before any flusher ran are not skipped. Another
        # worker may have created it first: that is fine.
        with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
            await self._redis.xgroup_create(key, GROUP, "0", mkstream=True)
        self._groups.add(key)

    async def _claim(self, keys: Iterable[str]) -> None:
        for key in keys:
            reply = await self._redis.xautoclaim(
                key,
                GROUP,
                self.consumer,
                self._claim_idle_ms,
                "0-0",
                count=BATCH_MAX,
                justid=True,
            )
            if reply[1]:
                log.info(
                    "claimed entries of a silent flusher",
                    extra={"stream": key, "count": len(reply[1])},
                )
                self._backlog = True
