"""Settings: one frozen struct built once from the NOTSALE_* environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

ENV_PREFIX = "NOTSALE_"


class SettingsError(ValueError):
    """A NOTSALE_* variable holds a value the service cannot run with."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = os.cpu_count() or 1
    sale_seconds: int = 3600
    sale_size: int = 10_000
    user_limit: int = 10
    hold_seconds: int = 60
    # Entries a sale's outbox may hold (decisions PostgreSQL has not taken yet, ~200 bytes
    # each) before checkouts are refused with 503: while PostgreSQL is down, Redis fills up
    # to about this, not to its maxmemory.
    outbox_max: int = 1_000_000

    def __post_init__(self) -> None:
        for name in (
            "port",
            "workers",
            "sale_seconds",
            "sale_size",
            "user_limit",
            "hold_seconds",
            "outbox_max",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be at least 1")
        if self.port > 65535:
            raise SettingsError(f"{ENV_PREFIX}PORT must be at most 65535")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"{ENV_PREFIX}REDIS_URL must be a redis:// URL")
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError(f"{ENV_PREFIX}DATABASE_URL must be a postgresql:// URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from NOTSALE_<FIELD>; unset or empty means the default."""
        env = os.environ if environ is None else environ
        raw = {
            name: env[ENV_PREFIX + name.upper()]
            for name in cls.__struct_fields__
            if env.get(ENV_PREFIX + name.upper())
        }
        try:
            # strict=False lets "8080" from the environment become the int field it names.
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            # msgspec says "at `$.port`": name the variable the user actually set instead.
            where = re.sub(r"`\$\.(\w+)`", lambda m: ENV_PREFIX + m[1].upper(), str(exc))
            raise SettingsError(f"bad setting: {where}") from exc
