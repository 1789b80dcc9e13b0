"""Killing workers and stopping the server: nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from notsale.config import Settings
from notsale.connections import connect
from notsale.store.flusher import CLAIM_EVERY_S, CLAIM_IDLE_MS
from tests.support import Server, health_status, log_tail, wait_for, workers_of

SALE_SIZE = 60
BUYERS = 120
BURST_S = 3.0
# Rows of a killed worker are written by another after its entries sat idle this long.
CLAIM_WAIT_S = CLAIM_IDLE_MS / 1000 + 2 * CLAIM_EVERY_S + 5


class Tally:
    def __init__(self) -> None:
        self.sent = 0  # checkout requests sent
        self.answered = 0  # checkout requests that got an HTTP answer
        self.purchased: set[str] = set()  # codes whose purchase was answered 200
        self.unexpected: list[str] = []


async def buyer(http: httpx.AsyncClient, user: str, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(user)
    while not stop.is_set():
        tally.sent += 1
        try:
            response = await http.post(
                "/checkout", params={"user_id": user, "id": rng.randint(1, SALE_SIZE)}
            )
            tally.answered += 1
            if response.status_code == 200:
                code = response.json()["code"]
                bought = await http.post("/purchase", params={"code": code})
                if bought.status_code == 200:
                    tally.purchased.add(code)
            elif response.status_code not in (409, 429, 503):
                tally.unexpected.append(f"{response.status_code} {response.text}")
        except httpx.TransportError:
            pass  # the worker holding this connection was killed: an unknown outcome


async def assert_nothing_lost(db: asyncpg.Connection, settings: Settings, tally: Tally) -> None:
    async with connect(settings.redis_url) as redis:

        async def waiting() -> int:
            return sum([await redis.xlen(key) for key in await redis.keys("*:outbox")])

        # An entry leaves the outbox only after its row is committed, so once every outbox
        # is empty PostgreSQL holds all there will be. A killed worker's entries (answered
        # or not) are written by another after they sat idle, within CLAIM_WAIT_S.
        assert await wait_for(waiting, 0, timeout=CLAIM_WAIT_S) == 0, "outbox still holds entries"
    # A request cut off with its worker may or may not have been decided, so the rows lie
    # between the answered and the sent checkouts.
    rows = await db.fetchval("SELECT count(*) FROM checkout_attempts")
    assert tally.answered <= rows <= tally.sent
    codes = {r["code"] for r in await db.fetch("SELECT code FROM purchases")}
    assert tally.purchased <= codes
    assert tally.unexpected == []


async def burst(server: Server, tally: Tally, midway: Callable[[], object] = lambda: None) -> None:
    """BUYERS buy for BURST_S seconds; `midway` is done half-way through."""
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        crowd = [asyncio.create_task(buyer(http, f"b{n}", tally, stop)) for n in range(BUYERS)]
        await asyncio.sleep(BURST_S / 2)
        midway()
        await asyncio.sleep(BURST_S / 2)
        stop.set()
        await asyncio.gather(*crowd)


async def test_worker_killed_mid_burst_loses_nothing(
    serve: Callable[..., Any], db: asyncpg.Connection, settings: Settings
) -> None:
    server = await serve(sale_size=SALE_SIZE, user_limit=5, workers=2)
    tally = Tally()
    victim = workers_of(server.process.pid)[0]
    await burst(server, tally, midway=lambda: os.kill(victim, signal.SIGKILL))
    assert tally.answered > 100 and victim not in workers_of(server.process.pid)
    await assert_nothing_lost(db, settings, tally)


# An orderly stop ends well within this (the workers drain their commits and flushers).
STOP_WITHIN_S = 10


@pytest.mark.parametrize("to", ["master", "group"])
async def test_sigterm_drains_everything_and_exits_in_bounded_time(
    serve: Callable[..., Any], db: asyncpg.Connection, settings: Settings, to: str
) -> None:
    """SIGTERM to the master (a container's stop), or to the whole process group (Ctrl-C in
    a terminal, `kill -- -PID`, a supervisor, where each worker gets it twice): an orderly
    stop, within STOP_WITHIN_S, that replaces no worker on the way out."""
    server = await serve(sale_size=SALE_SIZE, user_limit=5, workers=2)
    tally = Tally()
    await burst(server, tally)
    started = time.monotonic()
    if to == "master":
        server.process.send_signal(signal.SIGTERM)
    else:
        os.killpg(server.process.pid, signal.SIGTERM)
    assert await asyncio.to_thread(server.process.wait, 30) == 0
    assert time.monotonic() - started < STOP_WITHIN_S
    assert "Respawning" not in log_tail(server.log_path, 100_000)
    # The server is gone: what is in PostgreSQL now is all there will ever be.
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == tally.answered
    await assert_nothing_lost(db, settings, tally)


async def test_a_worker_killed_twice_in_a_row_does_not_take_the_server_down(
    serve: Callable[..., Any], db: asyncpg.Connection, settings: Settings
) -> None:
    """granian gives up on a worker that dies within 5.5 s of its respawn; notsale serve
    starts granian again, so the service keeps serving."""
    server = await serve(sale_size=SALE_SIZE, workers=2)
    for _ in range(2):
        before = set(workers_of(server.process.pid))
        os.kill(max(before), signal.SIGKILL)  # the second time: the one just respawned

        async def respawned(before: set[int] = before) -> bool:
            now = set(workers_of(server.process.pid))
            return len(now) == 2 and now != before

        assert await wait_for(respawned, True)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert await wait_for(lambda: health_status(http), 200, timeout=20) == 200
    assert server.process.poll() is None
