"""A TCP proxy that puts delays, stalls, cuts and refusals between the tests and a real server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tests.started import Started

T = TypeVar("T")

CHUNK = 65536
# A control call that takes longer means the proxy's loop is wedged; fail rather than hang.
CONTROL_TIMEOUT_S = 10.0


def _reset(sock: socket.socket, *_: object) -> None:
    """Closes with an RST (SO_LINGER 0) rather than a FIN, as a crashed host would."""
    if sock.fileno() != -1:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


class FaultProxy(Started):
    """Forwards connections on `listen`:`port` (127.0.0.1 unless told) to a target; faults
    are switched at any time.

    The proxy runs its own event loop in a daemon thread, so it keeps forwarding while the
    caller's thread or loop is blocked. Control methods are thread-safe and return once the
    change is in effect.
    """

    def __init__(self, target_host: str, target_port: int, *, listen: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen = listen
        self.port = 0
        self.connections = 0  # accepted, including refused ones
        self.bytes_up = 0  # client -> target, counted as handed to the target
        self.bytes_down = 0  # target -> client, counted as handed to the client
        self._delay = 0.0
        self._stalled = False
        self._refusing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._addrs: list[tuple[Any, ...]] = []
        # Replaced on every change: holders wait on the one they saw, so a set wakes them all.
        self._changed = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.listen}:{self.port}"

    # Lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        # Resolved once here so connecting upstream never needs the loop's executor threads.
        self._addrs = socket.getaddrinfo(*self.target, type=socket.SOCK_STREAM)
        self._listener = socket.create_server((self.listen, 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._changed = asyncio.Event()  # a fresh one: an Event binds to the loop that used it
        # A plain selector loop whatever policy the tests install (uvloop), for predictable sockets.
        self._loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"faultproxy-{self.port}", daemon=True
        )
        self._thread.start()
        self._call(self._begin)
        return self

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            if self._listener is not None:
                self._listener.close()
            self._loop = self._thread = self._listener = None

    # Faults

    def delay(self, seconds: float) -> None:
        """Holds every chunk, both ways, `seconds` after it was read before writing it (0 = off)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._call(lambda: self._set(delay=seconds))

    def stall(self) -> None:
        """Stops writing in both directions; bytes read meanwhile are buffered, nothing closes."""
        self._call(lambda: self._set(stalled=True))

    def resume(self) -> None:
        """Ends a stall: buffered bytes are written in the order they were read."""
        self._call(lambda: self._set(stalled=False))

    @contextlib.contextmanager
    def stalled(self) -> Iterator[Self]:
        self.stall()
        try:
            yield self
        finally:
            self.resume()

    def cut(self) -> None:
        """Resets every current connection on both sides; later connections work normally."""
        self._call(self._cut)

    def refuse(self, on: bool = True) -> None:
        """While on, accepted connections are reset at once and existing ones are cut."""
        self._call(lambda: self._set(refusing=on))

    # Inside the proxy's loop

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._loop is None:
            raise RuntimeError("FaultProxy is not running")
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(CONTROL_TIMEOUT_S)

    async def _begin(self) -> None:
        self._acceptor = asyncio.get_running_loop().create_task(self._accept())

    async def _shutdown(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            # Waited for so the loop stops watching the listener before it is closed.
            await asyncio.wait([self._acceptor])
        await self._cut()

    async def _set(
        self,
        *,
        delay: float | None = None,
        stalled: bool | None = None,
        refusing: bool | None = None,
    ) -> None:
        self._delay = self._delay if delay is None else delay
        self._stalled = self._stalled if stalled is None else stalled
        self._changed.set()
        self._changed = asyncio.Event()
        if refusing is not None:
            self._refusing = refusing
            if refusing:
                await self._cut()

    async def _cut(self) -> None:
        links = list(self._links)
        for link in links:
            link.cancel()
        if links:
            await asyncio.wait(links)

    async def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(self._listener)
            self.connections += 1
            if self._refusing:
                _reset(client)
                continue
            link = loop.create_task(self._serve(client))
            self._links.add(link)
            link.add_done_callback(self._links.discard)
            # A link cancelled by a cut before it first ran never reaches its own finally.
            link.add_done_callback(functools.partial(_reset, client))

    async def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        abrupt = True
        try:
            upstream = await self._connect()
            for peer in (client, upstream):
                # Small request/response protocols would otherwise wait on Nagle's algorithm.
                peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.TaskGroup() as group:
                for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
                    group.create_task(self._read(src, queue))
                    group.create_task(self._write(queue, dst, up))
            abrupt = False
        except* OSError:
            pass  # either peer went away or the target is down: the other peer is reset
        finally:
            for sock in (client, upstream):
                if sock is None:
                    continue
                if abrupt:
                    _reset(sock)
                else:
                    sock.close()

    async def _connect(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        error = OSError(f"cannot resolve {self.target}")
        for family, kind, proto, _, addr in self._addrs:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
            else:
                return sock
        raise error

    async def _read(self, src: socket.socket, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        # Reads go on during a stall or delay, so bytes wait here rather than in the peer.
        loop = asyncio.get_running_loop()
        while True:
            chunk = await loop.sock_recv(src, CHUNK)
            queue.put_nowait((loop.time(), chunk))
            if not chunk:
                return

    async def _write(
        self, queue: asyncio.Queue[tuple[float, bytes]], dst: socket.socket, up: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            read_at, chunk = await queue.get()
            await self._hold(read_at)
            if not chunk:
                dst.shutdown(socket.SHUT_WR)  # half-close, as the source did
                return
            # Counted before the write so a peer that has the bytes also sees them counted.
            if up:
                self.bytes_up += len(chunk)
            else:
                self.bytes_down += len(chunk)
            await loop.sock_sendall(dst, chunk)

    async def _hold(self, read_at: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            changed = self._changed
            wait = None if self._stalled else read_at + self._delay - loop.time()
            if wait is not None and wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await changed.wait()


def through(url: str, proxy: FaultProxy) -> str:
    """`url` pointing at the proxy instead of its server (user, password and path kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{proxy.address}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextlib.contextmanager
def in_front_of(url: str, default_port: int) -> Iterator[tuple[FaultProxy, str]]:
    """A proxy in front of the server `url` names, and `url` through it."""
    parts = urlsplit(url)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or default_port) as proxy:
        yield proxy, through(url, proxy)
