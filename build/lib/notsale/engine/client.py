"""The one factory of Redis clients (app, CLI, tests and bench alike), and its failure modes."""

from __future__ import annotations

import coredis
from coredis.retry import NoRetryPolicy

# Redis waits are bounded so that an unreachable or stalled Redis answers 503 quickly.
CONNECT_TIMEOUT_S = 1.0
STREAM_TIMEOUT_S = 2.0
# One worker's connections to Redis: requests pipeline over few of them.
MAX_CONNECTIONS = 32

# Whatever Redis or its client raises: unreachable, timed out, or refusing (OOM, READONLY,
# MISCONF, BUSY, a script error). Each is answered 503 "outcome unknown", never 500.
REDIS_DOWN = (coredis.exceptions.RedisError, TimeoutError, OSError)


def connect(url: str) -> coredis.Redis[str]:
    """A client that never retries a command by itself: a timed-out script may still have
    run, and running a decision twice would decide it twice (its caller answers 503 instead).
    Use it as `async with connect(url) as redis`."""
    return coredis.Redis.from_url(
        url,
        decode_responses=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        stream_timeout=STREAM_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
        retry_policy=NoRetryPolicy(),
    )


async def server_id(redis: coredis.Redis[str]) -> str:
    """Changes whenever the Redis that answers is another process: a restart (which may have
    reloaded an older AOF or snapshot) or a failover to a replica."""
    info = await redis.info("server")
    return str(info["run_id"])
