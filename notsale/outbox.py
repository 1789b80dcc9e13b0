"""The outbox: the log of decisions Redis keeps until PostgreSQL has them as rows.

This module owns the entry format (written by sale.lua and by `record_refused` below, read by
the flusher), its codec, the stream's key, field and consumer group, and how a checkout
refused before Redis decided it is recorded.
Every checkout carries a request id made by its worker; its attempt row is keyed by it, so
the decision's entry and any fallback row of the same request become one row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from notsale.engine.clock import now_ms
from notsale.engine.keys import sale_keys
from notsale.errors import ErrorCode, Failed, NotsaleError
from notsale.store.rows import AttemptRow, PurchaseRow, int_or_none, ms_to_datetime, storable

if TYPE_CHECKING:
    from notsale.engine.sale import SaleEngine
    from notsale.store.writer import GroupCommit

# Raw values of a rejected request are stored cut to these lengths (they can be anything).
RAW_VALUE_CHARS = 128
RAW_QUERY_CHARS = 1024


# Every entry of a sale's stream has one field, FIELD; the flushers read the streams as one
# consumer group.
FIELD = "e"
GROUP = "flushers"


def stream(sale_id: int) -> str:
    """The key of a sale's outbox stream (one of the sale's keys: see engine/keys.py)."""
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


class Purchase(_Event, frozen=True, tag="p"):
    """A purchase Redis decided."""


Event = Checkout | Purchase
ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Event)


def entry(event: Event) -> dict[str, str]:
    """A stream entry's fields, as XADD takes them."""
    return {FIELD: ENCODER.encode(event).decode()}


# What `rows` raises for an entry that is not one this module or sale.lua wrote.
UNREADABLE = (KeyError, ValueError, OverflowError, OSError, msgspec.MsgspecError)


def attempt_row(sale_id: int, event: Checkout, entry_id: str = "") -> AttemptRow:
    query = None if event.query is None else storable(event.query)
    return AttemptRow(
        event.request or f"{sale_id}:{entry_id}",
        sale_id if event.sale is None else event.sale,
        storable(event.user),
        int_or_none(event.item),
        event.code or None,
        event.outcome,
        query,
        ms_to_datetime(int(event.time_ms)),
    )


def rows(
    sale_id: int, entry_id: str, payload: str | bytes
) -> tuple[AttemptRow | None, PurchaseRow | None]:
    """One stream entry's payload (its FIELD) as the row it logs."""
    event = DECODER.decode(payload)
    if isinstance(event, Purchase):
        at = ms_to_datetime(int(event.time_ms))
        return None, PurchaseRow(sale_id, int(event.item), event.user, event.code, at, event.seq)
    return attempt_row(sale_id, event, entry_id), None


def refused_event(
    request_id: str,
    outcome: ErrorCode,
    user_raw: str,
    item_raw: str,
    query: str,
    sale_id: int | None = None,
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
    )


async def record_refused(
    engine: SaleEngine,
    writer: GroupCommit,
    sale_id: int,
    event: Checkout,
    failed: Failed | None,
) -> None:
    """Record a checkout that Redis did not decide, in whichever store takes it: the outbox
    (unless Redis is what failed; refused for the backlog, such rows still have room there,
    see sale.lua), else PostgreSQL directly. When neither can, the worker keeps the row and
    writes it once PostgreSQL is back."""
    if failed is not Failed.REDIS:
        try:
            if await engine.log(sale_id, ENCODER.encode(event)):
                return
        except NotsaleError:
            pass  # PostgreSQL may still take it
    row = attempt_row(sale_id, event)
    try:
        await writer.write_attempt(row)
    except NotsaleError:
        writer.write_later(row)
