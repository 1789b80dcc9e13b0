"""The batched writes that store rows idempotently: one statement for a small batch, COPY
through staging tables for a large one; a batch with a bad row is written group by group."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from notsale import metrics
from notsale.errors import ErrorCode
from notsale.store.faults import is_row_fault
from notsale.store.rows import (
    ATTEMPT_COLUMNS,
    PURCHASE_COLUMNS,
    AttemptRow,
    PurchaseRow,
    Refused,
    RejectRow,
    merged,
    storable,
)

# Two rows of one request (its decision from the outbox, and the `unavailable` row written
# when its answer was 503) become one: outcome stays what the client was answered, and
# `decided` keeps what Redis decided. A row written twice (a replayed entry) changes nothing.
ON_ATTEMPT_CONFLICT = """
ON CONFLICT (id) DO UPDATE SET
  outcome = 'unavailable',
  decided = CASE WHEN checkout_attempts.outcome = 'unavailable'
                 THEN EXCLUDED.outcome ELSE checkout_attempts.outcome END,
  code = coalesce(checkout_attempts.code, EXCLUDED.code)
WHERE (checkout_attempts.outcome = 'unavailable') <> (EXCLUDED.outcome = 'unavailable')
"""
# A purchase is stored unless its item is stored under another code, or it would take its
# user past the limit: its user_seq is beyond it or already taken (see sql/003). The limit is
# the sale's own (sql/010), or $1 for a sale whose terms were never fixed (joined, not a
# subquery per row: that cost a purchase 0.24 ms, measured with bench.run --one-buyer).
PURCHASE_FILTER = """
LEFT JOIN sale_terms t USING (sale_id)
WHERE user_seq BETWEEN 1 AND coalesce(t.user_limit, $1)
ON CONFLICT DO NOTHING"""

# Each pooled connection gets these staging tables once. A batch is COPYed into them, then
# moved with INSERT … ON CONFLICT, so a row written twice (a replayed stream entry, a retried
# purchase) is harmless; ON COMMIT DELETE ROWS empties them at every commit.
STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS attempts_stage (LIKE checkout_attempts) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS purchases_stage (LIKE purchases) ON COMMIT DELETE ROWS;
"""
MOVE_ATTEMPTS = f"INSERT INTO checkout_attempts SELECT * FROM attempts_stage {ON_ATTEMPT_CONFLICT}"
MOVE_PURCHASES = "INSERT INTO purchases SELECT s.* FROM purchases_stage s" + PURCHASE_FILTER

# A batch this large or larger goes by COPY; a smaller one as ONE statement (no explicit
# transaction: one round trip). Measured (bench/test_micro.py, test_write_attempts): 2.4
# times as fast as COPY for one row, where COPY's five round trips dominate, as fast at 100
# rows; COPY wins from about 1,000 rows on.
COPY_FROM_ROWS = 1000
# Both batches in one statement: PostgreSQL runs every data-modifying WITH part to
# completion. It returns the codes of the purchases it did not store.
INSERT_ROWS = f"""
WITH attempt AS (
  INSERT INTO checkout_attempts ({", ".join(ATTEMPT_COLUMNS)})
  SELECT * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                       $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::cidr[])
  {ON_ATTEMPT_CONFLICT}
), purchase AS (
  SELECT * FROM unnest($12::bigint[], $13::integer[], $14::text[], $15::text[],
                       $16::timestamptz[], $17::integer[]) AS p ({", ".join(PURCHASE_COLUMNS)})
), stored AS (
  INSERT INTO purchases ({", ".join(PURCHASE_COLUMNS)}) SELECT p.* FROM purchase p
  {PURCHASE_FILTER} RETURNING code
)
SELECT code FROM purchase WHERE code NOT IN (SELECT code FROM stored)
"""
# Of those, the ones no stored purchase has, and why: their item is stored under another
# code, or their user is at the limit. A statement of its own, so that it sees a row another
# writer committed while the insert waited on it (a flusher writing the same purchase).
UNSTORED = """
SELECT c.code, EXISTS (SELECT 1 FROM purchases p
                       WHERE p.sale_id = c.sale_id AND p.item_id = c.item_id) AS item_taken
FROM unnest($1::text[], $2::bigint[], $3::integer[]) AS c (code, sale_id, item_id)
WHERE NOT EXISTS (SELECT 1 FROM purchases p WHERE p.code = c.code)
"""


