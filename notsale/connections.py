"""The one factory of Redis clients (app, CLI, tests and bench alike), and its failure modes."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, TypeAlias

import coredis
from coredis.cluster._discovery import DiscoveryService
from coredis.cluster._node import ClusterNodeLocation
from coredis.retry import NoRetryPolicy
from coredis.typing import Node

from notsale.config import redis_cluster

# Redis waits are bounded so that an unreachable or stalled Redis answers 503 quickly.
REDIS_CONNECT_TIMEOUT_S = 1.0
STREAM_TIMEOUT_S = 2.0
# One worker's connections to Redis: requests pipeline over few of them.
MAX_CONNECTIONS = 32
# While a cluster node keeps failing calls (within the last SUSPECT_S), the layout is learned
# again this often: its replica's promotion is seen within this long, not only when the next
# calls sent to it time out.
RELEARN_EVERY_S = 0.5
SUSPECT_S = 10.0

# Whatever Redis or its client raises: unreachable, timed out, or refusing (OOM, READONLY,
# MISCONF, BUSY, CLUSTERDOWN, a script error). Each is answered 503 "outcome unknown".
REDIS_DOWN = (coredis.exceptions.RedisError, TimeoutError, OSError)

# A single Redis (coredis.Redis) or a Redis Cluster (coredis.RedisCluster): every key of one
# sale shares a slot (keys.py), so each sale's commands and scripts run on both.
Client: TypeAlias = coredis.client.Client[str]


class _Discovery(DiscoveryService):
    """coredis learns the layout by asking the nodes it knows, in a fixed order, and stops at
    the first whole answer; a hung node asked first holds the learning for its read timeout,
    then coredis backs off 1 s (measured: after a master hung, up to 3 s more of 503s than
    the promotion of its replica needed). Here the nodes asked are ordered by when they last
    failed a call: never first, the latest last."""

    failed_at: dict[str, float]

    async def get_cluster_layout(
        self,
    ) -> tuple[list[ClusterNodeLocation], Any]:
        def last_failed(node: ClusterNodeLocation) -> float:
            return self.failed_at.get(node.name, -math.inf)

        self._startup_nodes.sort(key=last_failed)
        self._initial_startup_nodes.sort(key=last_failed)
        return await super().get_cluster_layout()


class _Cluster(coredis.RedisCluster[str]):
    """coredis 6.9 counts a node's failures to decide when to learn the cluster's layout
    again, but neither the failures to connect to it nor the replies it never sent: after a
    master dies, or hangs (SIGSTOP, a partition), every command for its slots failed on its
    address, for good (measured: a hung master's outbox was never written again). Both count
    here, as connection errors, so that the layout is learned again after a few and the
    failed-over replica is found; and the layout is learned from the nodes that answer
    (_Discovery), every RELEARN_EVERY_S while a node keeps failing."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # The one seam: coredis builds its discovery inside the pool, with no hook to pass one.
        discovery = self.connection_pool.cluster_layout._discovery_service
        discovery.__class__ = _Discovery
        assert isinstance(discovery, _Discovery)
        self._failed_at: dict[str, float] = {}
        discovery.failed_at = self._failed_at
        self._relearning: asyncio.Task[None] | None = None

    async def _execute_command_on_single_node(self, node: Any, command: Any) -> Any:
        try:
            return await super()._execute_command_on_single_node(node, command)
        except (coredis.exceptions.ConnectionError, TimeoutError) as exc:
            lost = exc
            if not isinstance(exc, coredis.exceptions.ConnectionError):
                lost = coredis.exceptions.ConnectionError(f"no reply: {exc}")
            self._failed_at[node.name] = time.monotonic()
            self.connection_pool.cluster_layout.report_errors(node, lost)
            if self._relearning is None or self._relearning.done():
                self._relearning = asyncio.get_running_loop().create_task(self._relearn(node))
            raise

    async def _relearn(self, node: Any) -> None:
        """Learn the layout every RELEARN_EVERY_S (by reporting the node's failures: coredis
        learns it after two) until the node has not failed for SUSPECT_S."""
        while time.monotonic() - self._failed_at[node.name] < SUSPECT_S:
            failed = coredis.exceptions.ConnectionError("failing: learn the layout again")
            self.connection_pool.cluster_layout.report_errors(node, failed, failed)
            await asyncio.sleep(RELEARN_EVERY_S)


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
        # The layout is learned from one node's answer: checking that the cluster needs
        # every slot covered asks each master in turn, and a hung one held every learning
        # for 6 s (measured).
        skip_full_coverage_check=True,
        **options,
    )
