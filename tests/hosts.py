"""Several service hosts on one machine: network namespaces of the test's own where this
machine allows it (`ip netns`, a veth pair each, joined by a bridge), else ports of 127.0.0.1.

With namespaces, host i has its own address (10.231.X.(11+i)) and its own loopback, and sees
the stores only at the bridge's address, `gateway`: Redis nodes bind it too, PostgreSQL is
reached through a forwarding proxy there (tests/faultproxy.py). Without them, every host is
127.0.0.1 and `gateway` is 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Self

from tests.started import Started


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts(Started):
    def __init__(self, count: int) -> None:
        self.count = count
        tag = os.getpid() % 10_000
        self._bridge = f"nsbr{tag}"
        self._namespaces = [f"notsale-{tag}-{i}" for i in range(count)]
        subnet = f"10.231.{tag % 250}"
        self._gateway = f"{subnet}.1"
        self._addresses = [f"{subnet}.{11 + i}" for i in range(count)]
        self.isolated = False
        self.why_not = ""

    @property
    def gateway(self) -> str:
        """Where the hosts reach the stores."""
        return self._gateway if self.isolated else "127.0.0.1"

    def address(self, host: int) -> str:
        return self._addresses[host] if self.isolated else "127.0.0.1"

    def command(self, host: int) -> list[str]:
        """What runs a command on the host."""
        return ["ip", "netns", "exec", self._namespaces[host]] if self.isolated else []

    def start(self) -> Self:
        if shutil.which("ip") is None:
            self.why_not = "no `ip` command"
            return self
        try:
            ip("link", "add", self._bridge, "type", "bridge")
            ip("addr", "add", f"{self._gateway}/24", "dev", self._bridge)
            ip("link", "set", self._bridge, "up")
            for i, (ns, address) in enumerate(zip(self._namespaces, self._addresses, strict=True)):
                outside, inside = f"{self._bridge}a{i}", f"{self._bridge}b{i}"
                ip("netns", "add", ns)
                ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                ip("link", "set", outside, "master", self._bridge)
                ip("link", "set", outside, "up")
                ip("link", "set", inside, "netns", ns)
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
                ip("-n", ns, "link", "set", inside, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            self.close()
            self.why_not = f"`ip netns` refused here: {exc}"
            return self
        self.isolated = True
        return self

    def describe(self) -> str:
        if self.isolated:
            return f"{self.count} hosts in network namespaces, at {', '.join(self._addresses)}"
        return f"{self.count} hosts on ports of 127.0.0.1 ({self.why_not})"

    def close(self) -> None:
        """Deleting a namespace deletes its end of the veth pair, and so the pair."""
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self._bridge], capture_output=True, timeout=10)
        self.isolated = False
