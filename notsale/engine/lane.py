"""The decisions' own Redis connection: sale.lua runs go straight onto the socket.

coredis serves every other command. Its connections hand each command to a writer task and
each reply back from a reader task over anyio memory streams: on this machine that doubled
the network's round trip (bench/RESULTS.md, "The Redis client path"). A worker's sale.lua
runs take this connection instead: the caller writes the command on the transport itself,
and `data_received` parses the replies with coredis' own RESP parser and hands each to the
future that waits for it, in order. Every batch of every sale pipelines over it.

Exactly once, as through coredis (connections.py): a call is never sent twice. An error
reply fails its call alone. A call unanswered after STREAM_TIMEOUT_S, or a lost connection,
fails every call still waiting and closes the connection (a stalled one may never answer
again; a reply that comes late still meets its own, abandoned call, as replies are matched
in order); the next call opens a new one. Every failure is one of REDIS_DOWN, answered 503.
The single exception is NOSCRIPT (Redis restarted, or its scripts were flushed): nothing
ran, so the script is sent once more, in full (EVAL).

Only for a single Redis: on a cluster a sale's master changes with failovers and slot moves,
which coredis' cluster client follows (see `Lane.of`).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from typing import Any

import coredis
from coredis.connection import TCPLocation, UnixDomainSocketLocation
from coredis.constants.resp import DataType
from coredis.exceptions import ConnectionError, NoScriptError
from coredis.parser import NotEnoughData, Parser

from notsale.connections import REDIS_CONNECT_TIMEOUT_S, STREAM_TIMEOUT_S, Client


def pack(*words: str | int | bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word if isinstance(word, bytes) else str(word).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Wire(asyncio.Protocol):
    """One connection: replies are matched to the waiting calls in the order they were sent."""

    def __init__(self) -> None:
        self._parser = Parser()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Write one command; the future gets its reply, or the error that lost it."""
        assert self._transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._transport.write(command)
        return waiter

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while True:
            try:
                reply = self._parser.parse(True, "utf-8")
            except Exception as exc:  # a reply that is not RESP: nothing after it is either
                self.fail(ConnectionError(f"Redis sent what is not RESP: {exc!r}"))
                return
            if isinstance(reply, NotEnoughData):
                return
            kind, value = reply
            if kind == DataType.PUSH:
                continue  # nothing subscribes on this connection; never a reply
            if not self._waiting:
                self.fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter = self._waiting.popleft()
            if waiter.done():  # its caller gave up (cancelled): the reply is dropped
                continue
            if isinstance(value, BaseException):  # an error reply
                waiter.set_exception(value)
            else:
                waiter.set_result(value)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_waiting(ConnectionError("Connection to Redis lost"))

    def fail(self, exc: BaseException) -> None:
        """Close the connection and fail every call still waiting on it with `exc`."""
        self.closed = True
        self._fail_waiting(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail_waiting(self, exc: BaseException) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(type(exc)(*exc.args))  # one each: tracebacks differ


class Lane:
    """A worker's connection for sale.lua, opened on first use and again after a failure."""

    def __init__(
        self,
        location: TCPLocation | UnixDomainSocketLocation,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._location = location
        self._db = db
        self._auth = (username or "default", password or "") if username or password else None
        self._ssl = ssl_context
        self._wire: _Wire | None = None
        self._opening: asyncio.Task[_Wire] | None = None

    @classmethod
    def of(cls, redis: Client) -> Lane | None:
        """A lane to the Redis `redis` talks to; None for a cluster (coredis routes those)."""
        if isinstance(redis, coredis.RedisCluster):
            return None
        pool = redis.connection_pool
        options = pool.connection_kwargs
        assert isinstance(pool.location, TCPLocation | UnixDomainSocketLocation)
        return cls(
            pool.location,
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
            ssl_context=options.get("ssl_context"),
        )

    async def evalsha(self, sha: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a loaded script (loading it once if Redis does not know it)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call("EVAL", script, len(keys), *keys, *args)

    async def call(self, *words: Any) -> Any:
        """Send one command, once; its reply, or the error that answered or lost it."""
        command = pack(*words)
        wire = self._wire
        if wire is None or wire.closed:
            wire = await self._open()
        waiter = wire.send(command)
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + STREAM_TIMEOUT_S, self._expire, wire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    @staticmethod
    def _expire(wire: _Wire, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            wire.fail(TimeoutError(f"Redis did not answer within {STREAM_TIMEOUT_S} s"))

    async def _open(self) -> _Wire:
        """One connection attempt at a time; the calls arriving meanwhile share it."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, task: asyncio.Task[_Wire]) -> None:
        self._opening = None
        if not task.cancelled() and task.exception() is None:
            self._wire = task.result()

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        location = self._location
        async with asyncio.timeout(REDIS_CONNECT_TIMEOUT_S):
            if isinstance(location, UnixDomainSocketLocation):
                _, wire = await loop.create_unix_connection(_Wire, location.path, ssl=self._ssl)
            else:
                _, wire = await loop.create_connection(
                    _Wire, location.host, location.port, ssl=self._ssl
                )
            try:
                hello: list[str | int] = ["HELLO", 3]
                if self._auth is not None:
                    hello += ["AUTH", *self._auth]
                replies = [wire.send(pack(*hello))]
                if self._db:
                    replies.append(wire.send(pack("SELECT", self._db)))
                await asyncio.gather(*replies)
            except BaseException:
                wire.fail(ConnectionError("Redis refused the connection's handshake"))
                raise
        return wire

    def close(self) -> None:
        if self._wire is not None:
            self._wire.fail(ConnectionError("closed"))
            self._wire = None
