"""GET /health: whether this worker reaches Redis and PostgreSQL right now."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from litestar import Controller, Response, get
from litestar.openapi import ResponseSpec

from notsale.api.models import HealthBody
from notsale.services import ServicesDep

# A health check answers within about this long, whatever state the stores are in.
PROBE_TIMEOUT_S = 1.0


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
        redis, postgres = await asyncio.gather(
            probe(services.redis.ping()), probe(services.pool.fetchval("SELECT 1"))
        )
        ok = redis == postgres == "ok"
        body = HealthBody("ok" if ok else "degraded", redis, postgres)
        return Response(body, status_code=200 if ok else 503)
