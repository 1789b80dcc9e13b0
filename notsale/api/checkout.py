"""POST /checkout: put a hold on an item; every request becomes one checkout_attempts row."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from litestar import Controller, Request, Response, post
from litestar.params import Parameter, QueryParameter

from notsale.api import params
from notsale.api.errors import error_response, error_responses
from notsale.api.models import CheckoutBody
from notsale.catalog import image_url, item_name
from notsale.engine.clock import current_sale, rfc3339
from notsale.engine.sale import refused_event
from notsale.errors import ErrorCode, NotsaleError
from notsale.services import Services, ServicesDep
from notsale.store.rows import attempt_row

log = logging.getLogger(__name__)


async def record_refused(
    services: Services, request: Request, outcome: ErrorCode, user_raw: str, item_raw: str
) -> None:
    """Log a checkout that Redis never decided: in the outbox if Redis answers, else directly."""
    sale_id = current_sale(services.settings.sale_seconds)
    query = request.scope["query_string"].decode("utf-8", "replace")
    event = refused_event(outcome, user_raw, item_raw, query)
    if outcome is not ErrorCode.UNAVAILABLE:
        try:
            await services.engine.record(sale_id, event)
            return
        except NotsaleError:
            pass  # Redis is down: the refusal stands, and PostgreSQL takes its row directly.
    try:
        await services.writer.write_attempt(
            attempt_row(f"direct:{uuid.uuid4().hex}", sale_id, event)
        )
    except NotsaleError:
        log.error(
            "checkout attempt lost: Redis and PostgreSQL both unreachable",
            extra={"outcome": outcome.value},
        )


class CheckoutController(Controller):
    path = "/checkout"
    tags = ("sale",)

    @post(
        status_code=200,
        summary="Hold an item for the user",
        description="Returns a code that redeems the hold with POST /purchase before it expires.",
        responses=error_responses(
            ErrorCode.ITEM_NOT_FOUND,
            ErrorCode.ITEM_SOLD,
            ErrorCode.ITEM_HELD,
            ErrorCode.USER_LIMIT,
        ),
    )
    async def checkout(
        self,
        request: Request,
        services: ServicesDep,
        # Declared for the OpenAPI document; read raw below, so that even a malformed request
        # reaches this handler and is logged as an attempt.
        user_id: Annotated[str | None, Parameter(description="1-64 of [A-Za-z0-9_.:@-]")] = None,
        item: Annotated[str | None, QueryParameter(name="id", description="1..SIZE")] = None,
    ) -> Response[CheckoutBody]:
        query = request.query_params
        settings = services.settings
        try:
            user = params.user_id(params.single(query, "user_id"))
            item_id = params.item_id(params.single(query, "id"), settings.sale_size)
        except NotsaleError as exc:
            await record_refused(
                services,
                request,
                exc.code,
                ",".join(query.getall("user_id", [])),
                ",".join(query.getall("id", [])),
            )
            raise
        try:
            decision = await services.engine.checkout(user, item_id)
        except NotsaleError as exc:
            await record_refused(services, request, exc.code, user, str(item_id))
            raise
        if decision.outcome is not None:
            # Returned, not raised: a stampede is mostly refusals, and Litestar's exception
            # path costs a fifth of a worker's time.
            return error_response(decision.outcome)
        body = CheckoutBody(
            code=decision.code,
            sale_id=decision.sale_id,
            item_id=item_id,
            name=item_name(decision.sale_id, item_id),
            image_url=image_url(decision.sale_id, item_id),
            expires_at=rfc3339(decision.expires_ms),
        )
        return Response(body)
