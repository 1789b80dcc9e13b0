"""Hostile input: thousands of generated requests, never a 5xx, always the JSON error body,
and nothing written but the attempt rows the contract asks for."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from tests.support import wait_for

Client = AsyncTestClient[Any]

ROUTES = [
    "/checkout",
    "/purchase",
    "/sales/current",
    "/sales/{a}/items/{b}",
    "/sales/{a}/items/{b}/image.svg",
    "/users/{a}/purchases",
    "/health",
    "/{a}",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
NAMES = ["user_id", "id", "code", "sale_id", "x"]
# Text of every kind: unicode, NUL and control characters, numbers that are not ids.
WEIRD = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "0", "-1", "1.5", "1e3", " 1", "+1", "0x1f", "9" * 40, "\x00", "%00"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="ab", min_size=2000, max_size=5000),
)
QUERY = st.lists(st.tuples(st.sampled_from(NAMES), WEIRD), max_size=5)


def render(route: str, a: str, b: str, query: list[tuple[str, str]]) -> str:
    path = route.format(a=quote(a, safe="") or "x", b=quote(b, safe="") or "x")
    return path + "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(METHODS),
    a=WEIRD,
    b=WEIRD,
    query=QUERY,
    body=st.binary(max_size=2048),
)
async def test_generated_requests_never_fail_the_server(
    client: Client,
    db: asyncpg.Connection,
    route: str,
    method: str,
    a: str,
    b: str,
    query: list[tuple[str, str]],
    body: bytes,
) -> None:
    before = await db.fetchval("SELECT count(*) FROM checkout_attempts")
    response = await client.request(method, render(route, a, b, query), content=body)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400 and method != "HEAD":
        error = response.json()
        assert set(error) == {"error", "detail"}, error
    if route == "/checkout" and method == "POST":
        # Exactly one attempt row for each POST /checkout, whatever it carried.
        async def attempts() -> int:
            return int(await db.fetchval("SELECT count(*) FROM checkout_attempts"))

        assert await wait_for(attempts, before + 1) == before + 1
    else:
        assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == before
    assert await db.fetchval("SELECT count(*) FROM purchases") == 0
