"""Prometheus metrics, added up over every granian worker.

`notsale serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers
start (and removes it at exit): prometheus_client then keeps each process' values in
memory-mapped files there, and GET /metrics, answered by any one worker, adds them up.
Without it (the app served in one process, as in tests) the values are that process' own.

Per request (a status count, a latency, a checkout's or purchase's outcome) and per Redis
batch, values are added up in the worker and handed to prometheus_client every HAND_OVER_S:
its memory-mapped writes cost about a microsecond each, too much for every request. The
rest (flushes, commits, rebuilds) is recorded as it happens. What Redis knows (the running
sale's counts, each outbox's backlog) is read at scrape time.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The hot routes: they record their own answers, by outcome too (ok, or the error code).
HOT_ROUTES = frozenset(("/checkout", "/purchase"))
# Where a hot request's start is kept in its ASGI scope.
STARTED = "notsale.started"
# A request that matched no route (its status is 404).
UNMATCHED = "unmatched"
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

REQUESTS = Counter("notsale_requests", "HTTP requests answered", ["route", "status"])
LATENCY = Histogram(
    "notsale_request_duration_seconds", "Time to answer a request", ["route"], buckets=SECONDS
)
OUTCOMES = Counter(
    "notsale_outcomes",
    "Checkout and purchase answers, by error code (ok: none)",
    ["route", "outcome"],
)
BATCH_OPS = Histogram("notsale_redis_batch_ops", "Operations per sale.lua run", buckets=SIZES)
SCRIPT_SECONDS = Histogram(
    "notsale_redis_script_seconds", "Round trip of one sale.lua run", buckets=SECONDS
)
FLUSH_ENTRIES = Histogram(
    "notsale_flush_batch_entries", "Outbox entries per flushed batch", buckets=SIZES
)
FLUSH_LAG = Histogram(
    "notsale_flush_lag_seconds",
    "Age of a flushed batch's oldest entry when it was committed",
    buckets=SECONDS,
)
ROWS = Counter("notsale_rows_written", "Rows committed to PostgreSQL (repeats included)", ["table"])
ATTEMPT_ROWS = ROWS.labels("checkout_attempts")
PURCHASE_ROWS = ROWS.labels("purchases")
WAITING = Gauge(
    "notsale_purchases_waiting",
    "Purchases decided in Redis and waiting for their PostgreSQL commit",
    multiprocess_mode="livesum",
)
REBUILDS = Counter("notsale_rebuilds", "Sales rebuilt in Redis from PostgreSQL")
REJECTS = Counter("notsale_outbox_rejects", "Outbox entries set aside in outbox_rejects")

# Off (NOTSALE_METRICS=0): no per-batch recording (and no `metered`, so none per request).
enabled = True
# Per-request and per-batch values are added up in plain dicts and handed to prometheus_client
# (a lock and a memory-mapped write per value) this often, and before each scrape.
HAND_OVER_S = 0.5

# Bound label children, looked up once: labels() costs as much again as the increment.
_requests: dict[tuple[str, int], Any] = {}
_latency: dict[str, Any] = {}
_outcomes: dict[tuple[str, str], Any] = {}
# What this process counted and observed since its last hand-over, by label child.
_counted: dict[Any, int] = {}
_observed: dict[Any, list[float]] = {}  # a count per bucket, then the sum


def _count(child: Any) -> None:
    _counted[child] = _counted.get(child, 0) + 1


def _observe(histogram: Any, value: float) -> None:
    slots = _observed.get(histogram)
    if slots is None:
        slots = _observed[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
    slots[bisect.bisect_left(histogram._upper_bounds, value)] += 1
    slots[-1] += value


def hand_over() -> None:
    """Add what this process recorded to prometheus_client's values. Histograms are filled
    through their buckets and sum, as their observe() does one value at a time."""
    for child, count in _counted.items():
        child.inc(count)
    for histogram, slots in _observed.items():
        for bucket, observations in zip(histogram._buckets, slots, strict=False):
            if observations:
                bucket.inc(observations)
        histogram._sum.inc(slots[-1])
    _counted.clear()
    _observed.clear()


async def hand_over_every(seconds: float = HAND_OVER_S) -> None:
    try:
        while True:
            await asyncio.sleep(seconds)
            hand_over()
    finally:
        hand_over()  # what the last moments recorded too


def hot_answer(scope: Scope, status: int, outcome: str) -> None:
    """A hot route's answer, recorded where it is made (api/hot.py, api/errors.py): its status,
    latency and outcome (ok or the error code)."""
    started = cast(float | None, scope.get(STARTED))
    if started is None:  # metrics are off
        return
    route = scope["path"]  # a hot route's path is its template
    _answered(route, status, time.perf_counter() - started)
    child = _outcomes.get((route, outcome))
    if child is None:
        child = _outcomes[route, outcome] = OUTCOMES.labels(route, outcome)
    _count(child)


def batch(ops: int, seconds: float) -> None:
    if enabled:
        _observe(BATCH_OPS, ops)
        _observe(SCRIPT_SECONDS, seconds)


def _answered(route: str, status: int, seconds: float) -> None:
    child = _requests.get((route, status))
    if child is None:
        child = _requests[route, status] = REQUESTS.labels(route, str(status))
    _count(child)
    timer = _latency.get(route)
    if timer is None:
        timer = _latency[route] = LATENCY.labels(route)
    _observe(timer, seconds)


def metered(app: ASGIApp) -> ASGIApp:
    """`app` (Litestar's router with its exception handling), counting and timing every
    request by route template and status."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if scope["path"] in HOT_ROUTES:
            # Measured: wrapping `send` cost the stampede 5-7 % of its CPU. The hot routes
            # record their answers themselves (hot_answer), from this start.
            scope[STARTED] = started  # type: ignore[literal-required]
            await app(scope, receive, send)
            return
        status = 500  # the app failed before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_noting_status)
        finally:
            route = scope.get("path_template") or UNMATCHED
            _answered(route, status, time.perf_counter() - started)

    return handle


def multiprocess_directory() -> str | None:
    """Where the workers keep their values, if `notsale serve` set one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that died (granian replaced them); their counters
    stay, as counters must."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])  # gauge_livesum_<pid>
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


class _Scraped(Collector):
    """Gauges read at scrape time, from outside this process' values."""

    def __init__(self, families: Iterable[GaugeMetricFamily]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families


def sale_families(
    sale_id: int, sold: int, held: int, remaining: int, backlog: dict[int, int]
) -> list[GaugeMetricFamily]:
    families = []
    for name, value, text in (
        ("sold", sold, "Items sold in the running sale"),
        ("held", held, "Items held (checked out, not bought) in the running sale"),
        ("remaining", remaining, "Items neither sold nor held in the running sale"),
    ):
        family = GaugeMetricFamily(f"notsale_sale_{name}", text, labels=["sale_id"])
        family.add_metric([str(sale_id)], value)
        families.append(family)
    family = GaugeMetricFamily(
        "notsale_outbox_backlog",
        "Decisions in a sale's outbox not yet written to PostgreSQL",
        labels=["sale_id"],
    )
    for sale, entries in sorted(backlog.items()):
        family.add_metric([str(sale)], entries)
    families.append(family)
    return families


def redis_up(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "notsale_redis_up", "Whether this scrape could read the sale from Redis", value=int(up)
    )


def exposition(scraped: Iterable[GaugeMetricFamily]) -> bytes:
    """Every worker's values and the scraped gauges, in Prometheus' text format."""
    hand_over()
    directory = multiprocess_directory()
    if directory is None:
        registry: CollectorRegistry = REGISTRY
        extra = CollectorRegistry()
        extra.register(_Scraped(scraped))
        return generate_latest(registry) + generate_latest(extra)
    forget_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(_Scraped(scraped))
    return generate_latest(registry)
