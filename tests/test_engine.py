"""The sale engine's Redis side: scripts by SHA, Redis' clock, keys that expire."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from notsale.config import Settings
from notsale.engine import sale as sale_module
from notsale.engine.clock import current_sale, now_ms, sale_window
from notsale.engine.keys import OUTBOX_REGISTRY, sale_keys
from notsale.engine.sale import KEEP_AFTER_SALE_MS
from notsale.errors import ErrorCode
from tests.conftest import open_engine


async def test_scripts_reload_after_redis_forgets_them(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with open_engine(settings) as engine:
        assert (await engine.checkout("amy", 1)).outcome is None
        await engine.redis.script_flush()
        assert (await engine.checkout("amy", 2)).outcome is None


async def test_a_crowd_rides_in_two_script_runs_decided_in_arrival_order(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A lone operation goes at once; all that arrive while it is on the wire ride together
    in the next run (engine/batch.py)."""
    async with open_engine(settings) as engine:
        assert (await engine.checkout("amy", 1)).outcome is None  # the sale is ready
        runs: list[int] = []
        send = engine._batcher._send

        async def counted(sale_id: int, words: list[Any]) -> list[Any]:
            runs.append(len(words))
            return await send(sale_id, words)

        engine._batcher._send = counted
        crowd = await asyncio.gather(*(engine.checkout(f"user{n}", 2) for n in range(50)))
    assert [d.outcome for d in crowd] == [None] + [ErrorCode.ITEM_HELD] * 49
    assert runs == [6, 49 * 6]  # a checkout is six words


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
