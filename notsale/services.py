"""What the controllers are handed: the live clients of one worker, opened by the lifespan
(app.py), and its cache of recent read answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias, cast

import asyncpg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.types import Scope

from notsale.admission import Admissions
from notsale.config import Settings
from notsale.connections import Client
from notsale.engine.queue import WaitingRoom
from notsale.engine.sale import SaleEngine
from notsale.identity import Identity
from notsale.recent import Recent
from notsale.recovery.reconcile import Reconciler
from notsale.store.flusher import Flusher
from notsale.store.seeds import SeedBook
from notsale.store.terms import TermsBook
from notsale.store.writer import GroupCommit


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
    identity: Identity
    terms: TermsBook  # each sale's, fixed when it started
    queue: WaitingRoom
    admissions: Admissions
    seeds: SeedBook  # each sale's queue seed
    recent: Recent = field(default_factory=Recent)
    # When this deployment first ran, once PostgreSQL said (see api/shared.py: first_sale).
    first_run_ms: int | None = None


# How a handler asks for them: `services: ServicesDep` (Litestar injects by name).
ServicesDep: TypeAlias = NamedDependency[Services]


def services_from_state(state: State) -> Services:
    """The dependency provider: the lifespan keeps the worker's Services in the app state."""
    return cast(Services, state.services)


def services_of(scope: Scope) -> Services:
    """The same, for the `asgi` route handlers, which take no dependencies."""
    return services_from_state(Litestar.from_scope(scope).state)
