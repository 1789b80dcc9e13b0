"""Watching Redis from each worker: the next sale made ready, the outbox registry kept whole.

Redis can come back with less than it had: a restart that reloads an AOF written with
`appendfsync everysec` or an older snapshot, a failover to a replica that lagged. Its sale
state then misses the last decisions while the sale's `ready` key survives. Every such event
gives Redis another server id (run_id); a sale is ready only under the id it was rebuilt or
marked under, and every script asks Redis its id as it runs (sale.lua), so nothing is
decided or read on the older state: the sale is rebuilt from PostgreSQL first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import coredis

from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import REDIS_DOWN
from notsale.engine.sale import SaleEngine
from notsale.errors import NotsaleError
from notsale.recovery.reconcile import Reconciler

log = logging.getLogger(__name__)

# How often a worker marks the next sale ready, writes its registry entries again and counts
# the outboxes' entries.
WATCH_EVERY_S = 0.5
# The only policy under which Redis never evicts sale keys or the outbox at maxmemory.
SAFE_EVICTION_POLICY = "noeviction"


class Watch:
    def __init__(self, engine: SaleEngine, reconciler: Reconciler, settings: Settings) -> None:
        self._engine = engine
        self._reconciler = reconciler
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notsale-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> None:
        """Mark the next sale ready before it starts (under its own server's id: on a
        cluster, another master's), so that it opens without PostgreSQL, keep the outbox
        registry whole, and count what waits for PostgreSQL in all outboxes (checkouts are
        refused past NOTSALE_OUTBOX_MAX)."""
        await self._reconciler.mark_ahead(current_sale(self._settings.sale_seconds) + 1)
        await self._engine.register_again()
        await self._engine.backlogs()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(NotsaleError, *REDIS_DOWN):
                await self.check()
            await asyncio.sleep(WATCH_EVERY_S)


async def warn_on_eviction(engine: SaleEngine) -> None:
    """Say loudly at start when Redis may evict sale keys (they carry TTLs, so even volatile-*
    policies take them) or the outbox: evicted decisions are lost decisions."""
    if isinstance(engine.redis, coredis.RedisCluster):
        # CONFIG GET names no key, so a cluster client cannot route it to a master.
        log.info("on a Redis Cluster, set maxmemory-policy noeviction on every master")
        return
    try:
        config = await engine.redis.config_get(["maxmemory-policy", "maxmemory"])
    except REDIS_DOWN as exc:
        log.warning("could not read Redis' eviction policy", extra={"error": repr(exc)})
        return
    policy = config.get("maxmemory-policy")
    if policy != SAFE_EVICTION_POLICY:
        log.warning(
            "Redis may evict sale state and the outbox under memory pressure: set"
            " maxmemory-policy noeviction",
            extra={"maxmemory_policy": policy, "maxmemory": config.get("maxmemory")},
        )
