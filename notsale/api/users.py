"""GET /users/{user_id}/purchases: what a user bought in a sale, as PostgreSQL has it."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import FromPath, Parameter

from notsale.api import params
from notsale.api.errors import error_responses
from notsale.api.models import PurchasesBody
from notsale.api.shared import purchase_body, started_sale
from notsale.clock import current_sale
from notsale.errors import ErrorCode
from notsale.services import ServicesDep
from notsale.store import queries


class UsersController(Controller):
    path = "/users"
    tags = ("users",)

    @get(
        "/{user_id:str}/purchases",
        summary="A user's purchases in one sale",
        responses=error_responses(
            ErrorCode.ITEM_NOT_FOUND, ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN
        ),
        # Someone's purchases: never kept by a shared cache, nor by the browser.
        response_headers={"Cache-Control": "private, no-store"},
    )
    async def purchases(
        self,
        request: Request[Any, Any, Any],
        services: ServicesDep,
        user_id: FromPath[str],
        sale_id: Annotated[str | None, Parameter(description="default: the running sale")] = None,
    ) -> PurchasesBody:
        # With identity jwt, only the token's subject reads them (401, 403).
        user = services.identity.user(request.scope["headers"], params.user_id(user_id))
        query = request.query_params
        sale = (
            await started_sale(params.single(query, "sale_id"), services)
            if "sale_id" in query
            else current_sale(services.settings.sale_seconds)
        )
        rows = await queries.user_purchases(services.reads, sale, user)
        return PurchasesBody(sale, user, [purchase_body(r) for r in rows])
