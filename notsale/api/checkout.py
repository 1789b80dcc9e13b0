"""POST /checkout: put a hold on an item; every request becomes one checkout_attempts row."""

from __future__ import annotations

import logging
import uuid

from litestar import Controller, asgi
from litestar.types import Receive, Scope, Send

from notsale.api import params
from notsale.api.models import CheckoutBody
from notsale.api.openapi import INTEGER, OPENAPI_OPT, USER, HotRouteDoc, query
from notsale.api.raw import post_query, send_body, send_refusal
from notsale.catalog import image_url, item_name
from notsale.engine.clock import current_sale, rfc3339
from notsale.engine.sale import refused_event
from notsale.errors import ErrorCode, NotsaleError
from notsale.services import Services, services_of
from notsale.store.rows import attempt_row

log = logging.getLogger(__name__)


async def record_refused(
    services: Services, scope: Scope, outcome: ErrorCode, user_raw: str, item_raw: str
) -> None:
    """Log a checkout that Redis never decided: in the outbox if Redis answers, else directly."""
    sale_id = current_sale(services.settings.sale_seconds)
    raw_query = scope["query_string"].decode("utf-8", "replace")
    event = refused_event(outcome, user_raw, item_raw, raw_query)
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


CHECKOUT_DOC = HotRouteDoc(
    tag="sale",
    summary="Hold an item for the user",
    description="Returns a code that redeems the hold with POST /purchase before it expires.",
    parameters=(
        query("user_id", USER, "1-64 of [A-Za-z0-9_.:@-]"),
        query("id", INTEGER, "the item, 1..SIZE"),
    ),
    body=CheckoutBody,
    errors=(
        ErrorCode.ITEM_NOT_FOUND,
        ErrorCode.ITEM_SOLD,
        ErrorCode.ITEM_HELD,
        ErrorCode.USER_LIMIT,
    ),
)


class CheckoutController(Controller):
    path = "/checkout"

    # An `asgi` handler, the hot path (see notsale.api.raw): it reads the query raw, so that
    # even a malformed request reaches it and is logged as an attempt.
    @asgi(copy_scope=False, opt={OPENAPI_OPT: CHECKOUT_DOC})
    async def checkout(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = post_query(scope)
        services = services_of(scope)
        try:
            user = params.user_id(params.single(query, "user_id"))
            item_id = params.item_id(params.single(query, "id"), services.settings.sale_size)
        except NotsaleError as exc:
            await record_refused(
                services,
                scope,
                exc.code,
                ",".join(query.getall("user_id", [])),
                ",".join(query.getall("id", [])),
            )
            raise
        try:
            decision = await services.engine.checkout(user, item_id)
        except NotsaleError as exc:
            await record_refused(services, scope, exc.code, user, str(item_id))
            raise
        if decision.outcome is not None:
            await send_refusal(send, decision.outcome)
            return
        body = CheckoutBody(
            code=decision.code,
            sale_id=decision.sale_id,
            item_id=item_id,
            name=item_name(decision.sale_id, item_id),
            image_url=image_url(decision.sale_id, item_id),
            expires_at=rfc3339(decision.expires_ms),
        )
        await send_body(send, body)
