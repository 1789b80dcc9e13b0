"""The waiting room's engine: queue.lua's runs for a sale, and the pre-queue's shuffle.

Every decision (a join, a poll, an admission) is one queue.lua run on Redis' clock, in the
sale's slot. The one thing Lua cannot do is the shuffle (it has no SHA-256): the first join,
poll or listing after the start that finds the pre-queue without positions reads it, sorts
it by the committed seed (notsale.admission.shuffled), and hands the order to queue.lua,
which takes the first order it gets (any worker computes the same one).

A Redis that loses the queue's keys (a restart without persistence, say) loses the tickets
with them: their holders join again. Admissions already given stay good until they expire:
they are signed, not stored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from notsale.admission import new_ticket, shuffled, ticket_id
from notsale.clock import KEEP_AFTER_SALE_MS, sale_window
from notsale.config import Settings, Terms
from notsale.connections import REDIS_DOWN, Client
from notsale.errors import ErrorCode, Failed, NotsaleError, Unavailable
from notsale.keys import queue_keys, sale_keys

SCRIPT = (Path(__file__).parent / "queue.lua").read_text()
# An admitted user with no admission, checkout or purchase for this long is no longer
# active: their place goes to the next in line.
IDLE_MS = 60_000
# The pace of admissions tells a waiter's wait once they have gone on for this long.
PACE_MIN_MS = 5000
# Tickets whose next poll a worker remembers at most (then it forgets them all).
NEXT_POLLS_MAX = 100_000


class Ticket(msgspec.Struct, frozen=True):
    """A ticket's state, as queue.lua answers it (times in ms on Redis' clock)."""

    user_id: str
    ticket: str
    ticket_id: str
    position: int | None  # None while pre-queued
    admitted_ms: int  # 0: not admitted
    poll_after_ms: int
    remaining: int
    front: int  # the last position admitted
    admitted: int  # admissions so far
    first_admitted_ms: int
    now_ms: int

    def eta_seconds(self) -> int | None:
        """How long until admission, from the pace of admissions so far; None when it
        cannot be told (no position yet, or nobody admitted yet)."""
        if self.admitted_ms:
            return 0
        spent_ms = self.now_ms - self.first_admitted_ms
        if self.position is None or not self.admitted or spent_ms < PACE_MIN_MS:
            return None
        return -(-(self.position - self.front) * spent_ms // (self.admitted * 1000))


class WaitingRoom:
    def __init__(
        self,
        redis: Client,
        settings: Settings,
        seed: Callable[[int], Awaitable[str]],
        terms: Callable[[int], Awaitable[Terms]],
    ) -> None:
        """`seed(sale_id)`: the sale's committed seed (store/seeds.py); `terms(sale_id)`: the
        sale's terms (store/terms.py)."""
        self._redis = redis
        self._script = redis.register_script(SCRIPT)
        self._settings = settings
        self._seed = seed
        self._terms = terms
        # When each ticket this worker answered may poll again (its clock): a poll sooner is
        # refused here, without Redis, however fast a client polls.
        self._next_poll: dict[str, float] = {}

    async def _run(self, sale_id: int, op: Sequence[Any]) -> list[Any]:
        s, terms = self._settings, await self._terms(sale_id)
        window = sale_window(sale_id, terms)
        keys = [*queue_keys(sale_id), sale_keys(sale_id).hexp, sale_keys(sale_id).sold]
        head: list[int | str] = [window.starts_ms, window.starts_ms - s.prequeue_seconds * 1000]
        head += [window.closes_ms]
        head += [terms.sale_size, s.active_max, s.admission_seconds * 1000, IDLE_MS]
        head += [KEEP_AFTER_SALE_MS, "1" if s.admission == "open" else "0"]
        for _ in range(2):
            try:
                reply: list[Any] = list(await self._script(keys=keys, args=[*head, *op]))
            except REDIS_DOWN as exc:
                raise Unavailable(Failed.REDIS) from exc
            if reply != ["shuffle"]:
                return reply
            await self._shuffle(sale_id, keys)
        raise Unavailable(Failed.REDIS, "The queue is being ordered; retry.")

    async def _shuffle(self, sale_id: int, keys: list[str]) -> None:
        try:
            prequeued = await self._redis.smembers(queue_keys(sale_id).prequeue)
        except REDIS_DOWN as exc:
            raise Unavailable(Failed.REDIS) from exc
        order = shuffled(await self._seed(sale_id), prequeued)
        await self._run(sale_id, ["order", *order])

    def _ticket(self, reply: list[Any]) -> Ticket:
        if reply[0] == "too_early":
            wait_s = max(1, -(-int(reply[1]) // 1000))
            raise NotsaleError(ErrorCode.TOO_EARLY, retry_after_s=wait_s)
        if reply[0] == "unknown":
            raise NotsaleError(ErrorCode.TICKET_INVALID)
        if reply[0] == "not_open":
            raise NotsaleError(ErrorCode.NOT_FOUND, "This sale's queue has not opened yet.")
        if reply[0] == "closed":
            raise NotsaleError(ErrorCode.SALE_CLOSED)
        user, ticket, tid, position, *numbers = reply[1:]
        found = Ticket(user, ticket, tid, int(position) or None, *map(int, numbers))
        if len(self._next_poll) >= NEXT_POLLS_MAX:
            self._next_poll.clear()
        self._next_poll[tid] = time.monotonic() + found.poll_after_ms / 1000
        return found

    async def join(self, sale_id: int, user_id: str, network: str | None) -> Ticket:
        """The user's ticket for the sale: a new one, or the one they have. The sale's seed
        is drawn before its first ticket: the commitment comes before anyone is queued."""
        await self._seed(sale_id)
        ticket = new_ticket()
        reply = await self._run(
            sale_id, ["join", user_id, ticket, ticket_id(ticket), network or ""]
        )
        return self._ticket(reply)

    async def poll(self, sale_id: int, ticket: str) -> Ticket:
        tid = ticket_id(ticket)
        wait_s = self._next_poll.get(tid, 0.0) - time.monotonic()
        if wait_s > 0:
            raise NotsaleError(ErrorCode.TOO_EARLY, retry_after_s=max(1, math.ceil(wait_s)))
        return self._ticket(await self._run(sale_id, ["poll", tid]))

    async def prequeue(
        self, sale_id: int, offset: int, count: int
    ) -> tuple[int, list[tuple[str, int]]] | None:
        """How many pre-queued, and (ticket_id, position) of those at positions offset + 1
        to offset + count; None while the sale has not started on Redis' clock."""
        reply = await self._run(sale_id, ["list", offset, count])
        if reply == ["not_started"]:
            return None
        prequeued, *found = reply
        pairs = [(tid, int(float(pos))) for tid, pos in zip(found[::2], found[1::2], strict=True)]
        return int(prequeued), pairs
