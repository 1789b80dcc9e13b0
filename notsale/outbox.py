"""The outbox: the log of decisions Redis keeps until PostgreSQL has them as rows.

This module owns the entry format (written by sale.lua and by the checkout route for what
Redis did not decide, read by the flusher, which makes rows of them: store/rows.py), its
codec, and the stream's key, field and consumer group.
Every checkout carries a request id made by its worker; its attempt row is keyed by it, so
the decision's entry and any fallback row of the same request become one row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from notsale.clock import now_ms
from notsale.errors import ErrorCode
from notsale.keys import sale_keys

if TYPE_CHECKING:
    pass

# Raw values of a rejected request are stored cut to these lengths (they can be anything):
# a valid user id has at most 64 characters and an item id 19 digits, and a query of the
# contract about 110, so a junk flood stores at most about 0.5 KB an attempt.
RAW_VALUE_CHARS = 64
RAW_QUERY_CHARS = 256


# Every entry of a sale's stream has one field, FIELD; the flushers read the streams as one
# consumer group.
FIELD = "e"
GROUP = "flushers"


def stream(sale_id: int) -> str:
    """The key of a sale's outbox stream (one of the sale's keys: see keys.py)."""
    return sale_keys(sale_id).outbox


class _Event(msgspec.Struct, array_like=True, frozen=True, tag_field="kind"):
    """An entry: a JSON array whose first element is its kind. sale.lua builds the same
    arrays with cjson: {kind, request, user, item, outcome, code, time_ms, seq}."""

    request: str  # the checkout's request id (the attempt row's key); "" for a purchase
    user: str
    item: str
    outcome: str
    code: str
    time_ms: str
    seq: int  # a purchase's place among its user's purchases in the sale (1..limit); else 0


class Checkout(_Event, frozen=True, tag="c"):
    """A checkout attempt, whatever its outcome."""

    query: str | None = None  # the raw query string of a malformed request
    # The sale the attempt named, when it is not the stream's: a checkout naming a sale that
    # closed long ago is logged in the running sale's outbox (the old one's may be gone).
    sale: int | None = None
    network: str | None = None  # the client's (notsale/network.py), when known


class Purchase(_Event, frozen=True, tag="p"):
    """A purchase Redis decided."""


Event = Checkout | Purchase
ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Event)


def entry(event: Event) -> dict[str, str]:
    """A stream entry's fields, as XADD takes them."""
    return {FIELD: ENCODER.encode(event).decode()}


def refused_event(
    request_id: str,
    outcome: ErrorCode,
    user_raw: str,
    item_raw: str,
    query: str,
    sale_id: int | None = None,
    network: str | None = None,
) -> Checkout:
    """The entry of a checkout refused in Python, its raw values cut to bounded length."""
    return Checkout(
        request_id,
        user_raw[:RAW_VALUE_CHARS],
        item_raw[:RAW_VALUE_CHARS],
        outcome.value,
        "",
        str(now_ms()),
        0,
        query[:RAW_QUERY_CHARS],
        sale_id,
        network,
    )
