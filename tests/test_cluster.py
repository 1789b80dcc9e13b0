"""Redis Cluster and several service hosts: notsale servers, each on a host of its own (a
network namespace with its own address where this machine allows it, see tests/hosts.py),
share a private 3-master, 3-replica cluster (tests/rediscluster.py) and one PostgreSQL
database. `pytest -s` prints which kind of hosts ran, and what each fault cost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import STREAM_TIMEOUT_S
from notsale.keys import sale_keys
from notsale.store.flusher import CLAIM_EVERY_S, CLAIM_IDLE_MS
from tests.faultproxy import FaultProxy, through
from tests.hosts import Hosts
from tests.nemesis import Checkout, Crowd, Report, check, read_rows, wait_drained
from tests.rediscluster import (
    FORM_TIMEOUT_S,
    NODE_TIMEOUT_MS,
    REDIS_DEFAULTS,
    RedisCluster,
    cli,
)
from tests.redisserver import RedisServer
from tests.stampede import USER_LIMIT, Tally, assert_sold_exactly_once_within_limits, crowd
from tests.support import (
    HOLDS_CAPPED,
    Stores,
    attempt_outcomes,
    holds_capped_across_sales,
    notsale_cli,
)

HOSTS = 2
SALE_SECONDS = 3600
# The faults' runs: a sale large enough to be still selling when the fault strikes.
FAULT_AT_S = 4.0
RUN_S = max(12.0, FAULT_AT_S + 2 * NODE_TIMEOUT_MS / 1000)
BUYERS_PER_SERVER = 30
SALE_SIZE = 3000
LIMIT = 5
# Once the replica is a master, clients get 503 for at most this long. Calls to a hung master
# fail by their read timeout; while they do, the layout is learned every 0.5 s, so a call sent
# to the old master just before the promotion was seen waits out its timeout (measured:
# 1.7-2.1 s). (How long the cluster takes to promote the replica is Redis' own: 2-4 s with a
# 1 s node timeout, 16-24 s with the default 15 s.)
RESUMED_WITHIN_S = 2 * STREAM_TIMEOUT_S + 0.5
# And from the fault: issue 20's bound, the node timeout + 5 s (met with a 1 s node timeout;
# with the default 15 s, Redis' own promotion takes 3-7 s more than the node timeout).
RESUMED_AFTER_FAULT_S = NODE_TIMEOUT_MS / 1000 + 5
# The violations a failover with a lagging replica may cause (see the test).
LOSSES = ("missing row", "outcome", "orphan purchase")
# How far behind its master the replica is held before the master is killed.
LAG_S = 1.0
# The doomed host's flusher is stuck this long before the kill: it holds a batch by then.
STALL_BEFORE_KILL_S = 1.0
# A killed host's entries are claimed by the others once idle this long (see flusher.py).
DRAIN_S = CLAIM_IDLE_MS / 1000 + 2 * CLAIM_EVERY_S + 15


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    with Hosts(HOSTS) as made:
        print(f"\n{made.describe()}")
        yield made


@pytest.fixture(scope="module")
def cluster(hosts: Hosts) -> Iterator[RedisCluster]:
    """Torn down whatever happens (the context manager kills every node)."""
    with RedisCluster(announce=hosts.gateway) as made:
        yield made


@pytest.fixture(scope="module")
def database_url(hosts: Hosts, stores: Stores) -> Iterator[str]:
    """The run's database as the hosts reach it: through a proxy at the gateway when they
    are in namespaces of their own (PostgreSQL listens on loopback only)."""
    pg = urlsplit(stores.database_url)
    if not hosts.isolated:
        yield stores.database_url
        return
    with FaultProxy(pg.hostname or "127.0.0.1", pg.port or 5432, listen=hosts.gateway) as proxy:
        yield through(stores.database_url, proxy)


@pytest.fixture
def fresh(cluster: RedisCluster, db: asyncpg.Connection) -> RedisCluster:
    """The cluster emptied and whole again (a node a test killed is back, as a replica), and
    the running sale not about to end: a run and its checks fit in one sale."""
    for node in cluster.nodes:
        if node.process is None:
            node.start()
    cluster.wait_ok()
    cluster.flush()
    left_s = SALE_SECONDS - time.time() % SALE_SECONDS
    if left_s < RUN_S + DRAIN_S + 30:
        time.sleep(left_s + 1)
    return cluster


class Servers:
    """Starts notsale servers, one worker each, one per host, all on the same stores."""

    def __init__(
        self, serve: Callable[..., Any], hosts: Hosts, cluster: RedisCluster, database_url: str
    ) -> None:
        self._serve, self._hosts, self._cluster = serve, hosts, cluster
        self._database_url = database_url

    async def start(self, host: int, **settings: Any) -> Any:
        values = {"redis_url": self._cluster.url, "database_url": self._database_url, **settings}
        return await self._serve(
            on=self._hosts.command(host), host=self._hosts.address(host), workers=1, **values
        )

    async def all(self, **settings: Any) -> list[Any]:
        return [await self.start(host, **settings) for host in range(HOSTS)]


@pytest.fixture
def servers(
    serve: Callable[..., Any], hosts: Hosts, fresh: RedisCluster, database_url: str
) -> Servers:
    return Servers(serve, hosts, fresh, database_url)


async def test_cluster_urls_make_notsale_use_the_cluster(
    servers: Servers, fresh: RedisCluster, make_settings: Callable[..., Settings]
) -> None:
    server = await servers.start(0, sale_size=20)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        code = (await http.post("/checkout", params={"user_id": "ann", "id": 3})).json()["code"]
        assert (await http.post("/purchase", params={"code": code})).status_code == 200
        listed = (await http.get("/sales")).json()["sales"][0]  # the newest first
        sale = listed["sale_id"]
        assert (listed["sold"], (await http.get("/sales/current")).json()["sold"]) == (1, 1)
        items = (await http.get(f"/sales/{sale}/items", params={"from": 1, "count": 5})).json()
        assert [i["status"] for i in items["items"]][2] == "sold"
        assert "notsale_redis_up 1.0" in (await http.get("/metrics")).text
    # Every key of the sale lives on the master of its hash tag's slot.
    keys = sale_keys(sale)
    owner = fresh.owner(keys.sold)
    assert cli(owner.port, "hget", keys.sold, "3").strip() == "ann"
    assert {fresh.owner(key).port for key in keys} == {owner.port}
    # `notsale reconcile` finds and repairs what the sale's master lost.
    settings = make_settings(redis_url=fresh.url, sale_size=20)
    assert notsale_cli(settings, "reconcile", "--check").returncode == 0
    cli(owner.port, "del", keys.sold)
    check = notsale_cli(settings, "reconcile", "--check")
    assert "missing_in_redis: item 3 (bought by ann)" in check.stdout, check.stderr
    assert "1 purchases restored" in notsale_cli(settings, "reconcile").stdout
    assert cli(owner.port, "hget", keys.sold, "3").strip() == "ann"


async def test_holds_are_capped_across_sales_on_slots_of_their_own(
    fresh: RedisCluster, make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """A user's ledger of holds is in another slot than the sales': the engine reads it when
    a new hold is about to be made, and writes it after."""
    settings = make_settings(redis_url=fresh.url, **HOLDS_CAPPED)
    running = current_sale(settings.sale_seconds)
    assert len({fresh.owner(sale_keys(running - n).sold).port for n in range(3)}) > 1
    async with AsyncTestClient(app=create_app(settings)) as client:
        await holds_capped_across_sales(client, running)
    outcomes = await attempt_outcomes(db, 11)
    assert sorted(outcomes) == sorted(["ok"] * 8 + ["holds_max"] * 2 + ["user_limit"])


async def test_two_hosts_on_a_cluster_sell_exactly_the_stock(
    servers: Servers, db: asyncpg.Connection
) -> None:
    (one, other) = await servers.all(sale_size=30, user_limit=USER_LIMIT)
    tally = Tally()
    await asyncio.gather(
        crowd(one, range(0, 125), tally, seed=1),
        crowd(other, range(125, 250), tally, seed=2),
    )
    async with httpx.AsyncClient(base_url=other.base_url) as http:
        current = (await http.get("/sales/current")).json()
    await assert_sold_exactly_once_within_limits(db, tally, current)


async def crowds_with_a_fault(
    servers: list[Any], fault: Callable[[], Any], cluster: RedisCluster, database_url: str
) -> tuple[Report, list[str], list[Checkout]]:
    """A nemesis-style crowd at each server for RUN_S (buyers who never try a pair twice, so
    every row matches its request); `fault` strikes at FAULT_AT_S. Once the outboxes are
    written, PostgreSQL is checked against every answer: returns the report, the violations
    and the checkouts as the clients saw them."""
    deadline = time.monotonic() + RUN_S
    crowds = [
        Crowd(s.base_url, SALE_SIZE, seed=n, deadline=deadline, prefix=f"h{n}b")
        for n, s in enumerate(servers)
    ]

    async def strike() -> None:
        await asyncio.sleep(FAULT_AT_S)
        await asyncio.to_thread(fault)

    await asyncio.gather(*(c.run(BUYERS_PER_SERVER) for c in crowds), strike())
    report = Report(
        seed=0,
        seconds=RUN_S,
        workers=len(servers),
        buyers=BUYERS_PER_SERVER * len(servers),
        sale_size=SALE_SIZE,
        user_limit=LIMIT,
        sale_id=current_sale(SALE_SECONDS),
    )
    checkouts = [c for one in crowds for c in one.checkouts]
    purchases = [p for one in crowds for p in one.purchases]
    assert await wait_drained(cluster.url, DRAIN_S) == 0
    attempts, stored, report.rejects = await read_rows(database_url)
    return report, check(report, checkouts, purchases, attempts, stored), checkouts


async def logs_of(server: Any) -> str:
    return await asyncio.to_thread(Path(server.log_path).read_text, errors="replace")


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def unavailable_window(checkouts: list[Checkout], after_s: float) -> float:
    """How long, from the fault, clients kept getting 503 or no answer."""
    failed = [
        c.sent_s + c.took_s
        for c in checkouts
        if c.sent_s + c.took_s >= after_s and (c.status is None or c.status == 503)
    ]
    return max(failed, default=after_s) - after_s


@contextlib.contextmanager
def replica_held_back(cluster: RedisCluster, master: RedisServer) -> Iterator[None]:
    """What the master sends its replica is dropped (iptables) meanwhile."""
    host, port = cluster.replication_link(master)
    rule = ["OUTPUT", "-p", "tcp", "--sport", str(master.port), "-d", host, "--dport", str(port)]
    subprocess.run(["iptables", "-I", *rule, "-j", "DROP"], check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule, "-j", "DROP"], check=True, timeout=10)


def fail_over(cluster: RedisCluster, master: RedisServer, how: str) -> float:
    """`kill`: SIGKILL the master. `hang`: SIGSTOP it (its connections stay open, nothing
    answers them). `cut`: a partition (nothing reaches it, nothing it sends leaves), the
    master running on. `kill behind`: the same as `kill` with its replica held LAG_S behind
    (the rule stays until the replica took over: the dead master's kernel would still
    deliver what it had queued). `takeover behind`: the replica, held LAG_S behind, takes
    over while the master lives on (CLUSTER FAILOVER TAKEOVER): no connection breaks,
    clients are redirected to the new master, whose id is not the one the sale is ready
    under. A hung or cut master stays so until the test kills it. Returns how long after
    the call the replica was a master."""
    replica = cluster.replica_of(master)
    called = time.monotonic()

    def promoted() -> float:
        deadline = time.monotonic() + FORM_TIMEOUT_S
        while "role:master" not in cli(replica.port, "info", "replication"):
            assert time.monotonic() < deadline, "the replica did not take over"
            time.sleep(0.1)
        return time.monotonic() - called

    if how in ("kill", "hang", "cut"):
        {"kill": master.kill, "hang": master.hang, "cut": master.cut}[how]()
        return promoted()
    with replica_held_back(cluster, master):
        time.sleep(LAG_S)
        if how == "kill behind":
            master.kill()
        else:
            cli(replica.port, "cluster", "failover", "takeover")
        took_over_s = promoted()
        cluster.wait_ok()
    return took_over_s


@pytest.mark.parametrize("how", ["kill", "hang", "cut", "kill behind", "takeover behind"])
async def test_the_sale_slots_master_fails_over_mid_stampede(
    servers: Servers, fresh: RedisCluster, db: asyncpg.Connection, stores: Stores, how: str
) -> None:
    """Clients get 503 while the slot has no master, never a 500 or a hang. Afterwards no
    purchase answered 200 is lost, nothing is oversold, no user is over the limit. With the
    replica held behind, the failover loses the master's last writes: the sale is rebuilt
    from PostgreSQL under the new master's id before anything is decided on it, what was
    lost is counted, and Redis and PostgreSQL agree afterwards (hole 8)."""
    if how == "cut" and not RedisServer.cutable():
        pytest.skip("needs iptables and a cgroup2 hierarchy to cut a node off")
    if how.endswith("behind") and shutil.which("iptables") is None:
        pytest.skip("needs iptables to hold the replication stream back")
    started = await servers.all(sale_size=SALE_SIZE, user_limit=LIMIT, sale_seconds=SALE_SECONDS)
    sale = current_sale(SALE_SECONDS)
    master = fresh.owner(sale_keys(sale).sold)
    took_over_s: list[float] = []

    def fault() -> None:
        took_over_s.append(fail_over(fresh, master, how))

    try:
        report, found, checkouts = await crowds_with_a_fault(
            started, fault, fresh, stores.database_url
        )
    finally:
        if how in ("hang", "cut"):
            master.heal()
            master.kill()  # it never comes back by itself
    # What the failover may lose: decisions the old master acknowledged and did not
    # replicate, and so the rows that log them (a purchase whose checkout's row is lost has
    # no row that issued its code). Measured, and printed for the record (pytest -s).
    window = unavailable_window(checkouts, FAULT_AT_S)
    print(
        f"failover ({how}): {report.summary()}\n  replica a master {took_over_s[0]:.2f} s"
        f" after the fault; unavailable for {window:.2f} s;"
        f" answered checkouts without a row: {report.checkouts_answered - report.rows};"
        f" anomalies: {report.anomalies}"
    )
    assert [v for v in found if v.split(":", 1)[0] not in LOSSES] == []
    assert window <= took_over_s[0] + RESUMED_WITHIN_S
    if not REDIS_DEFAULTS:
        assert window <= RESUMED_AFTER_FAULT_S
    if how != "takeover behind":  # a takeover breaks no connection: clients are redirected
        assert report.checkout_statuses.get("503", 0) > 0, "the fault struck nobody"
    async with httpx.AsyncClient() as http:
        scraped = [(await http.get(f"{s.base_url}/metrics")).text for s in started]
    # The sale was rebuilt under the promoted replica's id before deciding again (every
    # script asks the server it runs on for its id: none decided on the lagged state)...
    assert sum(metric(text, "notsale_rebuilds_total") for text in scraped) >= 1
    # ...and Redis holds what PostgreSQL stored, both ways: nothing it alone sold or counted.
    settings = Settings(redis_url=fresh.url, database_url=stores.database_url)
    check = notsale_cli(settings, "reconcile", "--check")
    assert check.returncode == 0, check.stdout + check.stderr


async def test_a_host_killed_mid_run_leaves_its_outbox_to_the_others(
    servers: Servers, hosts: Hosts, fresh: RedisCluster, db: asyncpg.Connection, stores: Stores
) -> None:
    """The doomed host reaches PostgreSQL through a proxy that stalls just before the kill:
    its flusher dies holding a batch it read and never wrote, which the survivor claims."""
    pg = urlsplit(stores.database_url)
    target = (pg.hostname or "127.0.0.1", pg.port or 5432)
    settings = {"sale_size": SALE_SIZE, "user_limit": LIMIT, "sale_seconds": SALE_SECONDS}
    with FaultProxy(*target, listen=hosts.gateway) as proxy:
        doomed = await servers.start(
            0, database_url=through(stores.database_url, proxy), **settings
        )
        survivor = await servers.start(1, **settings)

        def stall_then_kill() -> None:
            proxy.stall()
            time.sleep(STALL_BEFORE_KILL_S)
            os.killpg(doomed.process.pid, signal.SIGKILL)

        report, found, _ = await crowds_with_a_fault(
            [doomed, survivor], stall_then_kill, fresh, stores.database_url
        )
    print(f"host killed: {report.summary()}")
    assert found == []
    assert "claimed entries of a silent flusher" in await logs_of(survivor)
