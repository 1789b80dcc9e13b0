"""POST /purchase: redeem a code; answered 200 only once the purchase row is committed."""

from __future__ import annotations

import contextlib

import msgspec
from litestar import Controller, asgi
from litestar.types import Receive, Scope, Send

from notsale.api import params
from notsale.api.hot import post_query, read_body, send_body, send_refusal
from notsale.api.models import PurchaseBody
from notsale.api.openapi import CODE, OPENAPI_OPT, HotRouteDoc, query
from notsale.api.shared import first_sale, purchase_body
from notsale.clock import KEEP_AFTER_SALE_MS, surely_closed, surely_not_started
from notsale.connections import REDIS_DOWN
from notsale.engine.codes import CODE_PATTERN, code_sale
from notsale.engine.sale import PurchaseDecision
from notsale.errors import ErrorCode, NotsaleError
from notsale.services import services_of
from notsale.store import queries
from notsale.store.rows import PurchaseRow, ms_to_datetime

PURCHASE_DOC = HotRouteDoc(
    tag="sale",
    summary="Buy the item a checkout code holds",
    description="Safe to retry: a redeemed code answers the same body again.",
    # The code may come in a JSON body instead ({"code": "…"}, docs/api.md); the document
    # gives the query form, which every client may use.
    parameters=(query("code", CODE, "the code POST /checkout gave"),),
    body=PurchaseBody,
    errors=(
        ErrorCode.CODE_NOT_FOUND,
        ErrorCode.CODE_EXPIRED,
        ErrorCode.ITEM_SOLD,
        ErrorCode.USER_LIMIT,
    ),
)


class CodeBody(msgspec.Struct, forbid_unknown_fields=True):
    code: str


CODE_BODY = msgspec.json.Decoder(CodeBody)


async def code_of(scope: Scope, receive: Receive) -> str:
    """The code, from the query or from a JSON body `{"code": "…"}` (which proxies that log
    URLs never see); given both ways, or neither, it is refused."""
    query = post_query(scope)
    body = await read_body(scope, receive)
    if not body.strip():
        return params.single(query, "code")
    if "code" in query:
        raise params.invalid("Give the code once: in the query or in the body, not both.")
    try:
        return CODE_BODY.decode(body).code
    except msgspec.DecodeError:
        raise params.invalid('The body must be JSON: {"code": "<the code>"}.') from None


async def purchase(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /purchase, a hot route (see notsale.api.hot)."""
    raw = await code_of(scope, receive)
    services = services_of(scope)
    if not CODE_PATTERN.fullmatch(raw):
        raise params.invalid("`code` must be 1 to 64 characters of A-Z a-z 0-9 _ -.")
    sale_id = code_sale(raw)
    # A code of a sale this worker's clock has not started yet too: it may be behind Redis'.
    if (
        sale_id is None
        or surely_not_started(sale_id, services.settings.sale_seconds)
        or sale_id < await first_sale(services)
    ):
        raise NotsaleError(ErrorCode.CODE_NOT_FOUND)
    if surely_closed(sale_id, await services.terms.of(sale_id, fix=False), KEEP_AFTER_SALE_MS):
        # Its keys are gone from Redis (they outlive the close by KEEP_AFTER_SALE_MS; sooner
        # if it sold out early, and then Redis says so itself): only PostgreSQL knows, and
        # nothing is asked of Redis, so made-up codes of old sales cost it nothing.
        decision = PurchaseDecision(ErrorCode.CODE_NOT_FOUND)
    else:
        decision = await services.engine.purchase(sale_id, raw)
    if decision.outcome is None:
        row = PurchaseRow(
            sale_id,
            decision.item_id,
            decision.user_id,
            raw,
            ms_to_datetime(decision.purchased_ms),
            decision.seq,
        )
        try:
            # Also on a repeat: the first answer may have been lost before its commit.
            await services.writer.write_purchase(row)
        except NotsaleError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE:
                # PostgreSQL refused what Redis decided: Redis lost writes. Rebuild the
                # sale before it decides more.
                with contextlib.suppress(*REDIS_DOWN):
                    await services.reconciler.invalidate(sale_id)
            raise
        await send_body(scope, send, purchase_body(row))
        return
    if decision.outcome in (ErrorCode.CODE_NOT_FOUND, ErrorCode.CODE_EXPIRED):
        # Redis does not know the purchase (its sale's keys expired, or it lost writes):
        # only PostgreSQL can say that none was made.
        stored = await queries.purchase_by_code(services.reads, raw)
        if stored is not None:
            await send_body(scope, send, purchase_body(stored))
            return
        if decision.outcome is ErrorCode.CODE_NOT_FOUND and await queries.code_was_issued(
            services.reads, raw
        ):
            await send_refusal(scope, send, ErrorCode.CODE_EXPIRED)
            return
    await send_refusal(scope, send, decision.outcome)


class PurchaseController(Controller):
    path = "/purchase"

    # The route in Litestar: its OpenAPI entry, 405 to other methods (see notsale.api.hot).
    @asgi(copy_scope=False, opt={OPENAPI_OPT: PURCHASE_DOC})
    async def purchase(self, scope: Scope, receive: Receive, send: Send) -> None:
        await purchase(scope, receive, send)
