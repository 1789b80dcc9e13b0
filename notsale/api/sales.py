"""GET /sales…: the open sales, a sale's counters, pages of items, an item and its picture.

Reads never rebuild a sale. An open sale that Redis holds complete is read there, in one
read.lua call per answer (a whole grid page included); any other sale (closed, or not
known to Redis: untouched since Redis restarted, say) is read from PostgreSQL, where every
purchase is. Answers that poll (the open sales, item pages) are kept for READ_CACHE_S per
worker: a page polling many times a second costs Redis once. Every read carries an ETag, and
a client whose copy is current gets 304 (a tab polling an unchanged sale gets no body).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable
from typing import Annotated, Any, NamedTuple

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import MultiDict
from litestar.params import FromPath, Parameter, QueryParameter
from litestar.types import Receive, Scope, Send

from notsale.api import params
from notsale.api.errors import error_responses
from notsale.api.hot import GetRoute, query_of, send_revalidated
from notsale.api.models import ItemBody, ItemsBody, OpenSaleBody, SaleBody, SalesBody
from notsale.api.params import PAGE_MAX
from notsale.api.shared import (
    ENCODER,
    NOT_MODIFIED,
    counts,
    first_sale,
    json_responses,
    revalidated,
    sale_body,
    started_sale,
)
from notsale.catalog import image_url, item_name, item_svg
from notsale.clock import current_sale, now_ms, rfc3339, sale_window, unclosed_sales
from notsale.errors import ErrorCode
from notsale.pictures import PICTURE_VERSION
from notsale.services import Services, ServicesDep, services_of
from notsale.store import queries

ITEM_ERRORS = error_responses(ErrorCode.ITEM_NOT_FOUND)
Req = Request[Any, Any, Any]
PAGE_DEFAULT = 100
# Item statuses are read from Redis, and kept, by fixed blocks of this many (see
# page); a page of at most PAGE_MAX items spans at most two.
BLOCK = 100
# Pictures never change for a given (sale, item, PICTURE_VERSION).
IMMUTABLE = "public, max-age=31536000, immutable"
# A picture opened on its own runs nothing and loads nothing (its style is inline).
PICTURE_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


async def statuses(services: Services, sale_id: int, first: int, count: int) -> list[str]:
    if sale_window(sale_id, await services.terms.of(sale_id, fix=False)).closes_ms > now_ms():
        found = await services.engine.read(sale_id, first, count)
        if found is not None:
            return [str(status) for status in found]
    sold = await queries.sold_items(services.reads, sale_id, first, count)
    return ["sold" if item in sold else "available" for item in range(first, first + count)]


class Block(NamedTuple):
    """A block of a sale's items as the items page writes them, each item's JSON encoded, and
    a tag of their statuses."""

    tag: str
    items: list[bytes]


async def block(services: Services, sale_id: int, index: int, size: int) -> Block:
    first = index * BLOCK + 1
    found = await statuses(services, sale_id, first, min(BLOCK, size - first + 1))
    items = [
        ENCODER.encode(
            ItemBody(sale_id, item, item_name(sale_id, item), image_url(sale_id, item), s)
        )
        for item, s in enumerate(found, first)
    ]
    return Block(
        hashlib.blake2b("".join(s[0] for s in found).encode(), digest_size=8).hexdigest(), items
    )


async def page(services: Services, sale_raw: str, query: MultiDict[str]) -> tuple[bytes, str]:
    """An items page (GET /sales/{sale_id}/items) and its ETag. Its items are read by fixed
    blocks of BLOCK, each kept for a second, encoded: however a client varies `from` and
    `count`, a page costs Redis at most two block reads a second (a sale has at most
    SALE_SIZE / BLOCK blocks to keep), and the worker a join of bytes."""
    sale = await started_sale(sale_raw, services)
    size = (await services.terms.of(sale, fix=False)).sale_size
    first = params.item_id(params.single(query, "from"), size, "from") if "from" in query else 1
    wanted = params.integer(params.single(query, "count"), "count") if "count" in query else 0
    if "count" in query and not 1 <= wanted <= PAGE_MAX:
        raise params.invalid(f"`count` must be 1 to {PAGE_MAX}.")
    count = min(wanted or PAGE_DEFAULT, size - first + 1)
    indexes = range((first - 1) // BLOCK, (first + count - 2) // BLOCK + 1)

    def read(index: int) -> Awaitable[Block]:
        return services.recent.get(
            ("items", sale, index), lambda: block(services, sale, index, size)
        )

    blocks = await asyncio.gather(*map(read, indexes))
    skip = first - 1 - indexes[0] * BLOCK
    items = [item for b in blocks for item in b.items][skip : skip + count]
    # As ENCODER writes an ItemsBody (a test holds them equal).
    body = b'{"sale_id":%d,"items":[%b]}' % (sale, b",".join(items))
    tags = "".join(b.tag for b in blocks)
    return body, f'W/"{sale}-{first}-{count}-{tags}"'


async def items_page(scope: Scope, receive: Receive, send: Send) -> None:
    """GET /sales/{sale_id}/items, answered straight (notsale.api.hot): anyone may ask for it
    as often as for a checkout, and Litestar's machinery had cost it 4 times a checkout's
    worker CPU (bench/RESULTS.md)."""
    body, tag = await page(services_of(scope), scope["path"].split("/")[2], query_of(scope))
    await send_revalidated(scope, send, body, tag)


ITEMS_PAGE = GetRoute(re.compile(r"/sales/[^/]+/items"), "/sales/{sale_id}/items", items_page)


async def open_sales(services: Services) -> bytes:
    first = await first_sale(services)
    sale_ids = [sale for sale in unclosed_sales(services.settings) if sale >= first]
    terms = await services.terms.of_many(sale_ids, fix=False)
    # Of up to a week of hourly sales, Redis holds those that saw a checkout: one call for
    # which, one per such sale, and one PostgreSQL query for the rest.
    in_redis = {*await services.engine.registered(), *sale_ids[:1]}
    found = await counts(services, sale_ids, in_redis)
    body = SalesBody(
        [
            OpenSaleBody(
                **msgspec.structs.asdict(sale_body(sale, terms[sale], *found[sale])),
                closes_at=rfc3339(sale_window(sale, terms[sale]).closes_ms),
            )
            for sale in sale_ids
            if found[sale][0] < terms[sale].sale_size  # sold out: closed
        ]
    )
    return ENCODER.encode(body)


class SalesController(Controller):
    path = "/sales"
    tags = ("sales",)

    @get(
        summary="The open sales, newest first",
        responses=json_responses(SalesBody, error_responses(parameters=False)),
    )
    async def open(self, request: Req, services: ServicesDep) -> Response[bytes]:
        return revalidated(
            request, await services.recent.get("sales", lambda: open_sales(services))
        )

    @get(
        "/current",
        summary="The running sale",
        responses=json_responses(SaleBody, error_responses(parameters=False)),
    )
    async def current(self, request: Req, services: ServicesDep) -> Response[bytes]:
        sale_id = current_sale(services.settings.sale_seconds)
        sold, held = (await counts(services, [sale_id]))[sale_id]
        body = sale_body(sale_id, await services.terms.of(sale_id, fix=False), sold, held)
        return revalidated(request, ENCODER.encode(body))

    @get(
        "/{sale_id:str}/items",
        summary="A page of a sale's items with their status",
        responses=json_responses(ItemsBody, ITEM_ERRORS),
    )
    async def items(
        self,
        request: Req,
        services: ServicesDep,
        sale_id: FromPath[str],
        from_: Annotated[str | None, QueryParameter(name="from", description="default 1")] = None,
        count: Annotated[
            str | None, Parameter(description=f"1..{PAGE_MAX}, default {PAGE_DEFAULT}")
        ] = None,
    ) -> Response[bytes]:
        # Reached only by paths Litestar normalizes (a trailing slash): see ITEMS_PAGE.
        body, tag = await page(services, sale_id, request.query_params)
        return revalidated(request, body, tag=tag)

    @get(
        "/{sale_id:str}/items/{item_id:str}",
        summary="One item and its status",
        responses=json_responses(ItemBody, ITEM_ERRORS),
    )
    async def item(
        self, request: Req, services: ServicesDep, sale_id: FromPath[str], item_id: FromPath[str]
    ) -> Response[bytes]:
        sale = await started_sale(sale_id, services)
        item = params.item_id(item_id, (await services.terms.of(sale, fix=False)).sale_size)
        [status] = await statuses(services, sale, item, 1)
        body = ItemBody(sale, item, item_name(sale, item), image_url(sale, item), status)
        return revalidated(request, ENCODER.encode(body))

    @get(
        "/{sale_id:str}/items/{item_id:str}/image.svg",
        summary="The item's picture",
        responses={**ITEM_ERRORS, **NOT_MODIFIED},
        media_type="image/svg+xml",
    )
    async def image(
        self,
        request: Req,
        services: ServicesDep,
        sale_id: FromPath[str],
        item_id: FromPath[str],
    ) -> Response[str]:
        sale = await started_sale(sale_id, services)
        item = params.item_id(item_id, (await services.terms.of(sale, fix=False)).sale_size)
        etag = f'"{PICTURE_VERSION}-{sale}-{item}"'
        headers = {
            "ETag": etag,
            "Cache-Control": IMMUTABLE,
            "Content-Security-Policy": PICTURE_POLICY,
        }
        if request.headers.get("if-none-match") == etag:
            return Response("", status_code=304, headers=headers, media_type="image/svg+xml")
        return Response(item_svg(sale, item), media_type="image/svg+xml", headers=headers)
