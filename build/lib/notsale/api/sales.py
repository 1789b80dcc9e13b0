"""GET /sales/…: the running sale's counters, an item's status, an item's picture."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.params import FromPath

from notsale.api import params
from notsale.api.errors import error_responses
from notsale.api.models import ItemBody, SaleBody
from notsale.catalog import image_url, item_name, item_svg
from notsale.engine.clock import current_sale, rfc3339, sale_window
from notsale.errors import ErrorCode, NotsaleError
from notsale.services import Services, ServicesDep
from notsale.store import queries

ITEM_ERRORS = error_responses(ErrorCode.ITEM_NOT_FOUND)


def started_sale(raw: str, services: Services) -> int:
    """A sale id from a path or query, refused when that sale has not started yet."""
    sale_id = params.integer(raw, "sale_id")
    if sale_id > current_sale(services.settings.sale_seconds):
        raise NotsaleError(ErrorCode.ITEM_NOT_FOUND, "That sale has not started yet.")
    return sale_id


class SalesController(Controller):
    path = "/sales"
    tags = ("sales",)

    @get("/current", summary="The running sale", responses=error_responses())
    async def current(self, services: ServicesDep) -> SaleBody:
        s = services.settings
        sale_id = current_sale(s.sale_seconds)
        sold, held = await services.engine.counts(sale_id)
        window = sale_window(sale_id, s.sale_seconds)
        return SaleBody(
            sale_id=sale_id,
            starts_at=rfc3339(window.starts_ms),
            ends_at=rfc3339(window.ends_ms),
            size=s.sale_size,
            sold=sold,
            held=held,
            remaining=max(0, s.sale_size - sold - held),
            user_limit=s.user_limit,
        )

    @get(
        "/{sale_id:str}/items/{item_id:str}",
        summary="One item and its status",
        responses=ITEM_ERRORS,
    )
    async def item(
        self, services: ServicesDep, sale_id: FromPath[str], item_id: FromPath[str]
    ) -> ItemBody:
        sale = started_sale(sale_id, services)
        item = params.item_id(item_id, services.settings.sale_size)
        if sale == current_sale(services.settings.sale_seconds):
            status = await services.engine.item_status(sale, item)
        else:
            # An ended sale: what was bought is in PostgreSQL; nothing is held any more.
            sold = await queries.item_is_sold(services.reads, sale, item)
            status = "sold" if sold else "available"
        return ItemBody(sale, item, item_name(sale, item), image_url(sale, item), status)

    @get(
        "/{sale_id:str}/items/{item_id:str}/image.svg",
        summary="The item's picture",
        responses=ITEM_ERRORS,
        media_type="image/svg+xml",
    )
    async def image(
        self, services: ServicesDep, sale_id: FromPath[str], item_id: FromPath[str]
    ) -> Response[str]:
        sale = started_sale(sale_id, services)
        item = params.item_id(item_id, services.settings.sale_size)
        return Response(item_svg(sale, item), media_type="image/svg+xml")
