"""GET /metrics: Prometheus text, every worker's values added up (see notsale.metrics)."""

from __future__ import annotations

import asyncio

from litestar import Controller, Response, get
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from notsale import metrics
from notsale.api.shared import PROBE_TIMEOUT_S, counts, sale_body
from notsale.clock import current_sale
from notsale.connections import REDIS_DOWN
from notsale.errors import NotsaleError
from notsale.services import Services, ServicesDep
from notsale.store.pool import PG_DOWN


async def from_redis(services: Services) -> list[GaugeMetricFamily]:
    """The running sale's counts and the outboxes' backlogs, read now."""
    sale_id = current_sale(services.settings.sale_seconds)
    sale = sale_body(services, sale_id, *(await counts(services, [sale_id]))[sale_id])
    backlogs = await services.engine.backlogs()
    return metrics.sale_families(sale_id, sale.sold, sale.held, sale.remaining, backlogs)


class MetricsController(Controller):
    path = "/metrics"
    tags = ("ops",)

    @get(summary="Prometheus metrics of all workers", media_type=CONTENT_TYPE_LATEST)
    async def metrics(self, services: ServicesDep) -> Response[bytes]:
        # Metrics matter most when a store is down: without Redis (or PostgreSQL, which
        # answers for a sale Redis does not hold), the rest is still served.
        try:
            scraped = await asyncio.wait_for(from_redis(services), PROBE_TIMEOUT_S)
            scraped.append(metrics.redis_up(True))
        except (NotsaleError, TimeoutError, *REDIS_DOWN, *PG_DOWN):
            scraped = [metrics.redis_up(False)]
        return Response(metrics.exposition(scraped), media_type=CONTENT_TYPE_LATEST)
