"""The rows PostgreSQL keeps, and the batched writes that store them idempotently."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import asyncpg
import msgspec

from notsale.engine.sale import EVENT_DECODER, OutboxEvent

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
)
PURCHASE_COLUMNS = ("sale_id", "item_id", "user_id", "code", "purchased_at")

# Each pooled connection gets these staging tables once. A batch is COPYed into them, then
# moved with INSERT … ON CONFLICT DO NOTHING, so a row written twice (a replayed stream entry,
# a retried purchase) is harmless; ON COMMIT DELETE ROWS empties them at every commit.
STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS attempts_stage (LIKE checkout_attempts) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS purchases_stage (LIKE purchases) ON COMMIT DELETE ROWS;
"""
MOVE_ATTEMPTS = "INSERT INTO checkout_attempts SELECT * FROM attempts_stage ON CONFLICT DO NOTHING"
MOVE_PURCHASES = "INSERT INTO purchases SELECT * FROM purchases_stage ON CONFLICT DO NOTHING"
# Staged purchases whose item is already stored under another code: refused, never overwritten.
CLASHING_PURCHASES = """
SELECT s.code FROM purchases_stage s
JOIN purchases p ON p.sale_id = s.sale_id AND p.item_id = s.item_id
WHERE p.code <> s.code
"""


# A batch this large or larger goes by COPY; a smaller one as ONE statement (no explicit
# transaction: one round trip). Measured (bench/test_micro.py, test_write_attempts): it is
# about twice as fast for 1-100 rows, where COPY's five round trips dominate; COPY wins from
# about 1,000 rows on.
COPY_FROM_ROWS = 1000
# Both batches in one statement: PostgreSQL runs every data-modifying WITH part to
# completion. It returns the codes of the purchases it did not store.
INSERT_ROWS = f"""
WITH attempt AS (
  INSERT INTO checkout_attempts ({", ".join(ATTEMPT_COLUMNS)})
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                       $6::text[], $7::text[], $8::timestamptz[])
  ON CONFLICT DO NOTHING
), purchase AS (
  SELECT * FROM unnest($9::bigint[], $10::integer[], $11::text[], $12::text[],
                       $13::timestamptz[]) AS p ({", ".join(PURCHASE_COLUMNS)})
), stored AS (
  INSERT INTO purchases ({", ".join(PURCHASE_COLUMNS)}) SELECT * FROM purchase
  ON CONFLICT DO NOTHING RETURNING code
)
SELECT code FROM purchase WHERE code NOT IN (SELECT code FROM stored)
"""
# Of those, the ones no stored purchase has: their item is stored under another code. A
# statement of its own, so that it sees a row another writer committed while the insert
# waited on it (a flusher writing the same purchase from the outbox).
UNSTORED_CODES = """
SELECT code FROM unnest($1::text[]) AS c (code)
WHERE NOT EXISTS (SELECT 1 FROM purchases p WHERE p.code = c.code)
"""


class AttemptRow(msgspec.Struct, frozen=True):
    id: str
    sale_id: int
    user_id: str
    item_id: int | None
    code: str | None
    outcome: str
    raw_query: str | None
    attempted_at: dt.datetime


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


def attempt_row(row_id: str, sale_id: int, event: OutboxEvent) -> AttemptRow:
    query = None if event.query is None else storable(event.query)
    return AttemptRow(
        row_id,
        sale_id,
        storable(event.user),
        int_or_none(event.item),
        event.code or None,
        event.outcome,
        query,
        ms_to_datetime(int(event.time_ms)),
    )


# What rows_from_entry raises for an entry that is not one sale.lua or the API writes.
ENTRY_UNREADABLE = (KeyError, ValueError, OverflowError, OSError, msgspec.MsgspecError)


def rows_from_entry(
    sale_id: int, entry_id: str, payload: str | bytes
) -> tuple[AttemptRow | None, PurchaseRow | None]:
    """One outbox stream entry (see engine/sale.lua) as the row it logs."""
    event = EVENT_DECODER.decode(payload)
    if event.kind == "p":
        at = ms_to_datetime(int(event.time_ms))
        return None, PurchaseRow(sale_id, int(event.item), event.user, event.code, at)
    return attempt_row(f"{sale_id}:{entry_id}", sale_id, event), None


# PostgreSQL's answer when a row itself is wrong (bad value, violated constraint), as opposed
# to a failure of the moment: writing the same row again would fail again.
ROW_REFUSED = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError)
INSERT_REJECTS = """
INSERT INTO outbox_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""


async def write_rejects(conn: asyncpg.Connection, rejects: Sequence[RejectRow]) -> None:
    rows = [(r.stream, r.entry_id, storable(r.payload), storable(r.error)) for r in rejects]
    await conn.executemany(INSERT_REJECTS, rows)


async def prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(STAGING_DDL)


async def write_rows(
    conn: asyncpg.Connection,
    attempts: Sequence[AttemptRow],
    purchases: Sequence[PurchaseRow],
    timeout: float,
) -> set[str]:
    """Write both batches atomically; returns the codes of clashing purchases."""
    if len(attempts) + len(purchases) >= COPY_FROM_ROWS:
        return await copy_rows(conn, attempts, purchases, timeout)
    return await insert_rows(conn, attempts, purchases, timeout)


def columns(rows: Sequence[msgspec.Struct], width: int) -> list[list[object]]:
    """Rows as one list per column (the statement's arrays)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*(msgspec.structs.astuple(r) for r in rows), strict=True)]


async def insert_rows(
    conn: asyncpg.Connection,
    attempts: Sequence[AttemptRow],
    purchases: Sequence[PurchaseRow],
    timeout: float,
) -> set[str]:
    """write_rows as one statement (and a second one only when a purchase was not stored)."""
    arrays = [
        *columns(attempts, len(ATTEMPT_COLUMNS)),
        *columns(purchases, len(PURCHASE_COLUMNS)),
    ]
    skipped = [r["code"] for r in await conn.fetch(INSERT_ROWS, *arrays, timeout=timeout)]
    if not skipped:
        return set()
    return {r["code"] for r in await conn.fetch(UNSTORED_CODES, skipped, timeout=timeout)}


async def copy_rows(
    conn: asyncpg.Connection,
    attempts: Sequence[AttemptRow],
    purchases: Sequence[PurchaseRow],
    timeout: float,
) -> set[str]:
    """write_rows by COPY into staging tables, then INSERT … ON CONFLICT, in a transaction."""
    clashes: set[str] = set()
    async with conn.transaction():
        await _stage_and_move(
            conn, "attempts_stage", ATTEMPT_COLUMNS, attempts, MOVE_ATTEMPTS, timeout
        )
        if await _stage_and_move(
            conn, "purchases_stage", PURCHASE_COLUMNS, purchases, MOVE_PURCHASES, timeout
        ):
            clashes = {r["code"] for r in await conn.fetch(CLASHING_PURCHASES, timeout=timeout)}
    return clashes


async def _stage_and_move(
    conn: asyncpg.Connection,
    stage: str,
    columns: tuple[str, ...],
    rows: Sequence[msgspec.Struct],
    move: str,
    timeout: float,
) -> bool:
    """COPY rows into a staging table, then into their table; False if there were none."""
    if not rows:
        return False
    records = [msgspec.structs.astuple(r) for r in rows]
    await conn.copy_records_to_table(stage, records=records, columns=columns, timeout=timeout)
    await conn.execute(move, timeout=timeout)
    return True
