"""POST /checkout: put a hold on an item; every request becomes one checkout_attempts row."""

from __future__ import annotations

from litestar import Controller, asgi
from litestar.datastructures import MultiDict
from litestar.types import Receive, Scope, Send

from notsale import outbox
from notsale.api import params
from notsale.api.hot import post_query, send_body, send_refusal
from notsale.api.models import CheckoutBody
from notsale.api.openapi import ADMISSION, INTEGER, OPENAPI_OPT, USER, HotRouteDoc, query
from notsale.api.shared import first_sale
from notsale.catalog import image_url, item_name
from notsale.clock import (
    current_sale,
    now_ms,
    rfc3339,
    surely_closed,
    surely_not_started,
)
from notsale.errors import ErrorCode, Failed, NotsaleError, Unavailable
from notsale.network import client_network
from notsale.services import Services, services_of
from notsale.store.rows import attempt_row


async def record_refusal(
    services: Services,
    scope: Scope,
    request_id: str,
    exc: NotsaleError,
    user_raw: str,
    item_raw: str,
    named: int | None = None,
    network: str | None = None,
) -> None:
    """The attempt row of a checkout that Redis did not decide, logged in the running sale's
    outbox; `named` is the sale it named, once it may have started. It goes to whichever
    store takes it: the outbox (unless Redis is what failed; refused for the backlog, such
    rows still have room there, see sale.lua), else PostgreSQL directly. When neither can,
    the worker keeps the row and writes it once PostgreSQL is back."""
    raw_query = scope["query_string"].decode("utf-8", "replace")
    event = outbox.refused_event(
        request_id, exc.code, user_raw, item_raw, raw_query, named, network
    )
    sale_id = current_sale(services.settings.sale_seconds)
    if not (isinstance(exc, Unavailable) and exc.failed is Failed.REDIS):
        try:
            if await services.engine.log(sale_id, outbox.ENCODER.encode(event)):
                return
        except NotsaleError:
            pass  # PostgreSQL may still take it
    row = attempt_row(sale_id, event)
    try:
        await services.writer.write_attempt(row)
    except NotsaleError:
        services.writer.write_later(row)


def admitted_sale(services: Services, query: MultiDict[str], user: str, named: int | None) -> int:
    """In queue mode, the sale a checkout is for (the one it names, else the running one),
    once its admission admits the user to it. The checkout is then decided as one naming
    that sale: never moved to the next sale, which the admission does not admit to."""
    if "admission" not in query:
        raise NotsaleError(ErrorCode.ADMISSION_REQUIRED)
    sale_id = current_sale(services.settings.sale_seconds) if named is None else named
    if not services.admissions.valid(params.single(query, "admission"), sale_id, user, now_ms()):
        raise NotsaleError(ErrorCode.ADMISSION_INVALID)
    return sale_id


CHECKOUT_DOC = HotRouteDoc(
    tag="sale",
    summary="Hold an item for the user",
    description="Returns a code that redeems the hold with POST /purchase before it expires.",
    parameters=(
        query("user_id", USER, "1-64 of [A-Za-z0-9_.:@-]; with identity jwt, optional"),
        query("id", INTEGER, "the item, 1..SIZE"),
        query("sale_id", INTEGER, "an open sale (default: the running sale)", required=False),
        query("admission", ADMISSION, "queue mode: the admission to the sale", required=False),
    ),
    body=CheckoutBody,
    errors=(
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.FORBIDDEN,
        ErrorCode.ADMISSION_REQUIRED,
        ErrorCode.ADMISSION_INVALID,
        ErrorCode.ITEM_NOT_FOUND,
        ErrorCode.ITEM_SOLD,
        ErrorCode.ITEM_HELD,
        ErrorCode.USER_LIMIT,
        ErrorCode.COOLDOWN,
        ErrorCode.HOLDS_MAX,
        ErrorCode.SALE_CLOSED,
    ),
)
# Refusals that pass with time: answered with Retry-After.
WAIT_OUT = (ErrorCode.COOLDOWN, ErrorCode.HOLDS_MAX)


async def checkout(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /checkout, a hot route (see notsale.api.hot). It reads the query raw, so that even
    a malformed request reaches it and is logged as an attempt."""
    query = post_query(scope)
    services = services_of(scope)
    # Made here, once: it keys the attempt row, whichever store ends up holding it.
    request_id = services.engine.new_request_id()
    named = None  # the sale the client named, once it may have started
    settings = services.settings
    network = client_network(scope.get("client"), scope["headers"], settings.trusted_proxies)
    try:
        named_user = None  # with identity jwt, user_id may be left out
        if "user_id" in query or not services.identity.verified:
            named_user = params.user_id(params.single(query, "user_id"))
        user = services.identity.user(scope["headers"], named_user)
        item_id = params.integer(params.single(query, "id"), "id")
        if "sale_id" in query:
            sale_id = params.integer(params.single(query, "sale_id"), "sale_id")
            # sale.lua decides on Redis' clock whether the sale has started and is still
            # open; refused here only when no clock skew could make it so (the row of one
            # long closed is logged in the running sale's outbox: its own may be gone).
            if surely_not_started(sale_id, services.settings.sale_seconds):
                raise NotsaleError(ErrorCode.ITEM_NOT_FOUND, "That sale has not started yet.")
            if sale_id < await first_sale(services):
                raise NotsaleError(ErrorCode.ITEM_NOT_FOUND, "That sale never ran here.")
            named = sale_id
        terms = await services.terms.of(
            current_sale(settings.sale_seconds) if named is None else named
        )
        params.in_sale(item_id, terms.sale_size)
        if named is not None and surely_closed(named, terms):
            raise NotsaleError(ErrorCode.SALE_CLOSED)
        if services.admissions.required:
            named = admitted_sale(services, query, user, named)
    except NotsaleError as exc:
        user_raw = ",".join(query.getall("user_id", []))
        item_raw = ",".join(query.getall("id", []))
        await record_refusal(services, scope, request_id, exc, user_raw, item_raw, named, network)
        raise
    try:
        decision = await services.engine.checkout(user, item_id, request_id, named, network)
    except NotsaleError as exc:
        await record_refusal(services, scope, request_id, exc, user, str(item_id), named, network)
        raise
    if decision.outcome in WAIT_OUT:  # expires_ms: when it may be asked again
        wait_s = max(1, -(-(decision.expires_ms - now_ms()) // 1000))
        await send_refusal(scope, send, decision.outcome, retry_after_s=wait_s)
        return
    if decision.outcome is not None:
        await send_refusal(scope, send, decision.outcome)
        return
    body = CheckoutBody(
        code=decision.code,
        sale_id=decision.sale_id,
        item_id=item_id,
        name=item_name(decision.sale_id, item_id),
        image_url=image_url(decision.sale_id, item_id),
        expires_at=rfc3339(decision.expires_ms),
    )
    await send_body(scope, send, body)


class CheckoutController(Controller):
    path = "/checkout"

    # The route in Litestar: its OpenAPI entry, 405 to other methods (see notsale.api.hot).
    @asgi(copy_scope=False, opt={OPENAPI_OPT: CHECKOUT_DOC})
    async def checkout(self, scope: Scope, receive: Receive, send: Send) -> None:
        await checkout(scope, receive, send)
