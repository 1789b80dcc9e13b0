"""Two notsale hosts behind HAProxy, as `docker compose --profile two-hosts` runs them
(scripts/haproxy.cfg, here with Debian's haproxy): the same sale settings on both, one
worker each, and a crowd that reaches them only through the balancer."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from tests.stampede import (
    BUYERS,
    SALE_SIZE,
    USER_LIMIT,
    Tally,
    assert_sold_exactly_once_within_limits,
    crowd,
)
from tests.support import (
    REPO,
    SERVER_START_TIMEOUT_S,
    free_port,
    log_tail,
    spawn_server,
    until_healthy,
    wait_for,
)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
# The crowd's own address: the rows must carry its network, not the balancer's.
BUYERS_ADDRESS = "127.9.8.7"
CHECKOUTS = re.compile(r'^notsale_requests_total\{route="/checkout",status="\d+"\} (\S+)$', re.M)


class Balancer(msgspec.Struct):
    base_url: str


async def checkouts_answered(base_url: str) -> int:
    """The checkouts one host answered, as its /metrics counts them."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        text = (await http.get("/metrics")).text
    return int(sum(float(n) for n in CHECKOUTS.findall(text)))


@pytest.mark.skipif(
    not os.access(HAPROXY, os.X_OK), reason="haproxy not installed (scripts/test installs Debian's)"
)
async def test_a_stampede_through_haproxy_to_two_hosts_sells_exactly_the_stock(
    serve: Callable[..., Any], db: asyncpg.Connection, tmp_path: Any
) -> None:
    terms = {"sale_size": SALE_SIZE, "user_limit": USER_LIMIT, "workers": 1}
    hosts = [await serve(**terms, trusted_proxies=1) for _ in range(2)]
    port = free_port()
    env = {
        **os.environ,
        "LB_BIND": f"127.0.0.1:{port}",
        "NOTSALE_A": hosts[0].base_url.removeprefix("http://"),
        "NOTSALE_B": hosts[1].base_url.removeprefix("http://"),
    }
    log_path = str(tmp_path / "haproxy.log")
    haproxy = spawn_server(env, log_path, [HAPROXY, "-db", "-f", str(REPO / "scripts/haproxy.cfg")])
    try:
        balancer = Balancer(f"http://127.0.0.1:{port}")
        if not await until_healthy(balancer.base_url, haproxy, SERVER_START_TIMEOUT_S):
            pytest.fail(f"haproxy did not answer:\n{log_tail(log_path)}")
        tally = Tally()
        current = await crowd(balancer, range(BUYERS), tally, seed=11, local_address=BUYERS_ADDRESS)
        await assert_sold_exactly_once_within_limits(db, tally, current)
        networks = await db.fetch("SELECT DISTINCT network::text FROM checkout_attempts")
        assert [n["network"] for n in networks] == ["127.9.8.0/24"]

        # Both hosts sold: HAProxy spread the crowd over them.
        async def both() -> bool:
            answered = [await checkouts_answered(h.base_url) for h in hosts]
            return min(answered) > 0 and sum(answered) == tally.checkouts

        assert await wait_for(both, True)
    finally:
        haproxy.send_signal(signal.SIGTERM)
        haproxy.wait(timeout=10)
