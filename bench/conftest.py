"""Benchmarks reuse the test suite's real Redis and PostgreSQL (one database, one DB index)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

from notsale.config import Settings
from notsale.engine.client import connect
from notsale.engine.sale import SaleEngine
from notsale.store.pool import create_pool
from notsale.store.reconcile import Reconciler
from tests.conftest import TEST_SETTINGS, Stores, db, make_settings, serve, stores  # noqa: F401

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


@pytest.fixture
def runner(stores: Stores, db: asyncpg.Connection) -> Iterator[Runner]:  # noqa: F811
    settings = Settings(
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        **{**TEST_SETTINGS, "sale_size": 10_000, "user_limit": 10_000},
    )
    runner = Runner(settings)
    yield runner
    runner.close()
