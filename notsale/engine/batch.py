"""Batching: the operations a worker receives while its last Redis call is on the wire ride
together in the next one, so a stampede costs one round trip per batch, not per request.

One batch per sale is in flight at a time and the next one carries everything that arrived
meanwhile, in arrival order: the decisions are exactly those of running the requests one by
one in that order. A lone request is sent at once (on the next loop iteration).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

# Operations in one script run at most: bounds how long one run blocks Redis (~a few ms).
BATCH_MAX_OPS = 256

Sender = Callable[[int, list[Any]], Awaitable[list[Any]]]


class _SaleQueue:
    """The queue and the in-flight flag of one sale."""

    __slots__ = ("busy", "ops", "waiters")

    def __init__(self) -> None:
        self.ops: list[list[Any]] = []
        self.waiters: list[asyncio.Future[Any]] = []
        self.busy = False


class Batcher:
    def __init__(self, send: Sender) -> None:
        self._send = send
        self._queues: dict[int, _SaleQueue] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run

    def submit(self, sale_id: int, op: list[Any]) -> asyncio.Future[Any]:
        """Queue one operation (its ARGV words); the future gets that operation's reply."""
        queue = self._queues.get(sale_id)
        if queue is None:
            queue = self._queues[sale_id] = _SaleQueue()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.ops.append(op)
        queue.waiters.append(waiter)
        if not queue.busy:
            queue.busy = True
            task = asyncio.get_running_loop().create_task(self._drain(sale_id, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return waiter

    async def _drain(self, sale_id: int, queue: _SaleQueue) -> None:
        # The first batch goes at once: this task's first step runs after the requests of
        # the tick that started it, so they have joined it already.
        try:
            while True:
                ops, waiters = queue.ops[:BATCH_MAX_OPS], queue.waiters[:BATCH_MAX_OPS]
                del queue.ops[:BATCH_MAX_OPS], queue.waiters[:BATCH_MAX_OPS]
                try:
                    replies = await self._send(sale_id, [word for op in ops for word in op])
                except Exception as exc:
                    # Redis failed (timed out, lost, refused): the operations that queued
                    # behind the batch meanwhile fail with it, unsent (nothing was decided for
                    # them), rather than each wait out the same timeout once more on a hung
                    # server (measured: a cluster master SIGSTOPped kept clients waiting 4 s).
                    waiters += queue.waiters
                    queue.ops.clear()
                    queue.waiters.clear()
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                else:
                    for w, reply in zip(waiters, replies, strict=True):
                        if not w.done():
                            w.set_result(reply)
                if not queue.waiters:
                    break
                await asyncio.sleep(0)  # let the rest of this loop tick's requests join
        finally:
            queue.busy = False
            if not queue.waiters:
                self._queues.pop(sale_id, None)
