"""What the controllers share: a sale id read from a request, a sale's counters and its
body, a purchase's body, answers that a client revalidates (ETag, 304), and how long a probe
of a store may take."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection, Mapping
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.openapi import ResponseSpec

from notsale.api import params
from notsale.api.hot import current
from notsale.api.models import PurchaseBody, SaleBody
from notsale.catalog import item_name
from notsale.clock import current_sale, rfc3339, sale_window
from notsale.config import Terms
from notsale.errors import ErrorCode, NotsaleError
from notsale.services import Services
from notsale.store import queries
from notsale.store.pool import PG_DOWN
from notsale.store.rows import PurchaseRow

# A health check answers within about this long, whatever state the stores are in.
PROBE_TIMEOUT_S = 1.0
ENCODER = msgspec.json.Encoder()
# Revalidated answers are asked again each time, and answered 304 while unchanged.
NOT_MODIFIED = {304: ResponseSpec(None, description="Unchanged since the `If-None-Match` tag.")}


def etag(body: bytes) -> str:
    """A weak tag: the same for the answer compressed or not."""
    return f'W/"{hashlib.blake2b(body, digest_size=8).hexdigest()}"'


def revalidated(
    request: Request[Any, Any, Any],
    body: bytes,
    media_type: str = MediaType.JSON,
    headers: Mapping[str, str] | None = None,
    tag: str | None = None,
) -> Response[bytes]:
    """`body`, or 304 and no body when the client's copy (If-None-Match) is current: a page
    that polls an unchanged answer gets a few hundred bytes instead of it."""
    tag = tag or etag(body)
    fresh = current(request.headers.get("if-none-match", ""), tag)
    return Response(
        b"" if fresh else body,
        status_code=304 if fresh else 200,
        headers={"ETag": tag, "Cache-Control": "no-cache", **(headers or {})},
        media_type=media_type,
    )


def json_responses(body: type, errors: dict[int, ResponseSpec]) -> dict[int, ResponseSpec]:
    """The OpenAPI `responses` of a route answered by `revalidated` JSON: its body's model
    (the handler returns bytes), 304, and its errors."""
    return {
        200: ResponseSpec(body, generate_examples=False, description="OK"),
        **NOT_MODIFIED,
        **errors,
    }


async def first_sale(services: Services) -> int:
    """The first sale this deployment ran: sales before it never ran here (no phantom sales
    with generated items and pictures). Asked of PostgreSQL once per worker; while it cannot
    answer, no sale is refused for it (0)."""
    if services.first_run_ms is None:
        try:
            services.first_run_ms = await queries.first_run_ms(services.reads)
        except PG_DOWN:
            return 0
    return current_sale(services.settings.sale_seconds, services.first_run_ms)


async def started_sale(raw: str, services: Services, started: bool = True) -> int:
    """A sale id from a path or query, refused when that sale never ran here, or (unless
    `started` is False) has not started yet."""
    sale_id = params.integer(raw, "sale_id")
    last = current_sale(services.settings.sale_seconds) if started else sale_id
    if not await first_sale(services) <= sale_id <= last:
        raise NotsaleError(
            ErrorCode.ITEM_NOT_FOUND, "That sale has not started, or never ran here."
        )
    return sale_id


async def counts(
    services: Services, sale_ids: list[int], in_redis: Collection[int] | None = None
) -> dict[int, tuple[int, int]]:
    """(sold, held) of each sale: from Redis where it holds the sale, else PostgreSQL's sold
    count (and no holds: Redis keeps them, and it does not know the sale). `in_redis`: the
    only sales worth asking Redis about (default: all)."""
    asked = sale_ids if in_redis is None else [s for s in sale_ids if s in in_redis]
    found = await asyncio.gather(*(services.engine.read(s) for s in asked))
    known = {s: (int(r[0]), int(r[1])) for s, r in zip(asked, found, strict=True) if r}
    unknown = [s for s in sale_ids if s not in known]
    if unknown:
        sold = await queries.sold_counts(services.reads, unknown)
        known.update({s: (sold.get(s, 0), 0) for s in unknown})
    return known


def sale_body(sale_id: int, terms: Terms, sold: int, held: int) -> SaleBody:
    window = sale_window(sale_id, terms)
    return SaleBody(
        sale_id=sale_id,
        starts_at=rfc3339(window.starts_ms),
        ends_at=rfc3339(window.ends_ms),
        size=terms.sale_size,
        sold=sold,
        held=held,
        remaining=max(0, terms.sale_size - sold - held),
        user_limit=terms.user_limit,
    )


def purchase_body(row: PurchaseRow) -> PurchaseBody:
    return PurchaseBody(
        sale_id=row.sale_id,
        item_id=row.item_id,
        user_id=row.user_id,
        name=item_name(row.sale_id, row.item_id),
        purchased_at=row.purchased_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
