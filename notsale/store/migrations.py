"""Applies the numbered sql/ migrations once each, recorded, safe under concurrent starts."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

# pg_advisory_lock key: any constant works, as long as every notsale process uses the same one.
MIGRATION_LOCK_KEY = 0x6E6F7473616C65  # "notsale"


def pending_files(applied: set[int]) -> list[tuple[int, Path]]:
    found = sorted((int(p.name.split("_", 1)[0]), p) for p in SQL_DIR.glob("[0-9]*_*.sql"))
    return [(version, path) for version, path in found if version not in applied]


async def migrate(dsn: str) -> list[str]:
    """Apply what is pending; returns the names of the files applied."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        # Several workers or hosts may start at once: one migrates, the others wait, then
        # find nothing left to do.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        done = []
        for version, path in pending_files(applied):
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    version,
                    path.name,
                )
            log.info("migration applied", extra={"migration": path.name})
            done.append(path.name)
        return done
    finally:
        await conn.close()
