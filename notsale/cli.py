"""The commands of `notsale` (see __main__.py): serve, migrate, reconcile, verify, audit."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings

from notsale.clock import current_sale
from notsale.config import Settings, redis_cluster
from notsale.connections import REDIS_DOWN, Client, connect
from notsale.errors import NotsaleError
from notsale.logs import ACCESS_FORMAT, log_config
from notsale.recovery import audit
from notsale.recovery.reconcile import Difference, Reconciler
from notsale.recovery.verify import readable, verify
from notsale.store.migrations import migrate
from notsale.store.pool import PG_DOWN, create_pool

log = logging.getLogger("notsale")
T = TypeVar("T")

# granian's "backlog" of the listening socket: a stampede opens many connections at once.
LISTEN_BACKLOG = 4096
# A request line and headers larger than this are refused by granian before Python sees them.
MAX_HEAD_BYTES = 16 * 1024
# A client that does not finish sending its headers within this long is dropped (a silent
# connection too).
HEADER_READ_TIMEOUT_MS = 10_000
# A worker that has not stopped this long after SIGTERM is killed. Its drain (commits, the
# flusher) ends well within it; seen here once: a worker hung for good in granian's signal
# handler after SIGTERM reached it twice (from a `pkill` and from its master).
WORKER_STOP_TIMEOUT_S = 30
# After granian gave up on crashing workers, wait this long before starting it again.
RESTART_DELAY_S = 1.0


# How long a command waits for PostgreSQL to answer before it says it cannot.
PROBE_TIMEOUT_S = 5.0
# While PostgreSQL cannot be reached at start, `notsale serve` tries to migrate this often.
MIGRATE_RETRY_S = 2.0


def run_migrations(settings: Settings, *, unreachable_ok: bool = False) -> bool:
    """Apply pending migrations. With `unreachable_ok`, a PostgreSQL that cannot be reached
    returns False instead of stopping: anything else it says (a migration it refuses) does."""
    # What PostgreSQL out of reach raises: refused, reset, timed out, lost, starting up.
    unreachable = (
        OSError,
        TimeoutError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError,
    )
    try:
        applied = asyncio.run(migrate(settings.database_url))
    except (*PG_DOWN, asyncpg.PostgresError) as exc:
        if unreachable_ok and isinstance(exc, unreachable):
            return False
        # One clear line for the operator instead of a traceback.
        reason = f"{type(exc).__name__}: {exc}"
        raise SystemExit(f"notsale: cannot migrate the database: {reason}") from None
    log.info("migrations done", extra={"applied": applied})
    return True


def migrate_when_reachable(settings: Settings) -> None:
    """Serve while PostgreSQL is away (a redeploy during an outage): Redis decides, rows wait
    in the outbox and purchases get 503, as for an outage that began while serving. The
    migrations are applied as soon as it answers, by a thread of the serving process."""

    def retry() -> None:
        while not run_migrations(settings, unreachable_ok=True):
            time.sleep(MIGRATE_RETRY_S)

    log.warning("PostgreSQL cannot be reached: serving, and migrating once it answers")
    threading.Thread(target=retry, name="notsale-migrate", daemon=True).start()


def check_cluster(settings: Settings) -> None:
    """A Redis Cluster client must learn the cluster's layout before its first command, so a
    worker cannot start without one node answering: say so in one line instead of letting
    every worker die at start. (A single Redis down at start is answered with 503.)"""
    if redis_cluster(settings.redis_url) is None:
        return

    async def reach() -> None:
        async with connect(settings.redis_url):
            pass

    try:
        asyncio.run(reach())
    except (*REDIS_DOWN, ExceptionGroup) as exc:
        raise SystemExit(f"notsale: cannot reach the Redis Cluster: {exc}") from None


def serve(settings: Settings) -> None:
    if not run_migrations(settings, unreachable_ok=True):
        migrate_when_reachable(settings)
    check_cluster(settings)
    serve_until_stopped(settings)


def serve_until_stopped(settings: Settings) -> None:
    while True:
        server = granian(settings)
        try:
            server.serve()
            return
        except SystemExit:
            if server.interrupt_signal:  # SIGTERM or SIGINT: an orderly stop
                raise
        # granian gives up when a worker dies again within 5.5 s of its respawn (a worker
        # killed twice in a row, say): serving goes on, with new workers.
        log.error("granian stopped after workers died twice in a row; starting it again")
        time.sleep(RESTART_DELAY_S)


def granian(settings: Settings) -> Any:
    return Granian(
        "notsale.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        # HTTP/1 only: while it detects the protocol (`auto`), granian has no timer, so a
        # connection that sends nothing stayed open for good; cleartext HTTP/2 is no client's.
        http=HTTPModes.http1,
        workers=settings.workers,
        loop=Loops.uvloop,
        backlog=LISTEN_BACKLOG,
        http1_settings=HTTP1Settings(
            max_buffer_size=MAX_HEAD_BYTES, header_read_timeout=HEADER_READ_TIMEOUT_MS
        ),
        log_dictconfig=log_config(settings.log_format),
        log_access=settings.access_log,
        log_access_format=ACCESS_FORMAT,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=WORKER_STOP_TIMEOUT_S,
    )


async def with_stores(
    settings: Settings, work: Callable[[Client, asyncpg.Pool], Awaitable[T]]
) -> T:
    """`work` with a Redis client and a PostgreSQL pool, closed after it. A store out of
    reach, a database not migrated, or a store failing the work stops the command with one
    line that says so (not a traceback)."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=PROBE_TIMEOUT_S)
        try:
            migrated = await conn.fetchval("SELECT to_regclass('checkout_attempts') IS NOT NULL")
        finally:
            await conn.close()
    except PG_DOWN as exc:
        raise SystemExit(f"notsale: PostgreSQL failed: {exc!r}") from None
    if not migrated:
        raise SystemExit(
            "notsale: the database has no notsale tables yet: run `notsale migrate` (or start"
            " the service) with the same NOTSALE_DATABASE_URL"
        )
    failed: Exception
    pool = await create_pool(settings.database_url)
    try:
        async with connect(settings.redis_url) as redis:
            # Failures are raised out here, not through coredis' task group.
            try:
                await redis.ping()
            except REDIS_DOWN as exc:
                failed, store = exc, "Redis"
            else:
                try:
                    return await work(redis, pool)
                except (*REDIS_DOWN, *PG_DOWN, NotsaleError) as exc:
                    failed, store = exc, "a store"
    finally:
        await pool.close()
    raise SystemExit(f"notsale: {store} failed: {failed!r}")


