"""The outbox flusher: moves the decisions Redis logged into PostgreSQL, in batches.

Every worker runs one. They share a consumer group per sale stream, so each entry is written
by one of them; an entry stays pending until its batch is committed, and only then is it
acknowledged and deleted. Entries left pending by a worker that died are claimed by another
after CLAIM_IDLE_MS. Rows are keyed so that writing an entry twice is harmless. An entry that
cannot become its row (it does not decode, or PostgreSQL refuses that row, written alone) is
kept in outbox_rejects and acknowledged: one bad entry never blocks the ones behind it. Only
that: an entry is never set aside because a store was down or slow, however often it was
handed out meanwhile (Redis counts every re-read of a pending entry as a delivery, and a
flusher re-reads its own every RETRY_DELAY_S while PostgreSQL is away).

It reads every sale in the outbox registry (keys.py), whatever the sale's age, so an
outage of PostgreSQL longer than a sale loses nothing; once a closed sale's stream is empty
and acknowledged it is deleted and leaves the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

import asyncpg
import coredis
import msgspec
from coredis.response.types import StreamPendingExt

from notsale import metrics, outbox
from notsale.clock import CLOCK_SKEW_MS, current_sale, now_ms, sale_window
from notsale.config import Settings
from notsale.connections import REDIS_DOWN, Client
from notsale.keys import OUTBOX_REGISTRY
from notsale.store.batches import write_groups, write_rejects
from notsale.store.pool import PG_DOWN, QUERY_TIMEOUT_S
from notsale.store.rows import UNREADABLE, AttemptRow, PurchaseRow, RejectRow, from_entry
from notsale.store.terms import TermsBook

log = logging.getLogger(__name__)

# Up to this many entries per read go into one batch: large enough to keep up with a
# stampede in a few commits a second, small enough to keep one transaction short.
BATCH_MAX = 1000
# After a batch that emptied the outbox, wait this long before reading again, so the next
# write carries what arrived meanwhile. Measured under a stampede (bench/RESULTS.md): batches
# of ~55 rows became a few hundred, PostgreSQL's share of the cores halved and throughput
# rose ~15 %. Rows still reach PostgreSQL within about this long after their decision.
SETTLE_S = 0.05
# How long one read waits for new entries; also how often the flusher notices a new sale.
BLOCK_MS = 100
# One batch's writing, row-by-row fallback included, ends within this long or is abandoned
# (its entries stay pending and are read again).
BATCH_DEADLINE_S = 10.0
# A pending entry idle this long belongs to a worker presumed dead: longer than any batch may
# take (BATCH_DEADLINE_S), so a live worker's batch is never taken over. Taking one over
# would be harmless anyway: rows are keyed, so one written twice is dropped.
CLAIM_IDLE_MS = 15_000
CLAIM_EVERY_S = 2.0
# How often the registry of outboxes is read, and closed sales' streams are cleaned up.
REGISTRY_EVERY_S = 1.0
CLEANUP_EVERY_S = 10.0
# A closed sale's stream takes no more entries; it is deleted only this long after the
# sale's close, past any clock skew between workers and Redis (a worker behind Redis' clock
# sends sale.lua named checkouts of a sale that closed up to CLOCK_SKEW_MS ago).
ENDED_GRACE_MS = 2 * CLOCK_SKEW_MS
# A consumer with nothing pending that has not read for this long is a worker gone.
DEAD_CONSUMER_IDLE_MS = 600_000
# After a failure (store unreachable), wait this long before trying again.
RETRY_DELAY_S = 0.5
# On shutdown, keep draining the outbox this long at most (granian waits for the lifespan).
DRAIN_TIMEOUT_S = 5.0

# Written entries are acknowledged and deleted in one step: an entry acknowledged and left in
# its stream (a reply lost between two commands) would never be read again, and would keep
# the stream from ever being empty, and so from being cleaned up. One stream per call, so
# that it runs on a cluster too.
ACK = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

# The error of a purchase PostgreSQL refused (its item stored under another code, its user at
# the limit): Redis decided it on lost state, and the rebuild that follows undoes it there. A
# record of what did not happen, not a row missing.
PURCHASE_REFUSED = "purchase refused by PostgreSQL"
# NOGROUP, or "the stream key no longer exists" while blocked: the stream vanished (Redis
# restarted empty, keys flushed, the stream cleaned up); its group is made anew if needed.
STREAM_GONE = (coredis.exceptions.StreamConsumerGroupError, coredis.exceptions.UnblockedError)


class Logged(NamedTuple):
    """An outbox entry and the row it logs."""

    stream: str
    entry_id: str
    fields: dict[str, str]
    attempt: AttemptRow | None
    purchase: PurchaseRow | None


def reject(stream: str, entry_id: str, fields: dict[str, str], why: object) -> RejectRow:
    error = why if isinstance(why, str) else repr(why)
    return RejectRow(stream, entry_id, msgspec.json.encode(fields).decode(), error)


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Flusher:
    def __init__(
        self,
        redis: Client,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        sale_ids: Sequence[int] | None = None,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        claim_every_s: float = CLAIM_EVERY_S,
        terms: TermsBook | None = None,
    ) -> None:
        """`sale_ids` pins the sales whose outboxes it reads (default: every registered one
        and the running sale and the one before); `claim_idle_ms` 0 takes over every pending
        entry (reconcile); `claim_every_s`: how often it looks for silent flushers' entries."""
        self._redis = redis
        self._terms = terms or TermsBook(pool, settings)
        self._ack = redis.register_script(ACK)
        self._pool = pool
        self._settings = settings
        self._sale_ids = sale_ids
        self._claim_idle_ms = claim_idle_ms
        self._claim_every_s = claim_every_s
        self.consumer = consumer_name()
        self._groups: set[str] = set()
        self._registered: set[int] = set()
        # True while this consumer may own pending entries it has not written yet (after a
        # start, a failed batch or a claim): they are read again from id 0 before new ones.
        self._backlog = True
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_claim = self._next_registry = self._next_cleanup = 0.0

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
                log.warning("flusher paused: a store failed", extra={"error": repr(exc)})
            except Exception:
                # Never let the flusher die with the worker still serving: log, wait, retry.
                log.exception("flusher batch failed")
            self._backlog = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETRY_DELAY_S)

    async def _streams(self) -> dict[int, str]:
        """The sales to read: every registered one, and the running one and the one before
        (decisions land in the running sale's stream; just after a rollover, late ones may
        still land in the previous sale's)."""
        if self._sale_ids is not None:
            return {s: outbox.stream(s) for s in self._sale_ids}
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_registry:
            self._next_registry = loop.time() + REGISTRY_EVERY_S
            members = await self._redis.smembers(OUTBOX_REGISTRY)
            self._registered = {int(m) for m in members if m.isdigit()}
        sale = current_sale(self._settings.sale_seconds)
        if loop.time() >= self._next_cleanup:
            self._next_cleanup = loop.time() + CLEANUP_EVERY_S
            await self._clean_up(sale)
        # The running sale last: on a cluster, reads wait on its stream only (see _read).
        sales = [*sorted((self._registered | {sale - 1}) - {sale}), sale]
        return {s: outbox.stream(s) for s in sales}

    async def flush_once(self, block_ms: int = BLOCK_MS) -> int:
        """Read one batch, commit it, acknowledge it. Returns how many entries it wrote."""
        streams = {
            sale: key for sale, key in (await self._streams()).items() if await self._group(key)
        }
        if not streams:  # none made yet (Redis was just emptied, say): wait as a read would
            await asyncio.sleep(block_ms / 1000)
            return 0
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self._claim_every_s
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
            for entry in entries:
                done.setdefault(key, []).append(entry.identifier)
                if not entry.field_values:
                    continue  # deleted while pending: nothing left to write, only to ack
                fields = entry.field_values
                try:
                    attempt, purchase = from_entry(
                        by_key[key], entry.identifier, fields[outbox.FIELD]
                    )
                except UNREADABLE as exc:
                    rejects.append(reject(key, entry.identifier, fields, exc))
                    continue
                logged.append(Logged(key, entry.identifier, fields, attempt, purchase))
        if not done:
            return 0
        async with (
            asyncio.timeout(BATCH_DEADLINE_S),
            self._pool.acquire(timeout=QUERY_TIMEOUT_S) as conn,
        ):
            await self._write(conn, logged, rejects)
            if rejects:
                await write_rejects(conn, rejects)
                log.error(
                    "outbox entries refused; kept in outbox_rejects",
                    extra={"count": len(rejects), "first": rejects[0].error},
                )
        await self._acknowledge(done)
        # Stream ids start with the Redis time of the entry, in ms.
        oldest = min(int(i.split("-", 1)[0]) for ids in done.values() for i in ids)
        entries = sum(len(ids) for ids in done.values())
        metrics.FLUSH_ENTRIES.observe(entries)
        metrics.FLUSH_LAG.observe(max(0, now_ms() - oldest) / 1000)
        return entries

    async def _acknowledge(self, done: dict[str, list[str]]) -> None:
        await asyncio.gather(
            *(self._ack(keys=[key], args=[outbox.GROUP, *ids]) for key, ids in done.items())
        )

    async def _write(
        self, conn: asyncpg.Connection, logged: list[Logged], rejects: list[RejectRow]
    ) -> None:
        """Write the batch; an entry whose row is at fault (anything but PostgreSQL failing)
        or whose purchase PostgreSQL refuses goes to `rejects`: one bad entry never blocks
        the outbox."""
        groups = [
            ([] if e.attempt is None else [e.attempt], [] if e.purchase is None else [e.purchase])
            for e in logged
        ]
        outcomes = await write_groups(conn, groups, self._settings.user_limit, QUERY_TIMEOUT_S)
        for e, outcome in zip(logged, outcomes, strict=True):
            if isinstance(outcome, Exception):
                rejects.append(reject(e.stream, e.entry_id, e.fields, outcome))
            elif e.purchase is not None and e.purchase.code in outcome:
                why = f"{PURCHASE_REFUSED}: {outcome[e.purchase.code]}"
                rejects.append(reject(e.stream, e.entry_id, e.fields, why))

    async def _read(self, keys: Iterable[str], start: str, block_ms: int | None) -> Any:
        keys = list(keys)
        if not isinstance(self._redis, coredis.RedisCluster):
            return await self._read_slot(keys, start, block_ms)
        # A cluster command touches one slot, and every sale has its own: each sale's stream
        # is read on its own, and only the last one's (the running sale's) is waited on.
        replies = await asyncio.gather(*(self._read_slot([k], start, None) for k in keys))
        read = {key: entries for reply in replies for key, entries in (reply or {}).items()}
        if not read and block_ms is not None:
            return await self._read_slot(keys[-1:], start, block_ms)
        return read

    async def _read_slot(self, keys: list[str], start: str, block_ms: int | None) -> Any:
        return await self._redis.xreadgroup(
            outbox.GROUP,
            self.consumer,
            streams=dict.fromkeys(keys, start),
            count=BATCH_MAX,
            block=block_ms,
        )

    async def _group(self, key: str) -> bool:
        """Make sure the stream has the flushers' group; False if the stream is gone (a
        cleaned-up sale's: it is not made again)."""
        if key in self._groups:
            return True
        sale = int(key[key.index(":") + 1 : key.index("}")])
        if self._sale_ids is None and sale in self._registered:
            if not await self._redis.exists([key]):
                return False
        else:
            # A stream made here is registered first, so that it is cleaned up in time.
            await self._redis.sadd(OUTBOX_REGISTRY, [str(sale)])
        # From id 0, so entries logged before any flusher ran are not skipped. Another
        # worker may have created it first: that is fine.
        with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
            await self._redis.xgroup_create(key, outbox.GROUP, "0", mkstream=True)
        self._groups.add(key)
        return True

    async def _claim(self, keys: Iterable[str]) -> None:
        """Take over the entries a silent flusher left pending."""
        for key in keys:
            pending = await self._redis.xpending(
                key, outbox.GROUP, "-", "+", BATCH_MAX, idle=self._claim_idle_ms
            )
            pending = cast(tuple[StreamPendingExt, ...], pending)
            if not pending:
                continue
            claimed = await self._redis.xclaim(
                key,
                outbox.GROUP,
                self.consumer,
                self._claim_idle_ms,
                [p.identifier for p in pending],
            )
            self._backlog = True
            log.info(
                "claimed entries of a silent flusher", extra={"stream": key, "count": len(claimed)}
            )

    async def _clean_up(self, running: int) -> None:
        """Delete the streams of closed sales that hold nothing unwritten, and forget them;
        drop consumers (workers gone) with nothing pending from the streams that remain."""
        for sale in sorted(self._registered):
            key = outbox.stream(sale)
            closes = sale_window(sale, await self._terms.of(sale, fix=False)).closes_ms
            # Nothing is logged in a sale's outbox once it closed (sale.lua refuses on Redis'
            # clock; past the grace, workers log refusals in the running sale's outbox).
            if sale < running - 1 and closes + ENDED_GRACE_MS < now_ms():
                # An entry stays in the stream until written (XACK, then XDEL): empty means
                # nothing is left unwritten, whatever is still listed as pending.
                if await self._redis.xlen(key) == 0:
                    await self._redis.delete([key])
                    await self._redis.srem(OUTBOX_REGISTRY, [str(sale)])
                    self._registered.discard(sale)
                    self._groups.discard(key)
                    log.info("outbox of a closed sale deleted", extra={"sale_id": sale})
                continue
            if key in self._groups:
                await self._drop_dead_consumers(key)

    async def _drop_dead_consumers(self, key: str) -> None:
        for consumer in await self._redis.xinfo_consumers(key, outbox.GROUP):
            name, idle = str(consumer["name"]), int(consumer["idle"] or 0)
            if name != self.consumer and consumer["pending"] == 0 and idle > DEAD_CONSUMER_IDLE_MS:
                await self._redis.xgroup_delconsumer(key, outbox.GROUP, name)
