"""The fault-injection proxy, against an echo server of its own (no Redis or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy

TIMEOUT_S = 2.0
# Long enough that bytes not forwarded within it are taken as held.
QUIET_S = 0.3


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        # The proxy resets connections on purpose; a traceback here would fail the test.
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    block_on_close = True  # server_close() joins the handlers, so their sockets are closed


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with FaultProxy("127.0.0.1", server.server_address[1]) as fault_proxy:
            yield fault_proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {data!r}")
        data += chunk
    return data


def echoes(sock: socket.socket, payload: bytes = b"ping") -> bool:
    """Whether `payload` comes back; False on EOF, reset or timeout."""
    try:
        sock.sendall(payload)
        return recv_exactly(sock, len(payload)) == payload
    except (OSError, EOFError):
        return False


def assert_dead(sock: socket.socket) -> None:
    """The connection was closed or reset by the proxy (not merely quiet)."""
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""


def test_passes_bytes_through(proxy: FaultProxy) -> None:
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    with connect(proxy) as sock:
        payload = bytes(range(256)) * 1000
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
    assert proxy.connections == 1
    assert proxy.bytes_up == proxy.bytes_down == len(payload)


def test_delay_holds_each_direction(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echoes(sock)  # connected upstream before timing
        proxy.delay(0.2)
        started = time.monotonic()
        assert echoes(sock)
        assert time.monotonic() - started >= 0.4  # held on the way up and on the way down

        # Switching the delay off also releases what is already held.
        proxy.delay(10)
        sock.sendall(b"held")
        time.sleep(0.1)
        started = time.monotonic()
        proxy.delay(0)
        assert recv_exactly(sock, 4) == b"held"
        assert time.monotonic() - started < 1.0


def test_stall_buffers_and_resume_delivers_in_order(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echoes(sock)
        with proxy.stalled():
            sock.sendall(b"one,")
            sock.sendall(b"two")
            with connect(proxy) as late:
                late.sendall(b"late")  # accepted while stalled, and stalled too
                sock.settimeout(QUIET_S)
                with pytest.raises(TimeoutError):
                    sock.recv(1)
                late.settimeout(QUIET_S)
                with pytest.raises(TimeoutError):
                    late.recv(1)
                assert proxy.bytes_up == 4  # only the first echo went through
                proxy.resume()
                late.settimeout(TIMEOUT_S)
                assert recv_exactly(late, 4) == b"late"
        sock.settimeout(TIMEOUT_S)
        assert recv_exactly(sock, 7) == b"one,two"
        assert echoes(sock)
    assert proxy.connections == 2


def test_cut_resets_current_connections_only(proxy: FaultProxy) -> None:
    with connect(proxy) as first, connect(proxy) as second:
        assert echoes(first)
        assert echoes(second)
        proxy.cut()
        assert_dead(first)
        assert_dead(second)
    with connect(proxy) as sock:
        assert echoes(sock)
    assert proxy.connections == 3


def test_cut_while_stalled(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echoes(sock)
        with proxy.stalled():
            sock.sendall(b"lost")
            proxy.cut()
            assert_dead(sock)
    with connect(proxy) as sock:
        assert echoes(sock)


def test_refuse_cuts_and_rejects_until_switched_off(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echoes(sock)
        proxy.refuse(True)
        assert_dead(sock)
    for _ in range(3):
        # A refused connection may already fail in connect(), or on the echo.
        with contextlib.suppress(ConnectionResetError), connect(proxy) as sock:
            assert not echoes(sock)
    proxy.refuse(False)
    with connect(proxy) as sock:
        assert echoes(sock)
    assert proxy.connections == 5


def test_dead_target_and_close() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        dead_port = unused.getsockname()[1]
    # The target is down: the client is reset, in connect() already or on the echo.
    with (
        FaultProxy("127.0.0.1", dead_port) as fault_proxy,
        contextlib.suppress(ConnectionResetError),
        connect(fault_proxy) as sock,
    ):
        assert not echoes(sock)
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        fault_proxy = FaultProxy("127.0.0.1", server.server_address[1]).start()
        with connect(fault_proxy) as sock:
            assert echoes(sock)
            fault_proxy.close()
            assert_dead(sock)
        fault_proxy.close()  # idempotent
        with pytest.raises(RuntimeError):
            fault_proxy.stall()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_from_an_async_test(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"async")
        assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT_S) == b"async"
        with proxy.stalled():
            writer.write(b"held")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(4), QUIET_S)
        # The cancelled read left nothing consumed: the proxy held every byte.
        assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT_S) == b"held"
        # The proxy keeps forwarding while this loop is blocked.
        writer.write(b"blocked")
        await writer.drain()
        time.sleep(QUIET_S)  # noqa: ASYNC251
        assert proxy.bytes_down == 16
        assert await asyncio.wait_for(reader.readexactly(7), TIMEOUT_S) == b"blocked"
        proxy.cut()
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
