"""What the benchmarks share beyond tests/support.py: a worker's clients held on an event loop
of their own (pytest-benchmark times synchronous calls), and checkout operations to time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg

from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import connect
from notsale.engine.codes import new_code
from notsale.engine.sale import SaleEngine
from notsale.recovery.reconcile import Reconciler
from notsale.store.pool import create_pool

T = TypeVar("T")


class Runner:
    """An event loop of the benchmark's own, holding a worker's clients between calls, so
    that pytest-benchmark (which is synchronous) can time one coroutine at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._holder = self.loop.create_task(self._hold())
        self.run(self._ready.wait())

    async def _hold(self) -> None:
        # A coredis client is entered and left in one task: this one, for the whole benchmark.
        self.pool: asyncpg.Pool = await create_pool(self.settings.database_url)
        async with connect(self.settings.redis_url) as r:
            self.redis = r
            self.engine = SaleEngine(
                r, self.settings, Reconciler(r, self.pool, self.settings).ensure_ready
            )
            self._ready.set()
            await self._stop.wait()
            self.engine.close()
        await self.pool.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self._stop.set()
        self.run(self._holder)
        self.loop.close()


COUNTER = itertools.count()


def checkout_ops(runner: Runner, n: int) -> list[Any]:
    sale = current_sale(runner.settings.sale_seconds)
    ops: list[Any] = []
    for _ in range(n):
        i = next(COUNTER)
        ops += ["c", f"bench.{i}", i % 10_000 + 1, f"bench{i}", new_code(sale), "0", 0, ""]
    return ops
