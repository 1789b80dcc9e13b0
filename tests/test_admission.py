"""The waiting room (docs/api.md, "Admission: the waiting room"): tickets, the verifiable
pre-queue shuffle, admissions by capacity, and checkouts that need them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from notsale.admission import Admissions, commitment, shuffled, ticket_id
from notsale.app import create_app
from notsale.clock import current_sale, now_ms
from notsale.config import Settings, SettingsError
from notsale.connections import connect
from notsale.engine import queue
from notsale.keys import queue_keys
from tests.faultproxy import in_front_of
from tests.support import Client, Stores, assert_error, attempt_outcomes, purchase

SECRET = "s" * 32
QUEUE = {"admission": "queue", "admission_secret": SECRET}


async def join(client: Client, sale: int, user: str) -> Any:
    return await client.post(f"/sales/{sale}/queue", params={"user_id": user})


async def poll(client: Client, sale: int, ticket: str) -> Any:
    return await client.get(f"/sales/{sale}/queue", params={"ticket": ticket})


async def poll_when_due(client: Client, sale: int, state: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(state["poll_after_ms"] / 1000)
    answer = await poll(client, sale, state["ticket"])
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def checkout(client: Client, user: str, item: int, admission: str | None = None) -> Any:
    query = {"user_id": user, "id": str(item)}
    if admission is not None:
        query["admission"] = admission
    return await client.post("/checkout", params=query)


@pytest.fixture
async def queued(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> AsyncIterator[Client]:
    """A service in queue mode, with room for two active buyers."""
    async with AsyncTestClient(app=create_app(make_settings(**QUEUE, active_max=2))) as client:
        yield client


def test_an_admission_is_bound_to_its_sale_user_and_expiry_and_keys_rotate() -> None:
    old = Admissions(Settings(**QUEUE))
    later = now_ms() + 60_000
    admission = old.sign(7, "ann", later)
    assert old.valid(admission, 7, "ann", now_ms())
    assert not old.valid(admission, 8, "ann", now_ms())  # another sale
    assert not old.valid(admission, 7, "bob", now_ms())  # another user
    assert not old.valid(admission, 7, "ann", later)  # expired, once found good
    assert not Admissions(Settings(**QUEUE)).valid(admission, 7, "ann", later)  # never seen
    sale, expires, signature = admission.split(".")
    assert not old.valid(f"{sale}.{int(expires) + 1}.{signature}", 7, "ann", now_ms())
    assert not old.valid(f"07.{expires}.{signature}", 7, "ann", now_ms())
    # Another spelling of the same signature bytes (the last character's unused low bits).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert not old.valid(f"{sale}.{expires}.{signature[:-1]}{same_bytes}", 7, "ann", now_ms())
    forged = Admissions(Settings(admission="queue", admission_secret="f" * 32))
    assert not old.valid(forged.sign(7, "ann", later), 7, "ann", now_ms())
    # Rotation: the new key goes first and signs; the old one is still accepted.
    rotated = Admissions(Settings(admission="queue", admission_secret=f"{'n' * 32},{SECRET}"))
    assert rotated.valid(admission, 7, "ann", now_ms())
    assert not old.valid(rotated.sign(7, "ann", later), 7, "ann", now_ms())
    with pytest.raises(SettingsError, match="ADMISSION_SECRET"):
        Settings(admission="queue", admission_secret=f"{SECRET},short")


async def test_open_mode_admits_every_join_at_once_and_checkouts_need_nothing(
    client: Client, db: asyncpg.Connection
) -> None:
    sale = current_sale(3600)
    first = await join(client, sale, "ann")
    assert first.status_code == 200
    body = first.json()
    assert body["admitted"] is True and body["admission"] and body["position"] == 1
    assert body["ticket_id"] == ticket_id(body["ticket"]) != body["ticket"]
    assert len(body["ticket"]) >= 22 and body["remaining"] == 20
    assert (await join(client, sale, "bob")).json()["position"] == 2
    # Asking again too soon: 429 with Retry-After, and the same ticket after.
    again = await join(client, sale, "ann")
    assert_error(again, 429, "too_early")
    assert int(again.headers["retry-after"]) >= 1
    assert_error(await poll(client, sale, body["ticket"]), 429, "too_early")
    assert_error(await poll(client, sale, "x" * 22), 403, "ticket_invalid")
    assert_error(await poll(client, sale, "short"), 403, "ticket_invalid")
    later = await poll_when_due(client, sale, body)
    assert later["ticket"] == body["ticket"] and later["position"] == 1
    assert (await checkout(client, "ann", 1)).status_code == 200  # no admission needed
    assert (await checkout(client, "bob", 2, admission="junk")).status_code == 200  # ignored
    assert_error(await join(client, sale + 10, "ann"), 404, "not_found")  # not open yet
    assert_error(await join(client, 10, "ann"), 404, "item_not_found")  # never ran here


async def test_queue_mode_checkouts_need_an_admission_for_their_sale_and_user(
    queued: Client, db: asyncpg.Connection
) -> None:
    sale = current_sale(3600)
    assert_error(await checkout(queued, "ann", 1), 403, "admission_required")
    assert_error(await checkout(queued, "ann", 1, "1.2.x"), 403, "admission_invalid")
    ann = (await join(queued, sale, "ann")).json()
    assert ann["admitted"] is True and ann["admission_expires_at"]
    assert_error(await checkout(queued, "bob", 1, ann["admission"]), 403, "admission_invalid")
    held = await checkout(queued, "ann", 1, ann["admission"])
    assert held.status_code == 200
    assert (await purchase(queued, held.json()["code"])).status_code == 200  # none needed
    assert await attempt_outcomes(db, 4) == [
        "admission_required",
        "admission_invalid",
        "admission_invalid",
        "ok",
    ]


async def test_buyers_are_admitted_by_capacity_and_a_done_buyer_frees_their_place(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, monkeypatch: Any
) -> None:
    """Two active buyers at most: the third waits until one is done (bought the limit), the
    fourth until one is idle for the idle time (shortened here from 60 s)."""
    monkeypatch.setattr(queue, "IDLE_MS", 5000)
    settings = make_settings(**QUEUE, active_max=2, user_limit=1)
    sale = current_sale(settings.sale_seconds)
    async with AsyncTestClient(app=create_app(settings)) as client:
        states = [(await join(client, sale, user)).json() for user in ("ann", "bob", "cy", "di")]
        assert [s["position"] for s in states] == [1, 2, 3, 4]
        assert [s["admitted"] for s in states] == [True, True, False, False]
        assert states[2]["admission"] is None and states[2]["poll_after_ms"] >= 500
        assert states[2]["eta_seconds"] is None or states[2]["eta_seconds"] >= 0
        code = (await checkout(client, "ann", 1, states[0]["admission"])).json()["code"]
        cy = await poll_when_due(client, sale, states[2])
        assert cy["admitted"] is False  # ann holds an item: still active
        assert (await purchase(client, code)).status_code == 200  # ann is done
        cy = await poll_when_due(client, sale, cy)
        assert cy["admitted"] is True and cy["admission"]
        di = await poll_when_due(client, sale, states[3])
        assert di["admitted"] is False  # bob and cy are active
        await asyncio.sleep(2.2)  # bob has done nothing for 5 s since his admission: idle
        di = await poll_when_due(client, sale, di)
        assert di["admitted"] is True
        assert (await checkout(client, "di", 2, di["admission"])).status_code == 200


async def test_waiters_learn_the_sale_sold_out_and_nobody_is_admitted_to_it(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    settings = make_settings(**QUEUE, active_max=1, sale_size=2, user_limit=2)
    sale = current_sale(settings.sale_seconds)
    async with AsyncTestClient(app=create_app(settings)) as client:
        ann = (await join(client, sale, "ann")).json()
        bob = (await join(client, sale, "bob")).json()
        assert bob["admitted"] is False and bob["remaining"] == 2
        for item in (1, 2):
            code = (await checkout(client, "ann", item, ann["admission"])).json()["code"]
            assert (await purchase(client, code)).status_code == 200
        bob = await poll_when_due(client, sale, bob)
        assert bob["remaining"] == 0 and bob["admitted"] is False
        assert bob["poll_after_ms"] <= 1000  # waiters poll at least once a second
        assert_error(await join(client, sale, "cy"), 410, "sale_closed")


async def test_the_prequeue_is_shuffled_by_the_committed_seed_and_anyone_can_check_it(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Joins before the start have no position; at the start the seed committed to when
    the queue opened is published, and every position is sha256(seed + ticket_id)'s rank."""
    settings = make_settings(**QUEUE, sale_seconds=4, prequeue_seconds=4)
    async with AsyncTestClient(app=create_app(settings)) as client:
        sale = current_sale(settings.sale_seconds) + 1  # its queue is open: it starts < 4 s on
        if (sale * 4000) - now_ms() < 1500:  # too close to the start to join 5 before it
            await asyncio.sleep((sale * 4000 - now_ms()) / 1000 + 0.05)
            sale += 1
        before = (await client.get(f"/sales/{sale}/fairness")).json()
        assert before["seed"] is None and before["prequeued"] is None
        assert_error(await client.get(f"/sales/{sale}/fairness/prequeue"), 404, "not_found")
        early = [(await join(client, sale, f"u{n}")).json() for n in range(5)]
        assert all(e["position"] is None and e["admitted"] is False for e in early)
        assert all(e["poll_after_ms"] >= 500 for e in early)
        # Before the start: checkouts of the sale are not admitted (it has not started).
        await asyncio.sleep((sale * 4000 - now_ms()) / 1000 + 0.05)
        after = (await client.get(f"/sales/{sale}/fairness")).json()
        assert after["seed_sha256"] == before["seed_sha256"] == commitment(after["seed"])
        assert after["prequeued"] == 5
        listed = (await client.get(f"/sales/{sale}/fairness/prequeue")).json()["tickets"]
        seed = bytes.fromhex(after["seed"])
        ids = sorted(
            (e["ticket_id"] for e in early),
            key=lambda t: hashlib.sha256(seed + t.encode()).hexdigest(),
        )
        assert [t["ticket_id"] for t in listed] == ids == shuffled(after["seed"], ids)
        assert [t["position"] for t in listed] == [1, 2, 3, 4, 5]
        page = await client.get(
            f"/sales/{sale}/fairness/prequeue", params={"from": "3", "count": "1"}
        )
        assert page.json()["tickets"] == [{"ticket_id": ids[3], "position": 4}]
        late = (await join(client, sale, "late")).json()
        assert late["position"] == 6
        for e in early:
            mine = await poll_when_due(client, sale, e)
            assert mine["position"] == ids.index(e["ticket_id"]) + 1


