"""Answers kept for a second: a buyers' page polling many times a second costs Redis once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")
# How long a worker keeps the answers of reads that buyers' pages poll.
READ_CACHE_S = 1.0
READ_CACHE_MAX = 4096


class Recent:
    """Answers kept for READ_CACHE_S: a page polling many times a second costs Redis once.
    Callers that ask while an answer is being made share it."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        kept = self._kept.get(key)
        if kept is None or loop.time() - kept[0] > READ_CACHE_S or kept[1].cancelled():
            if len(self._kept) >= READ_CACHE_MAX:
                self._kept.clear()
            kept = self._kept[key] = (loop.time(), asyncio.ensure_future(make()))

            def forget_failed(made: asyncio.Future[Any]) -> None:
                # A failed read is not kept: the next caller asks again.
                if made.cancelled() or made.exception() is not None:
                    self._kept.pop(key, None)

            kept[1].add_done_callback(forget_failed)
        return cast(T, await asyncio.shield(kept[1]))
