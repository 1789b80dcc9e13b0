"""The Litestar app factory and the lifespan that owns one worker's clients."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from litestar import Litestar, Response
from litestar._openapi import plugin as litestar_openapi
from litestar.config.compression import CompressionConfig
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath

from notsale import __version__, metrics
from notsale.admission import Admissions
from notsale.api.checkout import CheckoutController, checkout
from notsale.api.errors import EXCEPTION_HANDLERS
from notsale.api.health import HealthController
from notsale.api.hot import straight
from notsale.api.metrics import MetricsController
from notsale.api.openapi import document_hot_routes, document_raw_parameters
from notsale.api.page import PageController
from notsale.api.purchase import PurchaseController, purchase
from notsale.api.queue import QueueController
from notsale.api.sales import ITEMS_PAGE, SalesController
from notsale.api.users import UsersController
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.connections import REDIS_DOWN, connect
from notsale.engine.queue import WaitingRoom
from notsale.engine.sale import SaleEngine
from notsale.errors import NotsaleError
from notsale.identity import Identity
from notsale.logs import setup_logging
from notsale.recovery.reconcile import Reconciler
from notsale.recovery.watch import Watch, warn_on_eviction
from notsale.services import Services, services_from_state
from notsale.store.flusher import Flusher
from notsale.store.pool import READ_POOL_MAX_SIZE, create_pool
from notsale.store.seeds import SeedBook
from notsale.store.terms import TermsBook
from notsale.store.writer import GroupCommit

log = logging.getLogger("notsale")

# Garbage collector thresholds per generation (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)
# No Litestar route reads a body (POST /purchase reads its own, at most 1 KiB: api/hot.py);
# a route that ever reads one gets a 413 past this size instead of buffering whatever a
# client sends.
MAX_BODY_BYTES = 16 * 1024
# gzip's middle level: /sales (31 KB) to about a tenth, at a fraction of level 9's CPU.
GZIP_LEVEL = 6


def schema_path_not_found(path: FromPath[str] = "/") -> Response[None]:
    """Replaces Litestar's HTML 404 page for unknown /schema/… paths: our JSON 404."""
    raise NotFoundException


# Litestar registers this function for /schema/{path} when the app is built.
litestar_openapi.handle_schema_path_not_found = schema_path_not_found


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    setup_logging(settings.log_format)
    metrics.enabled = settings.metrics
    identity = Identity(settings)  # a JWKS file that cannot be used fails here
    admissions = Admissions(settings)

    @contextlib.asynccontextmanager
    async def lifespan(served: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            redis = await stack.enter_async_context(connect(settings.redis_url))
            pool = await create_pool(settings.database_url)
            stack.push_async_callback(pool.close)
            reads = await create_pool(settings.database_url, READ_POOL_MAX_SIZE)
            stack.push_async_callback(reads.close)
            writer = GroupCommit(pool, settings.user_limit)
            writer.start()
            stack.push_async_callback(writer.close)
            terms = TermsBook(pool, settings)
            flusher = Flusher(redis, pool, settings, terms=terms)
            flusher.start()
            stack.push_async_callback(flusher.close)
            reconciler = Reconciler(redis, pool, settings, terms)
            engine = SaleEngine(redis, settings, prepare=reconciler.ensure_ready, terms=terms.of)
            stack.callback(engine.close)
            watch = Watch(engine, reconciler, settings)
            seeds = SeedBook(pool)
            queue = WaitingRoom(redis, settings, seeds.of, lambda s: terms.of(s, fix=False))
            served.state.services = Services(
                settings,
                redis,
                engine,
                pool,
                reads,
                writer,
                flusher,
                reconciler,
                identity,
                terms,
                queue,
                admissions,
                seeds,
            )
            try:
                # Before the first request: mark the next sale ready, fix the running one's
                # terms if no worker did yet, and rebuild it if Redis lost it.
                await watch.check()
                await warn_on_eviction(engine)
                running = current_sale(settings.sale_seconds)
                await terms.of(running)
                if await engine.read(running) is None:
                    await reconciler.ensure_ready(running)
            except (NotsaleError, *REDIS_DOWN) as exc:
                log.warning(
                    "sale not prepared at start; the first checkout will retry",
                    extra={"error": repr(exc)},
                )
            watch.start()
            stack.push_async_callback(watch.close)
            handing_over = asyncio.create_task(metrics.hand_over_every())

            async def stop_handing_over() -> None:
                handing_over.cancel()  # it hands over what is left as it stops
                with contextlib.suppress(asyncio.CancelledError):
                    await handing_over

            stack.push_async_callback(stop_handing_over)
            # Measured (bench/RESULTS.md): a young-generation collection every 700
            # allocations paused the loop often enough to triple p99 under a stampede.
            gc.collect()
            gc.freeze()  # what start-up built lives as long as the worker: never scan it
            gc.set_threshold(*GC_THRESHOLDS)
            log.info("worker ready", extra={"consumer": flusher.consumer})
            yield

    app = Litestar(
        route_handlers=[
            CheckoutController,
            PurchaseController,
            SalesController,
            QueueController,
            UsersController,
            HealthController,
            PageController,
            *([MetricsController] if settings.metrics else []),
        ],
        dependencies={"services": Provide(services_from_state, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        # Reads that pages poll (31 KB of open sales, 8 KB per grid page) go out gzipped to
        # clients that accept it; the hot routes' small answers never pass through here.
        compression_config=CompressionConfig(backend="gzip", gzip_compress_level=GZIP_LEVEL),
        openapi_config=OpenAPIConfig(
            title="notsale",
            version=__version__,
            path="/schema",
            # The document only, as JSON (and YAML): Litestar's HTML viewers load their code
            # from third-party CDNs, which a service should not make its readers do.
            render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
            description=(
                "A flash sale: checkout holds an item, purchase buys it. A method a path does"
                " not list is answered 405 `method_not_allowed` with an `Allow` header (the"
                " reads answer OPTIONS too); this document is served at /schema as JSON, at"
                " /schema/openapi.json, and as YAML at /schema/openapi.yaml and .yml."
            ),
        ),
    )
    document_hot_routes(app)
    document_raw_parameters(app.openapi_schema)
    app.asgi_handler = straight(
        app.asgi_handler, {"/checkout": checkout, "/purchase": purchase}, [ITEMS_PAGE]
    )
    if settings.metrics:
        app.asgi_handler = metrics.metered(app.asgi_handler)
    return app
