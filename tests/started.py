"""The life cycle of a test's own servers and set-ups (`with X(...) as x` starts x, and closes
it whatever happens), and the free ports they listen on."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Self


class Started:
    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def free_port(bus: bool = False) -> int:
    """A free port; with `bus`, also free 10000 above it (a cluster node's bus port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except (OSError, OverflowError):  # in use, or past 65535
                continue
        return port
