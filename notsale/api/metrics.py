"""GET /metrics: Prometheus text, every worker's values added up (see notsale.metrics)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from litestar import Controller, Request, Response, get
from prometheus_client.core import GaugeMetricFamily

from notsale import metrics
from notsale.api.errors import error_responses
from notsale.api.shared import PROBE_TIMEOUT_S, counts, sale_body
from notsale.clock import current_sale
from notsale.connections import REDIS_DOWN
from notsale.errors import ErrorCode, NotsaleError
from notsale.services import Services, ServicesDep
from notsale.store.pool import PG_DOWN

# Prometheus' text format, as every Prometheus reads it. Litestar adds `; charset=utf-8` to a
# text type: prometheus_client's own constant has one already, and a repeated parameter
# makes the whole header unreadable to Prometheus 3 (Go's mime.ParseMediaType).
MEDIA_TYPE = "text/plain; version=0.0.4"


def admitted(token: str, authorization: str) -> None:
    """Nothing to check without a token; else the bearer token must be it (compared in
    constant time: how much of it matched does not show in the answer's timing)."""
    if token and not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        raise NotsaleError(ErrorCode.UNAUTHENTICATED)


async def from_redis(services: Services) -> list[GaugeMetricFamily]:
    """The running sale's counts and the outboxes' backlogs, read now."""
    sale_id = current_sale(services.settings.sale_seconds)
    terms = await services.terms.of(sale_id, fix=False)
    sale = sale_body(sale_id, terms, *(await counts(services, [sale_id]))[sale_id])
    backlogs = await services.engine.backlogs()
    return metrics.sale_families(sale_id, sale.sold, sale.held, sale.remaining, backlogs)


class MetricsController(Controller):
    path = "/metrics"
    tags = ("ops",)

    @get(
        summary="Prometheus metrics of all workers",
        description="With NOTSALE_ADMIN_TOKEN set, only for `Authorization: Bearer <token>`.",
        media_type=MEDIA_TYPE,
        # Only 200 or 401: a store that is down shows in the metrics, and the header is read
        # raw (a declared header parameter would add a 400 it can never answer).
        responses=error_responses(ErrorCode.UNAUTHENTICATED, parameters=False, stores=False),
    )
    async def metrics(
        self, services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        admitted(services.settings.admin_token, request.headers.get("authorization", ""))
        # Metrics matter most when a store is down: without Redis (or PostgreSQL, which
        # answers for a sale Redis does not hold), the rest is still served.
        try:
            scraped = await asyncio.wait_for(from_redis(services), PROBE_TIMEOUT_S)
            scraped.append(metrics.redis_up(True))
        except (NotsaleError, TimeoutError, *REDIS_DOWN, *PG_DOWN):
            scraped = [metrics.redis_up(False)]
        return Response(metrics.exposition(scraped), media_type=MEDIA_TYPE)
