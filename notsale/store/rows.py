"""The rows PostgreSQL keeps, and how an outbox entry becomes its row."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import msgspec

from notsale import outbox
from notsale.errors import ErrorCode

INT64_MAX = 2**63 - 1
ASCII_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")

ATTEMPT_COLUMNS = (
    "id",
    "sale_id",
    "user_id",
    "item_id",
    "code",
    "outcome",
    "raw_query",
    "attempted_at",
    "decided",
    "network",
)
PURCHASE_COLUMNS = ("sale_id", "item_id", "user_id", "code", "purchased_at", "user_seq")


class AttemptRow(msgspec.Struct, frozen=True):
    id: str
    sale_id: int
    user_id: str
    item_id: int | None
    code: str | None
    outcome: str
    raw_query: str | None
    attempted_at: dt.datetime
    decided: str | None = None
    network: str | None = None


class RejectRow(msgspec.Struct, frozen=True):
    """An outbox entry that could not be stored as its row (see sql/002_outbox_rejects.sql)."""

    stream: str
    entry_id: str
    payload: str
    error: str


class PurchaseRow(msgspec.Struct, frozen=True):
    sale_id: int
    item_id: int
    user_id: str
    code: str
    purchased_at: dt.datetime
    user_seq: int


# The codes of purchases that were not stored, with the refusal each gets.
Refused = dict[str, ErrorCode]


def ms_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def int_or_none(raw: str) -> int | None:
    """The integer a raw id spells in ASCII digits, as the API reads ids (not int()'s
    underscores, spaces or other scripts' digits), if PostgreSQL's bigint can hold it."""
    if not ASCII_INTEGER.fullmatch(raw):
        return None
    value = int(raw)
    return value if -INT64_MAX - 1 <= value <= INT64_MAX else None


def storable(raw: str) -> str:
    """Text PostgreSQL can keep: it refuses NUL and invalid UTF-8 (lone surrogates), and one
    such value would fail its whole COPY batch again and again."""
    return raw.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def merged(attempts: Iterable[AttemptRow]) -> list[AttemptRow]:
    """One row per id, as ON_ATTEMPT_CONFLICT would leave them (one statement may not
    update a row twice)."""
    by_id: dict[str, AttemptRow] = {}
    for row in attempts:
        first = by_id.setdefault(row.id, row)
        if (first.outcome == "unavailable") != (row.outcome == "unavailable"):
            decided = row if first.outcome == "unavailable" else first
            by_id[row.id] = msgspec.structs.replace(
                first,
                outcome="unavailable",
                decided=decided.outcome,
                code=first.code or row.code,
            )
    return list(by_id.values())


# What `from_entry` raises for an entry that is not one this module or sale.lua wrote.
UNREADABLE = (KeyError, ValueError, OverflowError, OSError, msgspec.MsgspecError)


def attempt_row(sale_id: int, event: outbox.Checkout, entry_id: str = "") -> AttemptRow:
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
        network=event.network,
    )


def from_entry(
    sale_id: int, entry_id: str, payload: str | bytes
) -> tuple[AttemptRow | None, PurchaseRow | None]:
    """One stream entry's payload (its FIELD) as the row it logs."""
    event = outbox.DECODER.decode(payload)
    if isinstance(event, outbox.Purchase):
        at = ms_to_datetime(int(event.time_ms))
        return None, PurchaseRow(sale_id, int(event.item), event.user, event.code, at, event.seq)
    return attempt_row(sale_id, event, entry_id), None
