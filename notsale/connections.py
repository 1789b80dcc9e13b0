"""The one factory of Redis clients (app, CLI, tests and bench alike), and its failure modes."""

from __future__ import annotations

from typing import Any, TypeAlias

import coredis
from coredis.retry import NoRetryPolicy
from coredis.typing import Node

from notsale.config import redis_cluster

# Redis waits are bounded so that an unreachable or stalled Redis answers 503 quickly.
REDIS_CONNECT_TIMEOUT_S = 1.0
STREAM_TIMEOUT_S = 2.0
# One worker's connections to Redis: requests pipeline over few of them.
MAX_CONNECTIONS = 32

# Whatever Redis or its client raises: unreachable, timed out, or refusing (OOM, READONLY,
# MISCONF, BUSY, CLUSTERDOWN, a script error). Each is answered 503 "outcome unknown".
REDIS_DOWN = (coredis.exceptions.RedisError, TimeoutError, OSError)

# A single Redis (coredis.Redis) or a Redis Cluster (coredis.RedisCluster): every key of one
# sale shares a slot (keys.py), so each sale's commands and scripts run on both.
Client: TypeAlias = coredis.client.Client[str]


class _Cluster(coredis.RedisCluster[str]):
    """coredis 6.9 counts a node's failures to decide when to learn the cluster's layout
    again, but neither the failures to connect to it nor the replies it never sent: after a
    master dies, or hangs (SIGSTOP, a partition), every command for its slots failed on its
    address, for good (measured: a hung master's outbox was never written again). Both count
    here, as connection errors, so that the layout is learned again after a few and the
    failed-over replica is found."""

    async def _execute_command_on_single_node(self, node: Any, command: Any) -> Any:
        try:
            return await super()._execute_command_on_single_node(node, command)
        except (coredis.exceptions.ConnectionError, TimeoutError) as exc:
            lost = exc
            if not isinstance(exc, coredis.exceptions.ConnectionError):
                lost = coredis.exceptions.ConnectionError(f"no reply: {exc}")
            self.connection_pool.cluster_layout.report_errors(node, lost)
            raise


def connect(url: str) -> coredis.Redis[str] | coredis.RedisCluster[str]:
    """A client that never retries a command by itself: a timed-out script may still have
    run, and running a decision twice would decide it twice (its caller answers 503 instead).
    Use it as `async with connect(url) as redis`."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "stream_timeout": STREAM_TIMEOUT_S,
        "max_connections": MAX_CONNECTIONS,
        "retry_policy": NoRetryPolicy(),
    }
    cluster = redis_cluster(url)
    if cluster is None:
        return coredis.Redis.from_url(url, **options)
    return _Cluster(
        startup_nodes=[Node(host=host, port=port) for host, port in cluster.nodes],
        username=cluster.username,
        password=cluster.password,
        ssl=cluster.tls,
        # Redirects (MOVED, ASK) are followed: the command did not run where it was sent.
        **options,
    )