def chosen_sale(settings: Settings, sale_id: int | None) -> int:
    """The sale a command names, by default the running one."""
    return current_sale(settings.sale_seconds) if sale_id is None else sale_id


def verify_command(settings: Settings, sale_id: int | None, as_json: bool) -> int:
    """Exit 1 when the sale lost anything (see recovery/verify.py)."""
    sale = chosen_sale(settings, sale_id)
    report = asyncio.run(
        with_stores(settings, lambda redis, pool: verify(redis, pool, settings, sale))
    )
    print(msgspec.json.encode(report).decode() if as_json else readable(report))
    return 0 if report.ok else 1


def audit_command(settings: Settings, sale_id: int | None, as_json: bool, html: str | None) -> int:
    """Who bought what, and which ids act as one client (see recovery/audit.py)."""
    sale = chosen_sale(settings, sale_id)
    report = asyncio.run(
        with_stores(settings, lambda redis, pool: audit.audit(redis, pool, settings, sale))
    )
    print(msgspec.json.encode(report).decode() if as_json else audit.readable(report))
    if html:
        Path(html).write_text(audit.page(report))
    return 0


def reconcile_command(settings: Settings, sale_id: int | None, check: bool) -> int:
    sale = chosen_sale(settings, sale_id)
    found = asyncio.run(
        with_stores(
            settings, lambda redis, pool: reconcile(Reconciler(redis, pool, settings), sale, check)
        )
    )
    for difference in found:
        print(f"sale {sale}: {difference.what}: {difference.detail}")
    if not found:
        print(f"sale {sale}: Redis and PostgreSQL agree")
    return 1 if found else 0


async def reconcile(reconciler: Reconciler, sale: int, check: bool) -> list[Difference]:
    if not check:
        restored = await reconciler.rebuild(sale)  # after any under way
        print(f"sale {sale}: rebuilt from PostgreSQL, {restored} purchases restored")
    return await reconciler.differences(sale)
