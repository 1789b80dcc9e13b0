"""The sale engine's Redis side: scripts by SHA, Redis' clock, keys that expire."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from notsale.clock import KEEP_AFTER_SALE_MS, current_sale, now_ms, sale_window
from notsale.config import Settings
from notsale.engine import sale as sale_module
from notsale.engine.batch import Sender
from notsale.errors import ErrorCode
from notsale.keys import OUTBOX_REGISTRY, sale_keys
from tests.support import open_engine


async def test_scripts_reload_after_redis_forgets_them(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with open_engine(settings) as engine:
        assert (await engine.checkout("amy", 1)).outcome is None
        await engine.redis.script_flush()
        assert (await engine.checkout("amy", 2)).outcome is None


async def test_a_crowd_rides_in_one_script_run_and_latecomers_in_the_next(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Operations arriving together go in one run, decided in arrival order; those arriving
    while it is on the wire ride together in the next one (engine/batch.py)."""
    runs: list[int] = []
    on_the_wire = asyncio.Event()
    release = asyncio.Event()

    def counted(send: Sender) -> Sender:
        async def run(sale_id: int, words: list[Any]) -> list[Any]:
            runs.append(len(words) // 8)  # a checkout is eight words
            on_the_wire.set()
            await release.wait()
            return await send(sale_id, words)

        return run

    async with open_engine(settings, through=counted) as engine:
        release.set()
        assert (await engine.checkout("amy", 1)).outcome is None  # the sale is ready
        runs.clear()
        assert (await engine.checkout("bob", 4)).outcome is None  # alone: a run of its own
        release.clear()
        on_the_wire.clear()
        crowd = asyncio.gather(*(engine.checkout(f"user{n}", 2) for n in range(20)))
        await on_the_wire.wait()
        later = asyncio.gather(*(engine.checkout(f"late{n}", 3) for n in range(30)))
        await asyncio.sleep(0.01)
        release.set()
        held = [ErrorCode.ITEM_HELD]
        assert [d.outcome for d in await crowd] == [None, *held * 19]
        assert [d.outcome for d in await later] == [None, *held * 29]
    assert runs == [1, 20, 30]


async def test_sale_keys_expire_after_their_sale_closes(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with open_engine(settings) as engine:
        decision = await engine.checkout("amy", 1)
        await engine.checkout("bob", 2)  # a hold that stays, so every key of the sale exists
        await engine.purchase(decision.sale_id, decision.code)
        window = sale_window(decision.sale_id, settings)
        expected_ms = window.closes_ms
        expected_ms += KEEP_AFTER_SALE_MS
        for key in sale_keys(decision.sale_id)[:5]:
            ttl_ms = await engine.redis.pttl(key)
            assert abs(now_ms() + ttl_ms - expected_ms) < 2000, key


async def test_all_keys_of_a_sale_share_one_hash_tag() -> None:
    tags = {key[: key.index("}") + 1] for key in sale_keys(42)}
    assert tags == {"{sale:42}"}


async def test_redis_clock_decides_the_sale_when_the_worker_clock_is_off(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = current_sale(settings.sale_seconds)
    monkeypatch.setattr(sale_module, "current_sale", lambda _seconds: real - 1)
    async with open_engine(settings) as engine:
        decision = await engine.checkout("amy", 1)
    assert decision.outcome is None and decision.sale_id == real
    assert decision.code.endswith(str(real))


async def test_the_outbox_registry_is_written_again_after_redis_lost_it(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """On a cluster the registry lives on a master of its own, whose failover may lose what
    the sale's master kept: each worker writes its open sales' entries again (watch.py)."""
    async with open_engine(settings) as engine:
        sale = (await engine.checkout("amy", 1)).sale_id
        await engine.redis.delete([OUTBOX_REGISTRY])
        await engine.register_again()
        assert await engine.registered() == [sale]
