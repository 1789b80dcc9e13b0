"""Applies the numbered sql/ migrations once each, recorded, safe under concurrent starts."""

from __future__ import annotations

import logging
import re
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

# The numbered migrations ship inside the package (a wheel carries them; `sql/` at the top
# of the checkout is a link to them).
SQL_DIR = resources.files("notsale") / "sql"
MIGRATION_NAME = re.compile(r"([0-9]+)_\w+\.sql")

# pg_advisory_lock key: any constant works, as long as every notsale process uses the same one.
MIGRATION_LOCK_KEY = 0x6E6F7473616C65  # "notsale"


# Where CREATE DATABASE is sent from when the configured database does not exist yet.
MAINTENANCE_DATABASE = "postgres"
MIGRATE_CONNECT_TIMEOUT_S = 10


def with_path(url: str, path: str) -> str:
    """The URL with its path (a PostgreSQL database, a Redis DB index) replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


async def connect_creating(dsn: str) -> asyncpg.Connection:
    """Connects to the database of `dsn`, creating it first when the server lacks it."""
    try:
        return await asyncpg.connect(dsn, timeout=MIGRATE_CONNECT_TIMEOUT_S)
    except asyncpg.InvalidCatalogNameError:
        pass
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    admin = await asyncpg.connect(
        with_path(dsn, "/" + MAINTENANCE_DATABASE), timeout=MIGRATE_CONNECT_TIMEOUT_S
    )
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
        log.info("database created", extra={"database": name})
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another process created it meanwhile (racing, PostgreSQL reports the latter)
    finally:
        await admin.close()
    return await asyncpg.connect(dsn, timeout=MIGRATE_CONNECT_TIMEOUT_S)


def migration_files() -> list[tuple[int, Traversable]]:
    found = [(MIGRATION_NAME.fullmatch(f.name), f) for f in SQL_DIR.iterdir()]
    return sorted((int(match[1]), f) for match, f in found if match)


def pending_files(applied: set[int]) -> list[tuple[int, Traversable]]:
    return [(version, path) for version, path in migration_files() if version not in applied]


async def migrate(dsn: str) -> list[str]:
    """Apply what is pending (creating the database if need be); returns the files applied."""
    conn = await connect_creating(dsn)
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
