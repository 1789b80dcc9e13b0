"""Redis loses a sale's data: PostgreSQL's purchases rebuild it, and nothing sells twice."""

from __future__ import annotations

import asyncpg

from notsale import outbox
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import connect
from tests.support import Client, assert_error, checkout, notsale_cli, purchase


async def flush_redis(settings: Settings) -> None:
    async with connect(settings.redis_url) as redis:
        await redis.flushdb()


async def test_checkout_after_redis_lost_its_data_sees_the_stored_purchases(
    client: Client, settings: Settings
) -> None:
    for item in (1, 2, 3):
        code = (await checkout(client, "kim", item)).json()["code"]
        assert (await purchase(client, code)).status_code == 200
    await flush_redis(settings)
    assert_error(await checkout(client, "lee", 2), 409, "item_sold")
    assert_error(await checkout(client, "kim", 4), 429, "user_limit")
    sale = (await client.get("/sales/current")).json()
    assert (sale["sold"], sale["remaining"]) == (3, 17)
    # A purchase retried after the loss still answers the same, from PostgreSQL.
    assert (await purchase(client, code)).json()["item_id"] == 3


async def test_reads_after_redis_lost_its_data_show_the_stored_sale(
    client: Client, settings: Settings
) -> None:
    code = (await checkout(client, "rae", 4)).json()["code"]
    sale_id = (await purchase(client, code)).json()["sale_id"]
    await flush_redis(settings)
    sale = (await client.get("/sales/current")).json()
    assert (sale["sold"], sale["held"], sale["remaining"]) == (1, 0, 19)
    item = (await client.get(f"/sales/{sale_id}/items/4")).json()
    assert item["status"] == "sold"


async def test_reconcile_check_reports_differences_and_reconcile_repairs_them(
    client: Client, settings: Settings
) -> None:
    code = (await checkout(client, "max", 7)).json()["code"]
    await purchase(client, code)
    assert notsale_cli(settings, "reconcile", "--check").returncode == 0
    await flush_redis(settings)
    check = notsale_cli(settings, "reconcile", "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "missing_in_redis: item 7 (bought by max)" in check.stdout
    assert "user_count: max: PostgreSQL 1, Redis 0" in check.stdout
    repair = notsale_cli(settings, "reconcile")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "1 purchases restored" in repair.stdout
    assert notsale_cli(settings, "reconcile", "--check").returncode == 0
    assert_error(await checkout(client, "ned", 7), 409, "item_sold")


async def test_reconcile_writes_outbox_entries_left_pending(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # No server runs: these entries stand for decisions whose worker died before its flush.
    sale_id = current_sale(settings.sale_seconds)
    async with connect(settings.redis_url) as redis:
        stream = outbox.stream(sale_id)
        await redis.xgroup_create(stream, outbox.GROUP, "0", mkstream=True)
        for user in ("olga", "pat"):
            made = outbox.Checkout(f"r-{user}", user, "6", "item_held", "", "1795482486613", 0)
            await redis.xadd(stream, outbox.entry(made))
        # One was read by a consumer that then died: it sits in that consumer's pending list.
        await redis.xreadgroup(outbox.GROUP, "dead-worker", streams={stream: ">"}, count=1)
    repair = notsale_cli(settings, "reconcile", "--sale-id", str(sale_id))
    assert repair.returncode == 0, repair.stdout + repair.stderr
    users = await db.fetch("SELECT user_id FROM checkout_attempts ORDER BY user_id")
    assert [r["user_id"] for r in users] == ["olga", "pat"]


async def test_a_user_whose_stored_seqs_have_a_gap_can_still_reach_the_limit(
    client: Client, settings: Settings, db: asyncpg.Connection
) -> None:
    """PostgreSQL holds the user's purchases 1 and 3 (the one between was refused: Redis had
    lost writes), limit 3. After the rebuild Redis counts 2 and takes the free seq, 2, for
    the next purchase (3 would collide): the user buys their third item, not a fourth."""
    sale = current_sale(settings.sale_seconds)
    for item, seq in ((1, 1), (2, 3)):
        await db.execute(
            "INSERT INTO purchases (sale_id, item_id, user_id, code, purchased_at, user_seq)"
            " VALUES ($1, $2, 'gil', $3, now(), $4)",
            sale,
            item,
            f"gap{item}code{sale}",
            seq,
        )
    await flush_redis(settings)  # the next checkout rebuilds the sale from PostgreSQL
    code = (await checkout(client, "gil", 3)).json()["code"]
    assert (await purchase(client, code)).status_code == 200
    assert_error(await checkout(client, "gil", 4), 429, "user_limit")
    seqs = await db.fetch("SELECT user_seq FROM purchases WHERE user_id = 'gil' ORDER BY 1")
    assert [r["user_seq"] for r in seqs] == [1, 2, 3]