INSERT_REJECTS = """
INSERT INTO outbox_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""


async def write_rejects(conn: asyncpg.Connection, rejects: Sequence[RejectRow]) -> None:
    rows = [(r.stream, r.entry_id, storable(r.payload), storable(r.error)) for r in rejects]
    await conn.executemany(INSERT_REJECTS, rows)
    metrics.REJECTS.inc(len(rows))


async def prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(STAGING_DDL)


async def write_rows(
    conn: asyncpg.Connection,
    attempts: Sequence[AttemptRow],
    purchases: Sequence[PurchaseRow],
    user_limit: int,
    timeout: float,
) -> Refused:
    """Write both batches atomically; returns the purchases refused and why."""
    attempts = merged(attempts)
    if len(attempts) + len(purchases) >= COPY_FROM_ROWS:
        await copy_rows(conn, attempts, purchases, user_limit, timeout)
        skipped = {p.code for p in purchases}  # checked below, all of them
    else:
        skipped = await insert_rows(conn, attempts, purchases, user_limit, timeout)
    metrics.ATTEMPT_ROWS.inc(len(attempts))
    metrics.PURCHASE_ROWS.inc(len(purchases) - len(skipped))
    if not skipped:
        return {}
    candidates = [p for p in purchases if p.code in skipped]
    arrays = [[p.code for p in candidates], [p.sale_id for p in candidates]]
    arrays.append([p.item_id for p in candidates])
    return {
        r["code"]: ErrorCode.ITEM_SOLD if r["item_taken"] else ErrorCode.USER_LIMIT
        for r in await conn.fetch(UNSTORED, *arrays, timeout=timeout)
    }


# The rows of one request, or of one outbox entry: (attempts, purchases).
Group = tuple[Sequence[AttemptRow], Sequence[PurchaseRow]]


async def write_groups(
    conn: asyncpg.Connection, groups: Sequence[Group], user_limit: int, timeout: float
) -> list[Refused | Exception]:
    """Write the groups as one batch; if a row of it is at fault, each group on its own, so
    that one bad row fails only its own group (its outcome is the exception). A failure of
    PostgreSQL itself is raised: nothing can be written now."""
    try:
        every_attempt = [a for group in groups for a in group[0]]
        every_purchase = [p for group in groups for p in group[1]]
        refused = await write_rows(conn, every_attempt, every_purchase, user_limit, timeout)
        return [refused] * len(groups)
    except Exception as exc:
        if not is_row_fault(exc, conn):
            raise
        if len(groups) == 1:
            return [exc]
    outcomes: list[Refused | Exception] = []
    for attempts, purchases in groups:
        try:
            outcomes.append(await write_rows(conn, attempts, purchases, user_limit, timeout))
        except Exception as exc:
            if not is_row_fault(exc, conn):
                raise
            outcomes.append(exc)
    return outcomes


def columns(rows: Sequence[msgspec.Struct], width: int) -> list[list[object]]:
    """Rows as one list per column (the statement's arrays)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*(msgspec.structs.astuple(r) for r in rows), strict=True)]


async def insert_rows(
    conn: asyncpg.Connection,
    attempts: Sequence[AttemptRow],
    purchases: Sequence[PurchaseRow],
    user_limit: int,
    timeout: float,
) -> set[str]:
    """write_rows as one statement; returns the codes of the purchases it did not store."""
    arrays = [
        *columns(attempts, len(ATTEMPT_COLUMNS)),
        *columns(purchases, len(PURCHASE_COLUMNS)),
    ]
    return {r["code"] for r in await conn.fetch(INSERT_ROWS, user_limit, *arrays, timeout=timeout)}


async def copy_rows(
    conn: asyncpg.Connection,
    attempts: Sequence[AttemptRow],
    purchases: Sequence[PurchaseRow],
    user_limit: int,
    timeout: float,
) -> None:
    """write_rows by COPY into staging tables, then INSERT … ON CONFLICT, in a transaction."""
    async with conn.transaction():
        if attempts:
            await _stage(conn, "attempts_stage", ATTEMPT_COLUMNS, attempts, timeout)
            await conn.execute(MOVE_ATTEMPTS, timeout=timeout)
        if purchases:
            await _stage(conn, "purchases_stage", PURCHASE_COLUMNS, purchases, timeout)
            await conn.execute(MOVE_PURCHASES, user_limit, timeout=timeout)


async def _stage(
    conn: asyncpg.Connection,
    stage: str,
    columns: tuple[str, ...],
    rows: Sequence[msgspec.Struct],
    timeout: float,
) -> None:
    records = [msgspec.structs.astuple(r) for r in rows]
    await conn.copy_records_to_table(stage, records=records, columns=columns, timeout=timeout)
