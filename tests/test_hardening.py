"""The contract's "Hardening": what a stranger may read, send and cost (docs/api.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from notsale.api.models import ItemsBody
from notsale.app import create_app
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import connect
from notsale.keys import OUTBOX_REGISTRY
from notsale.recovery.watch import WATCH_EVERY_S
from tests.faultproxy import in_front_of
from tests.redisserver import RedisServer
from tests.support import (
    DEPLOYED_DAYS_AGO,
    HOLDS_CAPPED,
    Client,
    Stores,
    assert_error,
    attempt_outcomes,
    backdate_deployment,
    checkout,
    closed_after,
    holds_capped_across_sales,
    purchase,
    wait_for,
)

# `notsale serve` closes a connection that sent no complete request within this long.
SILENT_CLOSED_S = 10.0
# The private Redis of the junk flood: about 1 MB of it is Redis' own.
MAXMEMORY = 2 * 1024 * 1024


async def test_every_answer_says_nosniff(client: Client) -> None:
    code = (await checkout(client, "alice", 1)).json()["code"]
    sale = current_sale(3600)
    answers = [
        await checkout(client, "bob", 2),  # a hot route's 200
        await checkout(client, "bob", 1),  # its refusal
        await checkout(client, "bob", "x"),  # its raised error
        await purchase(client, code),
        await client.get("/sales/current"),
        await client.get(f"/sales/{sale}/items/1/image.svg"),
        await client.get("/"),
        await client.get("/no-such-route"),
        await client.delete("/checkout"),
        await client.get("/schema/openapi.json"),
    ]
    assert [a.headers.get("x-content-type-options") for a in answers] == ["nosniff"] * 10


async def test_a_picture_runs_nothing_and_loads_nothing(client: Client) -> None:
    picture = await client.get(f"/sales/{current_sale(3600)}/items/1/image.svg")
    policy = picture.headers["content-security-policy"]
    assert policy == "default-src 'none'; style-src 'unsafe-inline'"


async def test_a_users_purchases_are_never_cached(client: Client) -> None:
    mine = await client.get("/users/alice/purchases")
    assert mine.status_code == 200
    assert mine.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize("path", ["/sales", "/sales/current", "/sales/{sale}/items?count=60"])
async def test_polled_reads_are_gzipped_and_answered_304_while_unchanged(
    client: Client, path: str
) -> None:
    url = path.format(sale=current_sale(3600))
    first = await client.get(url, headers={"Accept-Encoding": "gzip"})
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    tag = first.headers["etag"]
    if len(first.content) >= 500:  # smaller answers are not worth compressing
        assert first.headers["content-encoding"] == "gzip"
    unchanged = await client.get(url, headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == tag
    await checkout(client, "alice", 1)  # the sale changed: held 1, item 1 held
    await asyncio.sleep(1.1)  # what the worker kept of it (READ_CACHE_S) is stale by now
    changed = await client.get(url, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.json() != first.json()


async def test_the_admin_token_guards_metrics(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    async with AsyncTestClient(app=create_app(make_settings(admin_token="s3cret"))) as client:
        assert_error(await client.get("/metrics"), 401, "unauthenticated")
        wrong = {"Authorization": "Bearer s3cre"}
        assert_error(await client.get("/metrics", headers=wrong), 401, "unauthenticated")
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and "notsale_requests_total" in right.text
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        assert (await client.get("/metrics")).status_code == 200  # no token: open


@pytest.mark.parametrize("spelled", ["07", "+7", "-7", "00", "7.0", " 7"])
async def test_ids_have_one_spelling(client: Client, db: asyncpg.Connection, spelled: str) -> None:
    """Canonical decimal only, on every route: one id, one URL (a cache keyed by URL
    cannot be made to miss by spelling an id another way)."""
    sale = current_sale(3600)
    query = {"user_id": "u", "id": spelled}
    assert_error(await client.post("/checkout", params=query), 400, "invalid_request")
    query = {"user_id": "u", "id": "7", "sale_id": spelled}
    assert_error(await client.post("/checkout", params=query), 400, "invalid_request")
    for path in (
        f"/sales/{spelled}/items/7",
        f"/sales/{sale}/items/{spelled}",
        f"/sales/{sale}/items/{spelled}/image.svg",
    ):
        assert_error(await client.get(path), 400, "invalid_request")
    for query in ({"from": spelled}, {"count": spelled}):
        assert_error(await client.get(f"/sales/{sale}/items", params=query), 400, "invalid_request")
    assert await attempt_outcomes(db, 2) == ["invalid_request"] * 2


async def test_an_items_page_holds_at_most_100_items(client: Client) -> None:
    sale = current_sale(3600)
    page = await client.get(f"/sales/{sale}/items", params={"from": "1", "count": "100"})
    assert page.status_code == 200  # the test sale has 20 items: all of them
    too_many = await client.get(f"/sales/{sale}/items", params={"count": "101"})
    assert_error(too_many, 400, "invalid_request")


async def test_the_purchase_code_may_come_in_a_json_body(client: Client) -> None:
    code = (await checkout(client, "alice", 1)).json()["code"]
    bought = await client.post("/purchase", json={"code": code})
    assert bought.status_code == 200 and bought.json()["item_id"] == 1
    assert (await client.post("/purchase", json={"code": code})).json() == bought.json()
    assert (await purchase(client, code)).json() == bought.json()  # the query: the same
    for body in (
        b'{"code": 1}',
        b'{"code": "x", "more": 1}',
        b"not json",
        b'{"code": "' + b"a" * 2000 + b'"}',
    ):
        answer = await client.post("/purchase", content=body)
        assert_error(answer, 400, "invalid_request")
    both = await client.post("/purchase", params={"code": code}, json={"code": code})
    assert_error(both, 400, "invalid_request")


@pytest.fixture
async def deployed_now(stores: Stores) -> AsyncIterator[None]:
    """This deployment first ran now: every earlier sale never ran here."""
    await backdate_deployment(stores.database_url, 0)
    yield
    await backdate_deployment(stores.database_url, DEPLOYED_DAYS_AGO)


async def test_sales_before_the_first_one_never_ran_here(
    deployed_now: None, client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    running = current_sale(settings.sale_seconds)
    older = running - 1
    listed = [s["sale_id"] for s in (await client.get("/sales")).json()["sales"]]
    assert listed == [running]
    for path in (
        f"/sales/{older}/items",
        f"/sales/{older}/items/1",
        f"/sales/{older}/items/1/image.svg",
    ):
        assert_error(await client.get(path), 404, "item_not_found")
    other = await client.get("/users/alice/purchases", params={"sale_id": str(older)})
    assert_error(other, 404, "item_not_found")
    named = {"user_id": "u", "id": "1", "sale_id": str(older)}
    assert_error(await client.post("/checkout", params=named), 404, "item_not_found")
    assert await attempt_outcomes(db, 1) == ["item_not_found"]
    assert_error(await purchase(client, "A" * 22 + str(older)), 404, "code_not_found")
    assert (await client.get(f"/sales/{running}/items/1")).status_code == 200


async def registry(settings: Settings) -> set[str]:
    async with connect(settings.redis_url) as redis:
        return set(await redis.smembers(OUTBOX_REGISTRY))


async def test_made_up_codes_of_other_sales_never_reach_the_outbox_registry(
    client: Client, settings: Settings
) -> None:
    """Only a checkout registers a sale (makes the flushers read its outbox): codes naming
    older sales, open or long closed, cost the flushers nothing (finding 2)."""
    assert (await checkout(client, "alice", 1)).status_code == 200
    before = await registry(settings)
    running = current_sale(settings.sale_seconds)
    long_closed = running - (settings.sale_open_seconds // settings.sale_seconds) - 48
    made_up = (running - 2, running - 3, long_closed, long_closed - 1)
    for sale in made_up:
        assert_error(await purchase(client, "A" * 22 + str(sale)), 404, "code_not_found")
    assert await registry(settings) == before
    assert not before & {str(sale) for sale in made_up}


async def test_a_silent_connection_is_closed_after_10_seconds(
    serve: Callable[..., Any], db: asyncpg.Connection
) -> None:
    server = await serve(workers=1)
    port = int(server.base_url.rsplit(":", 1)[1])
    silent, half_sent, http2 = await asyncio.gather(
        asyncio.to_thread(closed_after, port, b""),
        asyncio.to_thread(closed_after, port, b"GET /health HTTP/1.1\r\nHost: x\r\n"),
        # Cleartext HTTP/2 is no client's: refused at once, or closed like any silence.
        asyncio.to_thread(closed_after, port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    )
    assert SILENT_CLOSED_S - 1 <= silent <= SILENT_CLOSED_S + 2
    assert SILENT_CLOSED_S - 1 <= half_sent <= SILENT_CLOSED_S + 2
    assert http2 <= SILENT_CLOSED_S + 2


async def test_a_junk_flood_while_postgres_is_away_never_fills_redis(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, stores: Stores
) -> None:
    """Finding 4: malformed checkouts are stored short, and while PostgreSQL refuses them
    Redis never reaches its maxmemory (it would then refuse every write, decisions too):
    past MEMORY_HIGH, checkouts get 503 before anything is decided and rows wait in the
    worker; once PostgreSQL is back, every attempt has its row."""
    junk = {"user_id": "\x01" * 300, "id": "x" * 300, "pad": "y" * 3000}
    sent = Counter[int]()
    with (
        RedisServer(
            args=("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction")
        ) as server,
        in_front_of(stores.database_url, 5432) as (postgres, database_url),
    ):
        settings = make_settings(redis_url=server.url, database_url=database_url)
        async with (
            AsyncTestClient(app=create_app(settings)) as client,
            connect(server.url) as redis,
        ):
            assert (await checkout(client, "ann", 1)).status_code == 200
            postgres.refuse()
            # A burst every 0.1 s: what Redis takes between two of the watch's measurements
            # (WATCH_EVERY_S) stays within the margin MEMORY_HIGH leaves. The flood goes on
            # for 20 bursts after the guard first refused a checkout (120 at most).
            bursts, last = 0, 120
            while bursts < last:
                answers = await asyncio.gather(
                    *(client.post("/checkout", params=junk) for _ in range(50))
                )
                sent.update(a.status_code for a in answers)
                status = (await checkout(client, "bob", 2)).status_code
                sent[status] += 1
                bursts += 1
                if status == 503:
                    last = min(last, bursts + 20)
                await asyncio.sleep(WATCH_EVERY_S / 5)
            peak = int((await redis.info("memory"))["used_memory_peak"])
            postgres.refuse(False)
            total = sum(sent.values()) + 1

            async def rows() -> int:
                return int(await db.fetchval("SELECT count(*) FROM checkout_attempts"))

            assert await wait_for(rows, total, timeout=30) == total
    assert sent[503] > 0, "checkouts were never refused for Redis' memory"
    assert sent[400] == 50 * bursts
    assert peak < MAXMEMORY
    assert await db.fetchval("SELECT max(length(raw_query)) FROM checkout_attempts") == 256
    assert await db.fetchval("SELECT max(length(user_id)) FROM checkout_attempts") == 64


async def test_item_pages_cost_redis_one_read_per_block_however_they_vary(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Finding 3: pages of every `from` and `count` are served from fixed blocks of 100
    items, each read from Redis at most once a second: varying them misses nothing."""
    settings = make_settings(sale_size=250)
    sale = current_sale(settings.sale_seconds)
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await checkout(client, "ann", 150)).status_code == 200
        engine = client.app.state.services.engine
        reads: list[tuple[Any, ...]] = []
        read = engine.read

        async def counted(*args: Any) -> Any:
            reads.append(args)
            return await read(*args)

        engine.read = counted
        pages = [(first, count) for first in (1, 37, 99, 101, 150, 201) for count in (1, 50, 100)]
        answers = await asyncio.gather(
            *(
                client.get(f"/sales/{sale}/items", params={"from": str(f), "count": str(c)})
                for f, c in pages
            )
        )
    assert len(reads) == 3  # blocks 1-100, 101-200, 201-250: once each
    for (first, count), answer in zip(pages, answers, strict=True):
        items = answer.json()["items"]
        assert [i["item_id"] for i in items] == list(range(first, min(first + count, 251)))
        held = [i["item_id"] for i in items if i["status"] == "held"]
        assert held == ([150] if first <= 150 < first + count else [])
        # Written from the blocks' bytes, exactly as the model encodes.
        model = msgspec.json.decode(answer.content, type=ItemsBody)
        assert answer.content == msgspec.json.encode(model)


