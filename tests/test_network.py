"""The client's network on each attempt row: the /24 or /64 of the peer, or of the address
the farthest trusted proxy was sent from (docs/api.md, "The attempt row")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from notsale.network import client_network, prefix
from tests.support import attempt_outcomes


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4, as a dual-stack socket gives it
        (" 10.1.2.3 ", "10.1.2.0/24"),
        ("not-an-address", None),
        ("", None),
        ("203.0.113.7:8080", None),
    ],
)
def test_an_address_is_stored_as_its_network(address: str, network: str | None) -> None:
    assert prefix(address) == network


def forwarded(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", value.encode())]


def test_forwarded_addresses_count_only_behind_trusted_proxies() -> None:
    peer = ("192.0.2.10", 40000)  # the nearest proxy, or the client itself
    header = forwarded("198.51.100.1, 203.0.113.5")  # a client's own entry, then a proxy's
    assert client_network(peer, header, 0) == "192.0.2.0/24"  # never read without trust
    assert client_network(peer, header, 1) == "203.0.113.0/24"
    assert client_network(peer, header, 2) == "198.51.100.0/24"
    assert client_network(peer, header, 5) == "198.51.100.0/24"  # fewer hops than trusted
    assert client_network(peer, [], 1) == "192.0.2.0/24"  # no header: the peer
    assert client_network(peer, forwarded("junk"), 1) is None
    assert client_network(None, [], 0) is None  # a Unix socket


async def test_each_attempt_row_keeps_its_clients_network(
    serve: Callable[..., Any], db: asyncpg.Connection
) -> None:
    direct = await serve()
    behind = await serve(trusted_proxies=1)
    client = {"X-Forwarded-For": "203.0.113.99"}
    async with httpx.AsyncClient() as http:
        for server, user in ((direct, "ann"), (behind, "bob")):
            for item in ("1", "x"):  # one decided by Redis, one refused before it
                url = f"{server.base_url}/checkout"
                await http.post(url, params={"user_id": user, "id": item}, headers=client)
    await attempt_outcomes(db, 4)
    rows = await db.fetch("SELECT network::text, outcome FROM checkout_attempts ORDER BY id")
    assert sorted((r["network"], r["outcome"]) for r in rows) == [
        ("127.0.0.0/24", "invalid_request"),
        ("127.0.0.0/24", "ok"),
        ("203.0.113.0/24", "invalid_request"),
        ("203.0.113.0/24", "item_held"),
    ]
