"""Benchmarks reuse the test suite's real Redis and PostgreSQL (one database, one DB index)."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from bench.support import Runner
from notsale.config import Settings
from tests.support import TEST_SETTINGS, Stores


@pytest.fixture
def runner(stores: Stores, db: asyncpg.Connection) -> Iterator[Runner]:
    settings = Settings(
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        **{**TEST_SETTINGS, "sale_size": 10_000, "user_limit": 10_000},
    )
    runner = Runner(settings)
    yield runner
    runner.close()
