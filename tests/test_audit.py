"""`notsale audit`: items, holds and timing per user and network, and the ids that behave
like one client (docs/operating.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import connect
from notsale.recovery.audit import Queued, audit, page, readable, runs
from tests.support import Client, attempt_outcomes

SECRET = "s" * 32


async def later(seconds: float, run: Awaitable[None]) -> None:
    await asyncio.sleep(seconds)
    await run


async def buy(
    client: Client,
    sale: int,
    user: str,
    address: str,
    items: list[int],
    think_s: float,
    pay_s: float,
) -> None:
    """Join from `address`, wait `think_s`, then check out each item and pay after `pay_s`
    (an item not paid for when pay_s is negative)."""
    sent_from = {"X-Forwarded-For": address}
    joined = await client.post(f"/sales/{sale}/queue", params={"user_id": user}, headers=sent_from)
    admission = joined.json()["admission"]
    await asyncio.sleep(think_s)
    for item in items:
        query = {"user_id": user, "id": str(item), "admission": admission}
        held = await client.post("/checkout", params=query, headers=sent_from)
        assert held.status_code == 200, held.text
        if pay_s >= 0:
            await asyncio.sleep(pay_s)
            code = held.json()["code"]
            paid = await client.post("/purchase", params={"code": code}, headers=sent_from)
            assert paid.status_code == 200


async def test_the_audit_flags_ids_acting_as_one_client_and_not_a_nat_of_people(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    settings = make_settings(
        admission="queue",
        admission_secret=SECRET,
        user_limit=2,
        hold_seconds=1,
        trusted_proxies=1,
    )
    sale = current_sale(settings.sale_seconds)
    async with AsyncTestClient(app=create_app(settings)) as client:
        runs: list[Any] = [
            # A bot: three ids on one address, at once, the limit each, paying at once.
            buy(client, sale, "bot1", "10.0.0.7", [1, 2], 0, 0),
            buy(client, sale, "bot2", "10.0.0.7", [3, 4], 0, 0),
            buy(client, sale, "bot3", "10.0.0.7", [5, 6], 0, 0),
            # People behind the same NAT: they arrive at their own moments, think, and take
            # their time to pay.
            later(0.3, buy(client, sale, "ann", "10.0.0.9", [7, 8], 1.2, 0.3)),
            later(0.8, buy(client, sale, "bob", "10.0.0.9", [9], 1.5, 0.9)),
            # Someone fast on a network of their own, and a hold left to expire.
            buy(client, sale, "cy", "192.0.2.1", [10, 11], 0, 0),
            buy(client, sale, "di", "192.0.2.1", [12], 0, -1),
        ]
        await asyncio.gather(*runs)
        await attempt_outcomes(db, 12)
        await asyncio.sleep(1.1)  # di's hold expired
        async with connect(settings.redis_url) as redis:  # the app's is on another loop
            report = await audit(redis, pool, settings, sale)
    assert [f.network for f in report.flagged] == ["10.0.0.0/24"]
    assert report.flagged[0].user_ids == ["bot1", "bot2", "bot3"]
    assert report.admissions_known and report.items == 11 and report.holds == 12
    assert report.expired_holds == 1
    assert [(n.network, n.users, n.holds, n.items) for n in report.networks] == [
        ("10.0.0.0/24", 5, 9, 9),
        ("192.0.2.0/24", 2, 3, 2),
    ]
    users = {u.user_id: u for u in report.users}
    assert users["ann"].reaction_ms is not None and users["ann"].reaction_ms >= 1200
    assert users["di"].expired == 1 and users["di"].pay_ms is None
    assert not users["ann"].flagged and not users["cy"].flagged
    assert report.checkout_to_purchase is not None and report.checkout_to_purchase.count == 11
    assert sum(f for _, _, f in report.timeline) == 6  # the bot's six checkouts
    assert "FLAGGED 10.0.0.0/24" in readable(report)
    html = page(report)
    assert "<svg" in html and "bot1, bot2, bot3" in html and "<script" not in html


def test_ids_joining_one_after_the_other_are_flagged_and_a_nat_of_people_is_not() -> None:
    nat, bot = "10.0.0.0/24", "10.9.9.0/24"
    # People behind one NAT arrive among everyone else, sometimes in the same millisecond.
    queued = {f"p{n}": Queued(1000 + 100 * n, 0, nat) for n in range(30)}
    queued |= {f"s{n}": Queued(1050 + 100 * n, 0, f"192.0.{n}.0/24") for n in range(30)}
    queued |= {f"q{n}": Queued(1000 + 100 * n, 0, f"198.51.{n}.0/24") for n in range(30)}
    # A script's ids, all at once, one person's join in the middle of them.
    queued |= {f"bot{n}": Queued(7000 + n // 2, 0, bot) for n in range(20)}
    queued["late"] = Queued(7004, 0, "203.0.113.0/24")  # between bot9 and bot10
    flags = runs(queued)
    assert [f.network for f in flags] == [bot, bot]
    assert sorted(u for f in flags for u in f.user_ids) == sorted(f"bot{n}" for n in range(20))
    assert runs({f"b{n}": Queued(1000, 0, nat) for n in range(7)}) == []  # too few