async def test_an_items_page_answered_straight_is_litestars_answer(client: Client) -> None:
    """The items page skips Litestar's router (api/hot.py); the same path with a trailing
    slash goes through it, and both answer alike: body, tag, 304, gzip, errors, metrics."""
    sale = current_sale(3600)
    await checkout(client, "ann", 3)
    query = {"from": "2", "count": "15"}
    straight, routed = [
        await client.get(f"/sales/{sale}/items{tail}", params=query) for tail in ("", "/")
    ]
    assert straight.content == routed.content
    assert straight.headers["etag"] == routed.headers["etag"]
    for answer in (straight, routed):
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-cache"
    assert [i["status"] for i in straight.json()["items"]][:2] == ["available", "held"]
    tag = {"If-None-Match": straight.headers["etag"]}
    unchanged = await client.get(f"/sales/{sale}/items", params=query, headers=tag)
    assert unchanged.status_code == 304 and unchanged.content == b""
    zipped = await client.get(f"/sales/{sale}/items", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()["items"][2]["status"] == "held"  # httpx unzipped it
    assert_error(await client.get(f"/sales/{sale}/items?from=07"), 400, "invalid_request")
    assert_error(await client.get(f"/sales/{sale + 1}/items"), 404, "item_not_found")
    assert_error(await client.post(f"/sales/{sale}/items"), 405, "method_not_allowed")


async def test_a_hold_let_expire_cannot_be_retaken_at_once_by_its_user(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Finding 7's cooldown: the user who let a hold expire gets 429 `cooldown` (with
    Retry-After) for that item for NOTSALE_COOLDOWN_SECONDS; anyone else may take it, and
    the limit takes precedence."""
    settings = make_settings(hold_seconds=1, cooldown_seconds=3, user_limit=2)
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await checkout(client, "ann", 1)).status_code == 200
        assert (await checkout(client, "ann", 2)).status_code == 200
        await asyncio.sleep(1.2)  # both holds expired
        again = await checkout(client, "ann", 1)
        assert_error(again, 429, "cooldown")
        assert 1 <= int(again.headers["retry-after"]) <= 3
        assert (await checkout(client, "bob", 2)).status_code == 200  # anyone else: at once
        assert (await checkout(client, "ann", 3)).status_code == 200  # another item: at once
        assert (await checkout(client, "ann", 4)).status_code == 200
        # At the limit (two live holds), the limit is what she is told.
        assert_error(await checkout(client, "ann", 1), 429, "user_limit")
        await asyncio.sleep(3.2)  # her holds expired again, the cooldown on item 1 is over
        assert (await checkout(client, "ann", 1)).status_code == 200
    outcomes = await attempt_outcomes(db, 8)
    assert sorted(outcomes) == sorted(["ok"] * 6 + ["cooldown", "user_limit"])


async def test_a_user_holds_at_most_holds_max_items_across_open_sales(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Finding 7's cap: NOTSALE_HOLDS_MAX live holds across all open sales (on a single
    Redis; tests/test_cluster.py has the same on a cluster)."""
    settings = make_settings(**HOLDS_CAPPED)
    async with AsyncTestClient(app=create_app(settings)) as client:
        await holds_capped_across_sales(client, current_sale(settings.sale_seconds))
    outcomes = await attempt_outcomes(db, 11)
    assert sorted(outcomes) == sorted(["ok"] * 8 + ["holds_max"] * 2 + ["user_limit"])
