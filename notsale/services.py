"""What the controllers are handed: the live clients of one worker, opened by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg
import coredis
from litestar.di import NamedDependency

from notsale.config import Settings
from notsale.engine.sale import SaleEngine
from notsale.store.flusher import Flusher
from notsale.store.writer import GroupCommit


@dataclass
class Services:
    settings: Settings
    redis: coredis.Redis[str]
    engine: SaleEngine
    pool: asyncpg.Pool
    writer: GroupCommit
    flusher: Flusher


# How a handler asks for them: `services: ServicesDep` (Litestar injects by name).
ServicesDep: TypeAlias = NamedDependency[Services]
