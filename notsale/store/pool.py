"""The asyncpg pool, and which of its errors mean "PostgreSQL cannot be reached"."""

from __future__ import annotations

import asyncpg

from notsale.store.rows import prepare_connection

# Small on purpose: a worker needs one connection for the flusher, one for the purchase group
# commit and a few for reads, and PostgreSQL allows 100 connections across all workers.
POOL_MAX_SIZE = 4
# Bounded waits, so an unreachable PostgreSQL answers 503 instead of hanging a request.
CONNECT_TIMEOUT_S = 2.0
QUERY_TIMEOUT_S = 5.0

PG_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


async def create_pool(dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=POOL_MAX_SIZE,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=QUERY_TIMEOUT_S,
        init=prepare_connection,
    )
    assert pool is not None
    return pool
