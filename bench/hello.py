"""A bare ASGI hello-world: the ceiling notsale's throughput is measured against.

At /redis it answers after one PING to NOTSALE_REDIS_URL over notsale's own connection for
decisions (engine/lane.py): what one Redis round trip adds, the floor of a checkout's wait.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import coredis

from notsale.engine.lane import Lane

BODY = b'{"hello":"world"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/redis":
        await redis_lane().call("PING")
    await send(START)
    await send({"type": "http.response.body", "body": BODY})


@functools.cache
def redis_lane() -> Lane:
    lane = Lane.of(coredis.Redis.from_url(os.environ["NOTSALE_REDIS_URL"], decode_responses=True))
    if lane is None:
        raise SystemExit("hello-world's /redis needs a single Redis, not a cluster")
    return lane