async def test_a_redis_that_lost_the_queue_loses_tickets_not_admissions(
    queued: Client, db: asyncpg.Connection
) -> None:
    sale = current_sale(3600)
    ann = (await join(queued, sale, "ann")).json()
    # A client of the test's own: the app's runs on the test client's loop, in another thread.
    async with connect(queued.app.state.services.settings.redis_url) as redis:
        await redis.delete(list(queue_keys(sale)))  # what a restart without persistence does
    await asyncio.sleep(ann["poll_after_ms"] / 1000)
    assert_error(await poll(queued, sale, ann["ticket"]), 403, "ticket_invalid")
    assert (await checkout(queued, "ann", 1, ann["admission"])).status_code == 200
    again = (await join(queued, sale, "ann")).json()  # she joins again: a new ticket
    assert again["ticket"] != ann["ticket"] and again["admitted"]
    fairness = (await queued.get(f"/sales/{sale}/fairness")).json()
    assert fairness["seed_sha256"] == commitment(fairness["seed"])  # the seed outlived it


async def test_more_active_buyers_than_active_max_let_nobody_else_in(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """A restart with a lower NOTSALE_ACTIVE_MAX finds more buyers active than it allows:
    nobody more is let in until they are fewer."""
    wide = make_settings(**QUEUE, active_max=3)
    sale = current_sale(wide.sale_seconds)
    async with AsyncTestClient(app=create_app(wide)) as client:
        states = [(await join(client, sale, user)).json() for user in ("ann", "bob", "cy")]
        assert all(s["admitted"] for s in states)
    async with AsyncTestClient(app=create_app(make_settings(**QUEUE, active_max=1))) as client:
        di = (await join(client, sale, "di")).json()
        assert di["position"] == 4 and not di["admitted"]
        di = await poll_when_due(client, sale, di)
        assert not di["admitted"]


async def test_a_queue_whose_stores_fail_answers_503_and_its_refused_checkout_keeps_its_row(
    make_settings: Callable[..., Settings], stores: Stores, db: asyncpg.Connection
) -> None:
    """The seed is drawn in PostgreSQL at a queue's first join, the queue lives in Redis:
    either refusing is 503 `unavailable`, never 500; a checkout refused for its admission
    meanwhile still gets its one row."""
    with (
        in_front_of(stores.database_url, 5432) as (postgres, database_url),
        in_front_of(stores.redis_url, 6379) as (redis, redis_url),
    ):
        settings = make_settings(**QUEUE, database_url=database_url, redis_url=redis_url)
        sale = current_sale(settings.sale_seconds)
        async with AsyncTestClient(app=create_app(settings)) as client:
            postgres.refuse()
            assert_error(await join(client, sale, "ann"), 503, "unavailable")
            postgres.refuse(False)
            ann = (await join(client, sale, "ann")).json()
            redis.refuse()
            assert_error(await join(client, sale, "bob"), 503, "unavailable")
            await asyncio.sleep(ann["poll_after_ms"] / 1000)
            assert_error(await poll(client, sale, ann["ticket"]), 503, "unavailable")
            assert_error(await checkout(client, "bob", 1), 403, "admission_required")
            redis.refuse(False)
            assert await attempt_outcomes(db, 1) == ["admission_required"]
