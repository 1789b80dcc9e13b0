"""What the controllers are handed: the live clients of one worker, opened by the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, cast

import asyncpg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.types import Scope

from notsale.config import Settings
from notsale.engine.client import Client
from notsale.engine.sale import SaleEngine
from notsale.store.flusher import Flusher
from notsale.store.reconcile import Reconciler
from notsale.store.writer import GroupCommit

T = TypeVar("T")
# How long a worker keeps the answers of reads that buyers' pages poll.
READ_CACHE_S = 1.0
READ_CACHE_MAX = 4096


class Recent:
    """Answers kept for READ_CACHE_S: a page polling many times a second costs Redis once.
    Callers that ask while an answer is being made share it."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        kept = self._kept.get(key)
        if kept is None or loop.time() - kept[0] > READ_CACHE_S or kept[1].cancelled():
            if len(self._kept) >= READ_CACHE_MAX:
                self._kept.clear()
            kept = self._kept[key] = (loop.time(), asyncio.ensure_future(make()))

            def forget_failed(made: asyncio.Future[Any]) -> None:
                # A failed read is not kept: the next caller asks again.
                if made.cancelled() or made.exception() is not None:
                    self._kept.pop(key, None)

            kept[1].add_done_callback(forget_failed)
        return cast(T, await asyncio.shield(kept[1]))


@dataclass
class Services:
    settings: Settings
    redis: Client
    engine: SaleEngine
    pool: asyncpg.Pool  # the writers' (group commit, flusher, rebuilds)
    reads: asyncpg.Pool  # the reads' (store/queries.py)
    writer: GroupCommit
    flusher: Flusher
    reconciler: Reconciler
    recent: Recent = field(default_factory=Recent)


# How a handler asks for them: `services: ServicesDep` (Litestar injects by name).
ServicesDep: TypeAlias = NamedDependency[Services]


def services_from_state(state: State) -> Services:
    """The dependency provider: the lifespan keeps the worker's Services in the app state."""
    return cast(Services, state.services)


def services_of(scope: Scope) -> Services:
    """The same, for the `asgi` route handlers, which take no dependencies."""
    return services_from_state(Litestar.from_scope(scope).state)
