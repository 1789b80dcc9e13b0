"""The sale clock: sales follow each other every SALE_SECONDS, aligned to the Unix epoch. A
sale stays open after the next one starts, until it sells out or SALE_OPEN_SECONDS after
its own start."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from notsale.config import Settings, Terms


# Redis' clock decides when sales start and close (sale.lua). A worker refuses on its own
# clock only what no difference between the two up to this long could make right.
CLOCK_SKEW_MS = 60_000
# A sale's Redis keys outlive its close by this long, so a late purchase retry is still
# answered from Redis; after that PostgreSQL answers it, and Redis memory does not grow sale
# after sale.
KEEP_AFTER_SALE_MS = 3_600_000


class SaleWindow(msgspec.Struct, frozen=True):
    sale_id: int
    starts_ms: int
    ends_ms: int  # when the next sale starts
    closes_ms: int  # when it closes if it has not sold out by then


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sale_window(sale_id: int, settings: Settings | Terms) -> SaleWindow:
    sale_ms = settings.sale_seconds * 1000
    starts = sale_id * sale_ms
    return SaleWindow(sale_id, starts, starts + sale_ms, starts + settings.sale_open_seconds * 1000)


def current_sale(sale_seconds: int, at_ms: int | None = None) -> int:
    """The id of the sale running at `at_ms` (default: now): floor(unix_time / SALE_SECONDS)."""
    return (now_ms() if at_ms is None else at_ms) // (sale_seconds * 1000)


def surely_not_started(sale_id: int, sale_seconds: int) -> bool:
    """True when the sale has not started on Redis' clock either (see CLOCK_SKEW_MS)."""
    return sale_id > current_sale(sale_seconds, now_ms() + CLOCK_SKEW_MS)


def surely_closed(sale_id: int, settings: Settings | Terms, for_ms: int = 0) -> bool:
    """True when the sale has been closed for `for_ms` on Redis' clock too (CLOCK_SKEW_MS)."""
    return sale_window(sale_id, settings).closes_ms + for_ms + CLOCK_SKEW_MS <= now_ms()


def unclosed_sales(settings: Settings, at_ms: int | None = None) -> range:
    """The sales started by `at_ms` whose open time is not over, newest first (some of them
    may have sold out)."""
    at = now_ms() if at_ms is None else at_ms
    running = current_sale(settings.sale_seconds, at)
    # Sale N is open while N * sale_ms + open_ms > at.
    open_ms, sale_ms = settings.sale_open_seconds * 1000, settings.sale_seconds * 1000
    oldest = max(0, (at - open_ms) // sale_ms + 1)
    return range(running, oldest - 1, -1)


def rfc3339(ms: int) -> str:
    """UTC time with a Z, to the second, as every body of the contract spells times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
