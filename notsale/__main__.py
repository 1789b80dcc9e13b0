"""The command line: `notsale serve | migrate | reconcile` (also `python -m notsale …`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from notsale.config import Settings, SettingsError, unknown_variables
from notsale.logs import ACCESS_FORMAT, log_config, setup_logging
from notsale.store.migrations import migrate

log = logging.getLogger("notsale")

# granian's "backlog" of the listening socket: a stampede opens many connections at once.
LISTEN_BACKLOG = 4096
# A request line and headers larger than this are refused by granian before Python sees them.
MAX_HEAD_BYTES = 16 * 1024
# A client that does not finish sending its headers within this long is dropped.
HEADER_READ_TIMEOUT_MS = 10_000
# A worker that has not stopped this long after SIGTERM is killed. Its drain (commits, the
# flusher) ends well within it; seen here once: a worker hung for good in granian's signal
# handler after SIGTERM reached it twice (from a `pkill` and from its master).
WORKER_STOP_TIMEOUT_S = 30
# After granian gave up on crashing workers, wait this long before starting it again.
RESTART_DELAY_S = 1.0
# prometheus_client's multiprocess mode keeps every process' values in files under this.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


# While PostgreSQL cannot be reached at start, `notsale serve` tries to migrate this often.
MIGRATE_RETRY_S = 2.0


def run_migrations(settings: Settings, *, unreachable_ok: bool = False) -> bool:
    """Apply pending migrations. With `unreachable_ok`, a PostgreSQL that cannot be reached
    returns False instead of stopping: anything else it says (a migration it refuses) does."""
    import asyncpg

    from notsale.store.pool import PG_DOWN

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
    import threading

    def retry() -> None:
        while not run_migrations(settings, unreachable_ok=True):
            time.sleep(MIGRATE_RETRY_S)

    log.warning("PostgreSQL cannot be reached: serving, and migrating once it answers")
    threading.Thread(target=retry, name="notsale-migrate", daemon=True).start()


@contextlib.contextmanager
def metrics_directory(settings: Settings) -> Iterator[None]:
    """A fresh directory where each worker keeps its metrics (prometheus_client's
    multiprocess mode, see notsale.metrics), removed when serving ends. Set before anything
    imports prometheus_client: the workers inherit it."""
    if not settings.metrics:
        yield
        return
    path = tempfile.mkdtemp(prefix="notsale-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = path
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_cluster(settings: Settings) -> None:
    """A Redis Cluster client must learn the cluster's layout before its first command, so a
    worker cannot start without one node answering: say so in one line instead of letting
    every worker die at start. (A single Redis down at start is answered with 503.)"""
    from notsale.config import redis_cluster
    from notsale.engine.client import REDIS_DOWN, connect

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
    with metrics_directory(settings):
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
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    return Granian(
        "notsale.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
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


async def reconcile(settings: Settings, sale_id: int | None, check: bool) -> int:
    from notsale.engine.client import connect
    from notsale.engine.clock import current_sale
    from notsale.store.pool import create_pool
    from notsale.store.reconcile import Reconciler

    sale = current_sale(settings.sale_seconds) if sale_id is None else sale_id
    pool = await create_pool(settings.database_url)
    try:
        async with connect(settings.redis_url) as redis:
            reconciler = Reconciler(redis, pool, settings)
            if not check:
                restored = await reconciler.rebuild(sale)  # after any under way
                print(f"sale {sale}: rebuilt from PostgreSQL, {restored} purchases restored")
            found = await reconciler.differences(sale)
    finally:
        await pool.close()
    for difference in found:
        print(f"sale {sale}: {difference.what}: {difference.detail}")
    if not found:
        print(f"sale {sale}: Redis and PostgreSQL agree")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notsale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply pending migrations, then serve with granian")
    commands.add_parser("migrate", help="apply pending sql/ migrations and exit")
    rebuild = commands.add_parser(
        "reconcile", help="rebuild a sale's Redis state from PostgreSQL (default: current sale)"
    )
    rebuild.add_argument("--sale-id", type=int, help="the sale to rebuild (default: running)")
    rebuild.add_argument(
        "--check",
        action="store_true",
        help="only report differences; exit 1 when there are any",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"notsale: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    for name in unknown_variables(os.environ):
        log.warning(
            "unknown setting ignored: no NOTSALE_ variable has this name", extra={"variable": name}
        )
    if args.command == "serve":
        serve(settings)
    elif args.command == "reconcile":
        return asyncio.run(reconcile(settings, args.sale_id, args.check))
    else:
        run_migrations(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
