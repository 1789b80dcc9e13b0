"""The decisions' own Redis connection (engine/lane.py), against a real Redis, behind a fault
proxy where a fault is needed: replies reach their own calls, a call is never sent twice, and
every failure is one of REDIS_DOWN."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from coredis.connection import TCPLocation
from coredis.exceptions import AuthenticationFailureError, ConnectionError

from notsale.connections import REDIS_DOWN, Client, connect
from notsale.engine import lane as lane_module
from notsale.engine.lane import Lane
from tests.faultproxy import in_front_of
from tests.redisserver import RedisServer
from tests.support import Stores

# Each run appends its argument to a list, so the test can count how often Redis ran it.
SCRIPT = "redis.call('RPUSH', KEYS[1], ARGV[1]) return ARGV[1]"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
KEY = "notsale:test:lane"


@contextlib.asynccontextmanager
async def client(stores: Stores) -> AsyncIterator[Client]:
    """Not a fixture: a coredis client is entered and left in one task."""
    async with connect(stores.redis_url) as redis:
        await redis.delete([KEY])
        yield redis


def lane_of(url: str) -> Lane:
    """The lane a worker on `url` would use (the client is only read, never entered)."""
    lane = Lane.of(connect(url))
    assert lane is not None
    return lane


async def run(lane: Lane, word: str) -> str:
    return str(await lane.evalsha(SHA, SCRIPT, [KEY], [word]))


async def test_replies_reach_their_own_calls_in_order(stores: Stores) -> None:
    async with client(stores) as redis:
        lane = lane_of(stores.redis_url)
        try:
            await redis.script_flush()  # so the first calls load it: NOSCRIPT, then EVAL
            words = [str(i) for i in range(500)]
            assert await asyncio.gather(*(run(lane, w) for w in words)) == words
            # In the client's DB index, each run once, in the order sent.
            assert await redis.lrange(KEY, 0, -1) == words
        finally:
            lane.close()


async def test_a_call_past_its_timeout_fails_with_the_calls_behind_it_and_is_never_resent(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(stores) as redis:
        monkeypatch.setattr(lane_module, "STREAM_TIMEOUT_S", 0.3)
        with in_front_of(stores.redis_url, 6379) as (proxy, url):
            lane = lane_of(url)
            try:
                assert await run(lane, "a") == "a"
                proxy.stall()
                stuck = [asyncio.ensure_future(run(lane, w)) for w in ("b", "c")]
                for call in stuck:
                    with pytest.raises(TimeoutError):
                        await call
                proxy.resume()
                # A new connection: the late replies of b and c, if any, reach no other call.
                assert await run(lane, "d") == "d"
                await asyncio.sleep(0.3)
                assert proxy.connections == 2  # the stalled connection was closed
                ran = await redis.lrange(KEY, 0, -1)
                assert ran.count("a") == ran.count("d") == 1
                assert ran.count("b") <= 1 and ran.count("c") <= 1
            finally:
                lane.close()


async def test_a_lost_connection_fails_the_waiting_calls_and_the_next_call_connects_again(
    stores: Stores,
) -> None:
    async with client(stores):
        with in_front_of(stores.redis_url, 6379) as (proxy, url):
            lane = lane_of(url)
            try:
                assert await run(lane, "a") == "a"
                proxy.stall()
                waiting = asyncio.ensure_future(run(lane, "b"))
                await asyncio.sleep(0.05)
                proxy.cut()
                with pytest.raises(ConnectionError):  # at once, not at its timeout
                    await waiting
                proxy.resume()
                assert await run(lane, "c") == "c"
                assert proxy.connections == 2
            finally:
                lane.close()


async def test_an_unreachable_redis_fails_fast() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    lane = Lane(TCPLocation("127.0.0.1", port))
    with pytest.raises(REDIS_DOWN):
        await run(lane, "a")


async def test_an_error_reply_fails_its_call_alone(stores: Stores) -> None:
    async with client(stores):
        lane = lane_of(stores.redis_url)
        try:
            bad = "return redis.call('NOSUCHCOMMAND')"
            failing = lane.evalsha(hashlib.sha1(bad.encode()).hexdigest(), bad, [KEY], [])
            calls = await asyncio.gather(
                run(lane, "a"), failing, run(lane, "b"), return_exceptions=True
            )
            assert calls[0] == "a" and calls[2] == "b"
            assert isinstance(calls[1], REDIS_DOWN)
        finally:
            lane.close()


async def test_a_unix_socket_db_and_password_are_those_of_the_client(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with RedisServer(args=("--unixsocket", str(socket_path))) as server:
        async with connect(server.url) as admin:
            await admin.config_set({"requirepass": "secret"})
        url = f"unix://{socket_path}?db=3&password=secret"
        async with connect(url) as redis:
            lane = lane_of(url)
            try:
                assert await lane.call("SET", KEY, "through the lane") == "OK"
                assert await redis.get(KEY) == "through the lane"  # same DB, as coredis sees it
            finally:
                lane.close()
        refused = lane_of(url.replace("secret", "wrong"))
        with pytest.raises(AuthenticationFailureError):  # one of REDIS_DOWN: a 503
            await refused.call("PING")
