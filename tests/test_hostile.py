"""Hostile input: thousands of generated requests, never a 5xx, always the JSON error body,
and nothing written but the attempt rows the contract asks for."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support import wait_for

Client = AsyncTestClient[Any]

# Each route, and its path in the OpenAPI document (None: a path of any name).
ROUTES = {
    "/checkout": "/checkout",
    "/purchase": "/purchase",
    "/sales/current": "/sales/current",
    "/sales/{a}/items/{b}": "/sales/{sale_id}/items/{item_id}",
    "/sales/{a}/items/{b}/image.svg": "/sales/{sale_id}/items/{item_id}/image.svg",
    "/users/{a}/purchases": "/users/{user_id}/purchases",
    "/sales/{a}/queue": "/sales/{sale_id}/queue",
    "/health": "/health",
    "/metrics": "/metrics",
    "/{a}": None,
}
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


@functools.cache
def paths(app: Litestar) -> dict[str, Any]:
    """The OpenAPI document's paths (built once per app: it takes a while)."""
    return dict(app.openapi_schema.to_schema()["paths"])


def documented(client: Client, path: str, method: str) -> set[int]:
    """The statuses the OpenAPI document lists for `method` on `path`; for a method it does
    not list, 405 (the reads also answer OPTIONS, 204)."""
    item = paths(client.app)[path]
    if method.lower() in item:
        return {int(status) for status in item[method.lower()]["responses"]}
    return {204, 405} if method == "OPTIONS" and "get" in item else {405}


def render(route: str, a: str, b: str, query: list[tuple[str, str]]) -> str:
    path = route.format(a=quote(a, safe="") or "x", b=quote(b, safe="") or "x")
    return path + "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(list(ROUTES)),
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
    if ROUTES[route] is not None and "%2F" not in response.request.url.raw_path.decode():
        # Exactly the statuses the document lists (a slash in a name may reach another route).
        allowed = documented(client, ROUTES[route], method)
        assert response.status_code in allowed, (method, route, response.status_code, allowed)
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
