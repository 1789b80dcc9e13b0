"""The asyncpg pools, and which errors mean "PostgreSQL failed" (answered 503)."""

from __future__ import annotations

import asyncpg

from notsale.store.batches import prepare_connection

# Small on purpose: a worker needs one connection for the flusher and one for the purchase
# group commit, and PostgreSQL allows 100 connections across all workers.
POOL_MAX_SIZE = 4
# Reads (a user's purchases, an ended sale's item, a code PostgreSQL remembers) get a pool of
# their own: a flood of reads then waits for its own connections, never for the writers'.
READ_POOL_MAX_SIZE = 2
# Bounded waits, so an unreachable PostgreSQL answers 503 instead of hanging a request.
PG_CONNECT_TIMEOUT_S = 2.0
ACQUIRE_TIMEOUT_S = 2.0
QUERY_TIMEOUT_S = 5.0

# Whatever PostgreSQL or its driver raises: unreachable, timed out, read-only, out of
# connections, shutting down, or refusing a statement.
PG_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
)


async def keep_session(conn: asyncpg.Connection) -> None:
    """Instead of asyncpg's reset of a released connection (RESET ALL, UNLISTEN, CLOSE ALL and
    advisory unlocks: one more round trip before every purchase is answered, ~0.1 ms here):
    notsale sets none of those. A transaction left open is still rolled back."""


async def create_pool(dsn: str, max_size: int = POOL_MAX_SIZE) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=PG_CONNECT_TIMEOUT_S,
        command_timeout=QUERY_TIMEOUT_S,
        init=prepare_connection,
        reset=keep_session,
    )
    assert pool is not None
    return pool
