"""The sale clock: sales follow each other every SALE_SECONDS, aligned to the Unix epoch."""

from __future__ import annotations

import time

import msgspec


class SaleWindow(msgspec.Struct, frozen=True):
    sale_id: int
    starts_ms: int
    ends_ms: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sale_window(sale_id: int, sale_seconds: int) -> SaleWindow:
    sale_ms = sale_seconds * 1000
    return SaleWindow(sale_id, sale_id * sale_ms, (sale_id + 1) * sale_ms)


def current_sale(sale_seconds: int, at_ms: int | None = None) -> int:
    """The id of the sale running at `at_ms` (default: now): floor(unix_time / SALE_SECONDS)."""
    return (now_ms() if at_ms is None else at_ms) // (sale_seconds * 1000)


def rfc3339(ms: int) -> str:
    """UTC time with a Z, to the second, as every body of the contract spells times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
