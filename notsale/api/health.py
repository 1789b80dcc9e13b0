"""GET /health: whether this worker reaches Redis and PostgreSQL right now."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from litestar import Controller, Response, get
from litestar.openapi import ResponseSpec

from notsale.api.models import HealthBody
from notsale.api.shared import PROBE_TIMEOUT_S
from notsale.clock import current_sale
from notsale.keys import health_key
from notsale.services import ServicesDep


async def probe(check: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(check, PROBE_TIMEOUT_S)
    except Exception:
        return "down"
    return "ok"


class HealthController(Controller):
    path = "/health"
    tags = ("ops",)

    @get(
        summary="Reachability of Redis and PostgreSQL",
        responses={
            503: ResponseSpec(HealthBody, generate_examples=False, description="a store is down")
        },
    )
    async def health(self, services: ServicesDep) -> Response[HealthBody]:
        # A write, not a PING: a Redis that answers but refuses writes (OOM at maxmemory,
        # READONLY after a failover, MISCONF) cannot decide anything. To the running sale's
        # slot: on a cluster, the master that decides it (expiring as the probe times out).
        key = health_key(current_sale(services.settings.sale_seconds))
        write = services.redis.set(key, "1", px=int(PROBE_TIMEOUT_S * 1000))
        redis, postgres = await asyncio.gather(
            probe(write), probe(services.pool.fetchval("SELECT 1"))
        )
        ok = redis == postgres == "ok"
        body = HealthBody("ok" if ok else "degraded", redis, postgres)
        return Response(body, status_code=200 if ok else 503)
