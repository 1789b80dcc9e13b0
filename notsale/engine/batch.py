"""Batching: the operations a worker receives while its last Redis call is on the wire ride
together in the next one, so a stampede costs one round trip per batch, not per request.

One batch per sale is in flight at a time and the next one carries everything that arrived
meanwhile, in arrival order: the decisions are exactly those of running the requests one by
one in that order. A lone request (none of its sale in flight) is sent at once, from its own
task: one buyer alone waits for no other task (bench/RESULTS.md, one buyer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

# Operations in one script run at most: bounds how long one run blocks Redis (~a few ms).
BATCH_MAX_OPS = 256

Sender = Callable[[int, list[Any]], Awaitable[list[Any]]]


class _Lane:
    """A sale with a batch in flight, and the operations waiting for the next one."""

    __slots__ = ("ops", "waiters")

    def __init__(self) -> None:
        self.ops: list[list[Any]] = []
        self.waiters: list[asyncio.Future[Any]] = []


class Batcher:
    def __init__(self, send: Sender) -> None:
        self._send = send
        self._lanes: dict[int, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run

    async def submit(self, sale_id: int, op: list[Any]) -> Any:
        """One operation (its ARGV words); returns that operation's reply."""
        lane = self._lanes.get(sale_id)
        if lane is not None:  # a batch is in flight: ride in the next one
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            lane.ops.append(op)
            lane.waiters.append(waiter)
            return await waiter
        lane = self._lanes[sale_id] = _Lane()
        try:
            return (await self._send(sale_id, op))[0]
        finally:
            if lane.waiters:  # arrived meanwhile: a task of the lane's own sends them
                task = asyncio.get_running_loop().create_task(self._drain(sale_id, lane))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                del self._lanes[sale_id]

    async def _drain(self, sale_id: int, lane: _Lane) -> None:
        try:
            while lane.waiters:
                ops, waiters = lane.ops[:BATCH_MAX_OPS], lane.waiters[:BATCH_MAX_OPS]
                del lane.ops[:BATCH_MAX_OPS], lane.waiters[:BATCH_MAX_OPS]
                try:
                    replies = await self._send(sale_id, [word for op in ops for word in op])
                except Exception as exc:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                else:
                    for w, reply in zip(waiters, replies, strict=True):
                        if not w.done():
                            w.set_result(reply)
                await asyncio.sleep(0)  # let the rest of this loop tick's requests join
        finally:
            del self._lanes[sale_id]
