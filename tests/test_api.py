"""The HTTP contract, route by route, against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import asyncpg
import pytest
import yaml
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.clock import current_sale
from notsale.config import Settings
from tests.support import Client, assert_error, attempt_outcomes, checkout, purchase

CODE = re.compile(r"[A-Za-z0-9_-]{22,}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def test_checkout_returns_code_bound_to_sale_item_and_hold_expiry(
    client: Client, settings: Settings
) -> None:
    response = await checkout(client, "alice", 7)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"code", "sale_id", "item_id", "name", "image_url", "expires_at"}
    assert CODE.fullmatch(body["code"])
    assert body["sale_id"] == current_sale(settings.sale_seconds)
    assert body["item_id"] == 7
    assert body["name"] and body["name"] != "item 7"
    assert body["image_url"] == f"/sales/{body['sale_id']}/items/7/image.svg"
    assert RFC3339.fullmatch(body["expires_at"])
    image = await client.get(body["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"].startswith("image/svg+xml")


async def test_second_checkout_by_same_user_returns_same_code(client: Client) -> None:
    first = (await checkout(client, "alice", 3)).json()
    await asyncio.sleep(1.1)  # a new hold would expire a second later
    second = (await checkout(client, "alice", 3)).json()
    assert second["code"] == first["code"]
    assert second["expires_at"] == first["expires_at"]


async def test_checkout_of_item_held_by_another_user_is_409_item_held(client: Client) -> None:
    assert (await checkout(client, "alice", 3)).status_code == 200
    assert_error(await checkout(client, "bob", 3), 409, "item_held")


async def test_checkout_of_sold_item_is_409_item_sold(client: Client) -> None:
    code = (await checkout(client, "alice", 3)).json()["code"]
    assert (await purchase(client, code)).status_code == 200
    assert_error(await checkout(client, "bob", 3), 409, "item_sold")
    assert_error(await checkout(client, "alice", 3), 409, "item_sold")


async def test_user_limit_counts_holds_and_purchases(client: Client, settings: Settings) -> None:
    codes = [(await checkout(client, "carol", i)).json()["code"] for i in range(1, 4)]
    assert (await purchase(client, codes[0])).status_code == 200
    assert_error(await checkout(client, "carol", 4), 429, "user_limit")
    # A hold already counted is given back even at the limit.
    assert (await checkout(client, "carol", 2)).json()["code"] == codes[1]
    assert (await checkout(client, "dave", 4)).status_code == 200


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ({"id": "1"}, 400, "invalid_request"),
        ({"user_id": "u"}, 400, "invalid_request"),
        ({"user_id": "", "id": "1"}, 400, "invalid_request"),
        ({"user_id": "a" * 65, "id": "1"}, 400, "invalid_request"),
        ({"user_id": "bad user", "id": "1"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "x"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "1.5"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "99999999999999999999999"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "0"}, 404, "item_not_found"),
        ({"user_id": "u", "id": "-3"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "+3"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "03"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "00"}, 400, "invalid_request"),
        ({"user_id": "u", "id": "21"}, 404, "item_not_found"),
        ({"user_id": "u", "id": "9223372036854775807"}, 404, "item_not_found"),
    ],
)
async def test_bad_checkout_is_refused_and_still_recorded(
    client: Client, db: asyncpg.Connection, query: dict[str, str], status: int, error: str
) -> None:
    assert_error(await client.post("/checkout", params=query), status, error)
    assert await attempt_outcomes(db, 1) == [error]
    assert await db.fetchval("SELECT count(*) FROM purchases") == 0


async def test_repeated_parameter_is_invalid_and_recorded_with_raw_query(
    client: Client, db: asyncpg.Connection
) -> None:
    response = await client.post("/checkout?user_id=a&user_id=b&id=1")
    assert_error(response, 400, "invalid_request")
    await attempt_outcomes(db, 1)
    row = await db.fetchrow("SELECT user_id, item_id, raw_query FROM checkout_attempts")
    assert (row["user_id"], row["item_id"]) == ("a,b", 1)
    assert row["raw_query"] == "user_id=a&user_id=b&id=1"


async def test_huge_malformed_values_are_recorded_cut_short(
    client: Client, db: asyncpg.Connection
) -> None:
    response = await client.post("/checkout", params={"user_id": "x" * 5000, "id": "9" * 5000})
    assert_error(response, 400, "invalid_request")
    await attempt_outcomes(db, 1)
    row = await db.fetchrow("SELECT user_id, item_id, raw_query FROM checkout_attempts")
    assert len(row["user_id"]) <= 128 and row["item_id"] is None
    assert len(row["raw_query"]) <= 1024


@pytest.mark.parametrize("raw", ["%00", "a%00b", "%ED%A0%80", "%FF%FE", "%C3%28"])
async def test_nul_and_invalid_utf8_in_raw_values_are_still_recorded(
    client: Client, db: asyncpg.Connection, raw: str
) -> None:
    # PostgreSQL text refuses NUL and invalid UTF-8: such a value must not block the outbox.
    assert_error(await client.post(f"/checkout?user_id={raw}&id={raw}"), 400, "invalid_request")
    await checkout(client, "after", 1)  # a normal attempt behind it is written too
    assert await attempt_outcomes(db, 2) == ["invalid_request", "ok"]


async def test_every_checkout_becomes_one_attempt_row_with_its_outcome(
    client: Client, db: asyncpg.Connection
) -> None:
    code = (await checkout(client, "alice", 1)).json()["code"]
    await checkout(client, "alice", 1)
    await checkout(client, "bob", 1)
    await purchase(client, code)
    await checkout(client, "bob", 1)
    await checkout(client, "bob", 999)
    assert await attempt_outcomes(db, 5) == ["ok", "ok", "item_held", "item_sold", "item_not_found"]
    codes = await db.fetch("SELECT code FROM checkout_attempts WHERE outcome = 'ok'")
    assert {r["code"] for r in codes} == {code}


async def test_other_methods_on_checkout_are_405_and_not_attempts(
    client: Client, db: asyncpg.Connection
) -> None:
    assert_error(await client.get("/checkout?user_id=u&id=1"), 405, "method_not_allowed")
    assert_error(await client.put("/checkout?user_id=u&id=1"), 405, "method_not_allowed")
    await checkout(client, "u", 1)
    assert await attempt_outcomes(db, 1) == ["ok"]


async def test_purchase_is_committed_before_200_and_repeats_same_body(
    client: Client, db: asyncpg.Connection
) -> None:
    code = (await checkout(client, "alice", 5)).json()["code"]
    first = await purchase(client, code)
    assert first.status_code == 200, first.text
    row = await db.fetchrow("SELECT * FROM purchases WHERE code = $1", code)
    assert row is not None and (row["item_id"], row["user_id"]) == (5, "alice")
    body = first.json()
    assert set(body) == {"sale_id", "item_id", "user_id", "name", "purchased_at"}
    again = await purchase(client, code)
    assert again.status_code == 200 and again.json() == body
    assert await db.fetchval("SELECT count(*) FROM purchases") == 1


async def test_purchase_errors(client: Client) -> None:
    assert_error(await client.post("/purchase"), 400, "invalid_request")
    assert_error(await purchase(client, "not a code!"), 400, "invalid_request")
    assert_error(await purchase(client, "x" * 65), 400, "invalid_request")
    assert_error(await purchase(client, "A" * 22 + "1"), 404, "code_not_found")
    assert_error(await purchase(client, "whatever"), 404, "code_not_found")


async def test_hold_expires_then_code_is_410_and_item_is_free_again(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    async with AsyncTestClient(app=create_app(make_settings(hold_seconds=1))) as client:
        code = (await checkout(client, "alice", 2)).json()["code"]
        assert_error(await checkout(client, "bob", 2), 409, "item_held")
        await asyncio.sleep(1.2)
        assert_error(await purchase(client, code), 410, "code_expired")
        bob = await checkout(client, "bob", 2)
        assert bob.status_code == 200 and bob.json()["code"] != code
        status = await client.get(f"/sales/{bob.json()['sale_id']}/items/2")
        assert status.json()["status"] == "held"


async def test_expired_holds_no_longer_count_against_the_user(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    async with AsyncTestClient(app=create_app(make_settings(hold_seconds=1))) as client:
        for item in (1, 2, 3):
            assert (await checkout(client, "erin", item)).status_code == 200
        assert_error(await checkout(client, "erin", 4), 429, "user_limit")
        await asyncio.sleep(1.2)
        assert (await checkout(client, "erin", 4)).status_code == 200


async def test_a_sale_closed_at_rollover_expires_its_codes_and_the_next_has_fresh_stock(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    settings = make_settings(sale_seconds=2, sale_open_seconds=2, sale_size=2, user_limit=2)
    async with AsyncTestClient(app=create_app(settings)) as client:
        # Start just after a sale begins, so the whole test fits in two sales.
        await asyncio.sleep(2 - time.time() % 2 + 0.05)
        first = (await checkout(client, "frank", 1)).json()
        held = (await checkout(client, "frank", 2)).json()
        assert (await purchase(client, first["code"])).status_code == 200
        assert_error(await checkout(client, "gina", 1), 409, "item_sold")
        await asyncio.sleep(2)
        again = (await checkout(client, "gina", 1)).json()
        assert again["sale_id"] == first["sale_id"] + 1
        assert_error(await purchase(client, held["code"]), 410, "code_expired")
        # The old sale's purchase still answers the same.
        assert (await purchase(client, first["code"])).status_code == 200
        assert (await checkout(client, "frank", 2)).status_code == 200


async def test_sales_current_counts_sold_and_held(client: Client, settings: Settings) -> None:
    code = (await checkout(client, "alice", 1)).json()["code"]
    await checkout(client, "bob", 2)
    await purchase(client, code)
    body = (await client.get("/sales/current")).json()
    assert body["sale_id"] == current_sale(settings.sale_seconds)
    assert (body["size"], body["sold"], body["held"], body["remaining"]) == (20, 1, 1, 18)
    assert body["user_limit"] == 3
    assert RFC3339.fullmatch(body["starts_at"]) and RFC3339.fullmatch(body["ends_at"])


async def test_item_status_and_its_errors(client: Client, settings: Settings) -> None:
    sale = current_sale(settings.sale_seconds)
    body = (await client.get(f"/sales/{sale}/items/4")).json()
    assert body["status"] == "available" and body["name"]
    code = (await checkout(client, "alice", 4)).json()["code"]
    assert (await client.get(f"/sales/{sale}/items/4")).json()["status"] == "held"
    await purchase(client, code)
    assert (await client.get(f"/sales/{sale}/items/4")).json()["status"] == "sold"
    assert (await client.get(f"/sales/{sale - 1}/items/4")).json()["status"] == "available"
    assert_error(await client.get(f"/sales/{sale + 1}/items/4"), 404, "item_not_found")
    assert_error(await client.get(f"/sales/{sale}/items/21"), 404, "item_not_found")
    assert_error(await client.get(f"/sales/{sale}/items/abc"), 400, "invalid_request")
    assert_error(await client.get(f"/sales/{'9' * 30}/items/1"), 400, "invalid_request")
    assert_error(await client.get(f"/sales/{sale}/items/0/image.svg"), 404, "item_not_found")


async def test_user_purchases_lists_what_postgres_holds(client: Client, settings: Settings) -> None:
    sale = current_sale(settings.sale_seconds)
    for item in (3, 9):
        code = (await checkout(client, "hal", item)).json()["code"]
        await purchase(client, code)
    await checkout(client, "hal", 10)
    body = (await client.get("/users/hal/purchases")).json()
    assert body["sale_id"] == sale and body["user_id"] == "hal"
    assert [p["item_id"] for p in body["purchases"]] == [3, 9]
    other = (await client.get(f"/users/hal/purchases?sale_id={sale - 1}")).json()
    assert other["purchases"] == []
    assert_error(await client.get("/users/hal/purchases?sale_id=x"), 400, "invalid_request")
    assert_error(await client.get("/users/bad%20user/purchases"), 400, "invalid_request")


async def test_unknown_route_is_json_404(client: Client) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")


async def test_health_reports_both_stores(client: Client) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "postgres": "ok"}


async def test_redis_unreachable_is_503_and_attempt_still_recorded(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    async with AsyncTestClient(app=create_app(settings)) as client:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "redis": "down", "postgres": "ok"}
        assert_error(await checkout(client, "ivy", 1), 503, "unavailable")
        assert_error(await checkout(client, "ivy", "x"), 400, "invalid_request")
        running = current_sale(settings.sale_seconds)
        assert_error(await purchase(client, "A" * 22 + str(running)), 503, "unavailable")
    rows = await db.fetch("SELECT outcome, user_id FROM checkout_attempts ORDER BY attempted_at")
    assert [(r["outcome"], r["user_id"]) for r in rows] == [
        ("unavailable", "ivy"),
        ("invalid_request", "ivy"),
    ]


async def test_openapi_lists_every_route_with_its_errors(client: Client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    paths = doc["paths"]
    for path in (
        "/checkout",
        "/purchase",
        "/sales/current",
        "/health",
        "/sales/{sale_id}/items/{item_id}",
        "/sales/{sale_id}/items/{item_id}/image.svg",
        "/users/{user_id}/purchases",
    ):
        assert path in paths, sorted(paths)
    checkout_responses = paths["/checkout"]["post"]["responses"]
    assert {"200", "400", "404", "409", "429", "503"} <= set(checkout_responses)
    assert {"200", "404", "410"} <= set(paths["/purchase"]["post"]["responses"])


async def test_the_openapi_document_is_served_as_json_and_no_page_loads_a_cdn(
    client: Client,
) -> None:
    document = await client.get("/schema/openapi.json")
    assert document.status_code == 200
    assert document.json()["paths"]["/checkout"]["post"]
    assert (await client.get("/schema")).json() == document.json()
    for yaml_path in ("/schema/openapi.yaml", "/schema/openapi.yml"):
        assert yaml.safe_load((await client.get(yaml_path)).text) == document.json()
    for viewer in ("/swagger", "/redoc", "/elements", "/rapidoc", "/scalar", "/x.json"):
        assert_error(await client.get("/schema" + viewer), 404, "not_found")
