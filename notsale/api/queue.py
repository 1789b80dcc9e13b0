"""The waiting room's routes (docs/api.md, "Admission: the waiting room"): join a sale's
queue, poll a ticket, and the fairness record anyone can check the queue's order against."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, HttpMethod, Request, Response, get, post, route
from litestar.params import FromPath, Parameter, QueryParameter

from notsale.admission import TICKET, commitment
from notsale.api import params
from notsale.api.errors import error_responses
from notsale.api.models import FairnessBody, PrequeueBody, PrequeuedBody, QueueBody
from notsale.api.params import PREQUEUE_PAGE_MAX
from notsale.api.shared import started_sale
from notsale.clock import CLOCK_SKEW_MS, SaleWindow, now_ms, rfc3339, sale_window, surely_closed
from notsale.engine.queue import Ticket
from notsale.errors import ErrorCode, NotsaleError
from notsale.network import client_network
from notsale.services import Services, ServicesDep

Req = Request[Any, Any, Any]
NOT_OPEN = "This sale's queue has not opened yet."
QUEUE_ERRORS = (ErrorCode.ITEM_NOT_FOUND, ErrorCode.NOT_FOUND, ErrorCode.SALE_CLOSED)


async def queued_sale(raw: str, services: Services) -> tuple[int, SaleWindow]:
    """A sale whose queue may be open: one this deployment runs, not surely before its
    pre-queue opens (Redis' clock decides within the skew), and its window."""
    sale = await started_sale(raw, services, started=False)
    window = sale_window(sale, await services.terms.of(sale, fix=False))
    if opens_ms(window, services) - CLOCK_SKEW_MS > now_ms():
        raise NotsaleError(ErrorCode.NOT_FOUND, NOT_OPEN)
    return sale, window


def opens_ms(window: SaleWindow, services: Services) -> int:
    return window.starts_ms - services.settings.prequeue_seconds * 1000


def queue_body(services: Services, sale_id: int, ticket: Ticket) -> QueueBody:
    admission = expires_at = None
    if ticket.admitted_ms:
        expires_ms = ticket.admitted_ms + services.settings.admission_seconds * 1000
        admission = services.admissions.sign(sale_id, ticket.user_id, expires_ms)
        expires_at = rfc3339(expires_ms)
    return QueueBody(
        ticket=ticket.ticket,
        ticket_id=ticket.ticket_id,
        sale_id=sale_id,
        user_id=ticket.user_id,
        position=ticket.position,
        admitted=bool(ticket.admitted_ms),
        admission=admission,
        admission_expires_at=expires_at,
        poll_after_ms=ticket.poll_after_ms,
        eta_seconds=ticket.eta_seconds(),
        remaining=ticket.remaining,
    )


class QueueController(Controller):
    path = "/sales"
    tags = ("queue",)

    @post(
        "/{sale_id:str}/queue",
        summary="Join a sale's queue (or get the ticket the user has)",
        status_code=200,
        responses=error_responses(
            *QUEUE_ERRORS, ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.TOO_EARLY
        ),
    )
    async def join(
        self,
        request: Req,
        services: ServicesDep,
        sale_id: FromPath[str],
        user_id: Annotated[str | None, Parameter(description="with identity jwt, optional")] = None,
    ) -> QueueBody:
        query = request.query_params
        named = None
        if "user_id" in query or not services.identity.verified:
            named = params.user_id(params.single(query, "user_id"))
        user = services.identity.user(request.scope["headers"], named)
        sale, _ = await queued_sale(sale_id, services)
        if surely_closed(sale, await services.terms.of(sale, fix=False)):
            raise NotsaleError(ErrorCode.SALE_CLOSED)
        settings = services.settings
        network = client_network(
            request.scope.get("client"), request.scope["headers"], settings.trusted_proxies
        )
        return queue_body(services, sale, await services.queue.join(sale, user, network))

    @route(
        "/{sale_id:str}/queue",
        http_method=HttpMethod.OPTIONS,
        include_in_schema=False,
        status_code=204,
        sync_to_thread=False,
    )
    def allow(self) -> Response[None]:
        """Litestar registers a controller's handlers one by one, in the order of their
        names, and the OPTIONS handler it adds to a path's first route names that route's
        methods only: merging the next handler's in, it keeps that handler. So this one,
        named to come first, answers OPTIONS for both."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @get(
        "/{sale_id:str}/queue",
        summary="A ticket's place in the queue, and its admission once admitted",
        responses=error_responses(*QUEUE_ERRORS, ErrorCode.TICKET_INVALID, ErrorCode.TOO_EARLY),
        response_headers={"Cache-Control": "private, no-store"},
    )
    async def poll(
        self,
        request: Req,
        services: ServicesDep,
        sale_id: FromPath[str],
        ticket: Annotated[str | None, Parameter(description="the secret ticket")] = None,
    ) -> QueueBody:
        raw = params.single(request.query_params, "ticket")
        sale, _ = await queued_sale(sale_id, services)
        if not TICKET.fullmatch(raw):
            raise NotsaleError(ErrorCode.TICKET_INVALID)
        return queue_body(services, sale, await services.queue.poll(sale, raw))

    @get(
        "/{sale_id:str}/fairness",
        summary="The queue's seed: its SHA-256 from the queue's opening, itself from the start",
        responses=error_responses(ErrorCode.ITEM_NOT_FOUND, ErrorCode.NOT_FOUND),
    )
    async def fairness(self, services: ServicesDep, sale_id: FromPath[str]) -> FairnessBody:
        sale, window = await queued_sale(sale_id, services)
        seed = await services.seeds.of(sale)
        listed = await services.queue.prequeue(sale, 0, 0)
        return FairnessBody(
            sale_id=sale,
            prequeue_opens_at=rfc3339(opens_ms(window, services)),
            starts_at=rfc3339(window.starts_ms),
            seed_sha256=commitment(seed),
            seed=None if listed is None else seed,
            prequeued=None if listed is None else listed[0],
        )

    @get(
        "/{sale_id:str}/fairness/prequeue",
        summary="The pre-queued tickets in position order, from the start",
        responses=error_responses(ErrorCode.ITEM_NOT_FOUND, ErrorCode.NOT_FOUND),
    )
    async def prequeue(
        self,
        request: Req,
        services: ServicesDep,
        sale_id: FromPath[str],
        from_: Annotated[str | None, QueryParameter(name="from", description="default 0")] = None,
        count: Annotated[
            str | None,
            Parameter(description=f"1..{PREQUEUE_PAGE_MAX}, default {PREQUEUE_PAGE_MAX}"),
        ] = None,
    ) -> PrequeueBody:
        query = request.query_params
        sale, _ = await queued_sale(sale_id, services)
        offset = params.integer(params.single(query, "from"), "from") if "from" in query else 0
        wanted = PREQUEUE_PAGE_MAX
        if "count" in query:
            wanted = params.integer(params.single(query, "count"), "count")
            if not 1 <= wanted <= PREQUEUE_PAGE_MAX:
                raise params.invalid(f"`count` must be 1 to {PREQUEUE_PAGE_MAX}.")
        listed = await services.queue.prequeue(sale, offset, wanted)
        if listed is None:
            raise NotsaleError(ErrorCode.NOT_FOUND, "The pre-queue is listed from the start.")
        return PrequeueBody([PrequeuedBody(tid, position) for tid, position in listed[1]])
