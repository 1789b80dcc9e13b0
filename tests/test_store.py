"""PostgreSQL side: migrations, idempotent batched writes, the outbox flusher."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

import asyncpg
import msgspec
import pytest

from notsale import outbox
from notsale.__main__ import main
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.errors import ErrorCode
from notsale.recovery.reconcile import Reconciler
from notsale.store import batches
from notsale.store.flusher import Flusher
from notsale.store.migrations import migrate, migration_files, with_path
from notsale.store.rows import AttemptRow, PurchaseRow
from notsale.store.writer import KEEP_CONNECTION_S, GroupCommit
from tests.started import free_port
from tests.support import BASE, drop_database, open_engine

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


async def test_concurrent_migrations_create_the_database_and_apply_each_file_once() -> None:
    name = f"notsale_migrate_{secrets.token_hex(4)}"
    try:
        url = with_path(BASE.database_url, "/" + name)
        files = len(migration_files())
        results = await asyncio.gather(*(migrate(url) for _ in range(3)))
        assert sorted(len(r) for r in results) == [0, 0, files]
        assert await migrate(url) == []
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == files
            assert await conn.fetchval("SELECT to_regclass('purchases') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await drop_database(name)


async def test_a_deployment_upgraded_first_ran_with_its_oldest_row() -> None:
    """sql/005 on a database that already holds sales: they ran here (their purchases stay
    readable), so the deployment's first run is its oldest row, not the upgrade."""
    name = f"notsale_upgrade_{secrets.token_hex(4)}"
    url = with_path(BASE.database_url, "/" + name)
    try:
        await migrate(with_path(BASE.database_url, "/" + name))  # every file, then undo 005
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "DROP TABLE deployment; DELETE FROM schema_migrations WHERE version = 5"
            )
            await conn.execute(
                "INSERT INTO purchases VALUES ($1, $2, $3, $4, $5, $6)",
                *msgspec.structs.astuple(PurchaseRow(7, 1, "u", "c0de", NOW, 1)),
            )
            assert await migrate(url) == ["005_deployment.sql"]
            assert await conn.fetchval("SELECT first_at FROM deployment") == NOW
        finally:
            await conn.close()
    finally:
        await drop_database(name)


def test_migrate_against_an_unreachable_server_exits_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTSALE_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(SystemExit) as exited:
        main(["migrate"])
    assert str(exited.value).startswith("notsale: cannot migrate the database: ")
    assert "\n" not in str(exited.value)


LIMIT = 3


@pytest.fixture(params=[False, True], ids=["statement", "copy"])
def write(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """batches.write_rows, by one INSERT statement or (every batch made large) by COPY."""
    if request.param:
        monkeypatch.setattr(batches, "COPY_FROM_ROWS", 1)

    async def write(conn: asyncpg.Connection, attempts: Any, purchases: Any) -> Any:
        return await batches.write_rows(conn, attempts, purchases, LIMIT, 5)

    return write


async def test_writing_the_same_rows_twice_is_harmless(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection, write: Any
) -> None:
    attempt = AttemptRow("7:1-0", 7, "u", 3, "c0de", "ok", None, NOW)
    purchase = PurchaseRow(7, 3, "u", "c0de", NOW, 1)
    async with pool.acquire() as conn:
        assert await write(conn, [attempt, attempt], [purchase, purchase]) == {}
        assert await write(conn, [attempt], [purchase]) == {}
        # The same item under another code is refused and reported, never overwritten,
        # whether it was stored before or comes in the same batch.
        clash = PurchaseRow(7, 3, "v", "other", NOW, 1)
        assert await write(conn, [], [clash]) == {"other": ErrorCode.ITEM_SOLD}
        first, second = (
            PurchaseRow(7, 4, "u", "c1", NOW, 2),
            PurchaseRow(7, 4, "v", "c2", NOW, 1),
        )
        assert await write(conn, [], [first, second]) == {"c2": ErrorCode.ITEM_SOLD}
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 1
    assert await db.fetch("SELECT user_id, code FROM purchases ORDER BY item_id") == [
        ("u", "c0de"),
        ("u", "c1"),
    ]


async def test_postgresql_holds_each_purchase_to_its_sales_own_limit(
    pool: asyncpg.Pool, db: asyncpg.Connection, write: Any
) -> None:
    """A sale whose terms were fixed (sql/010) is checked against its own limit, whatever the
    limit given now (LIMIT, 3); a sale without fixed terms against the one given."""
    await db.execute(
        "INSERT INTO sale_terms (sale_id, sale_size, user_limit, hold_seconds, sale_open_seconds)"
        " VALUES (7, 100, 5, 60, 3600), (8, 100, 2, 60, 3600)"
    )
    rows = [PurchaseRow(sale, item, "u", f"c{sale}{item}", NOW, item) for sale in (7, 8, 9)
            for item in (1, 2, 3, 4, 5)]  # fmt: skip
    async with pool.acquire() as conn:
        refused = await write(conn, [], rows)
    assert sorted(refused) == ["c83", "c84", "c85", "c94", "c95"]
    stored = await db.fetch("SELECT sale_id, count(*) FROM purchases GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in stored] == [(7, 5), (8, 2), (9, 3)]


async def test_the_group_commit_replaces_a_connection_postgresql_dropped(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """The writer keeps its connection from one commit to the next: one that PostgreSQL
    closed meanwhile is replaced, and the next rows are written, not refused."""
    writer = GroupCommit(pool, settings.user_limit)
    writer.start()
    try:
        await writer.write_attempt(AttemptRow("7:1-1", 7, "u", 1, None, "ok", None, NOW))
        dropped = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert dropped == 1
        await asyncio.sleep(0.1)  # the driver notices the closed connection
        await writer.write_purchase(PurchaseRow(7, 2, "u", "c1", NOW, 1))
        await writer.write_attempt(AttemptRow("7:1-2", 7, "u", 2, None, "ok", None, NOW))
        await asyncio.sleep(KEEP_CONNECTION_S + 0.5)  # idle: the pool gets it back
        assert pool.get_idle_size() == 1
    finally:
        await writer.close()
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 2
    assert await db.fetchval("SELECT count(*) FROM purchases") == 1


async def test_a_write_on_a_connection_postgresql_dropped_is_not_the_rows_fault(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A call on a connection already lost fails with the driver's InterfaceError, the error
    it also gives arguments it cannot take: it must not set the rows aside as faulty (the
    flusher would move their entries to outbox_rejects), but fail the write, to be retried."""
    attempts = [AttemptRow(f"7:1-{n}", 7, "u", n, None, "ok", None, NOW) for n in (1, 2)]
    conn = await asyncpg.connect(settings.database_url)
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _: lost.set())
    try:
        await db.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        async with asyncio.timeout(5):
            await lost.wait()  # the driver noticed the closed socket
        for groups in ([(attempts, [])], [([a], []) for a in attempts]):
            with pytest.raises(asyncpg.exceptions.InterfaceError):
                await batches.write_groups(conn, groups, LIMIT, 5.0)
    finally:
        await conn.close()


async def test_postgres_refuses_a_purchase_past_the_user_limit_whatever_redis_counted(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection, write: Any
) -> None:
    async with pool.acquire() as conn:
        bought = [PurchaseRow(7, n, "u", f"c{n}", NOW, n) for n in range(1, LIMIT + 1)]
        assert await write(conn, [], bought) == {}
        # Redis lost the last purchase and counted the user one short: seq 3 again.
        again = PurchaseRow(7, 9, "u", "lost", NOW, LIMIT)
        past = PurchaseRow(7, 10, "u", "past", NOW, LIMIT + 1)
        other_sale = PurchaseRow(8, 9, "u", "next", NOW, LIMIT)
        refused = await write(conn, [], [again, past, other_sale])
        assert refused == {"lost": ErrorCode.USER_LIMIT, "past": ErrorCode.USER_LIMIT}
    assert await db.fetchval("SELECT count(*) FROM purchases WHERE user_id = 'u'") == LIMIT + 1


async def test_a_503_row_and_the_decision_of_the_same_request_become_one_row(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection, write: Any
) -> None:
    """A checkout answered 503 whose script ran after all: its fallback row (outcome
    unavailable) and its outbox entry (the decision) meet, in either order or one batch."""
    unknown = AttemptRow("r1", 7, "u", 3, None, "unavailable", None, NOW)
    decided = AttemptRow("r1", 7, "u", 3, "c0de", "ok", None, NOW)
    never = AttemptRow("r2", 7, "u", 4, None, "unavailable", None, NOW)
    async with pool.acquire() as conn:
        for batch in ([unknown], [decided], [decided, unknown], [never], [never]):
            await write(conn, batch, [])
    found = await db.fetch("SELECT id, outcome, decided, code FROM checkout_attempts ORDER BY id")
    assert [tuple(r) for r in found] == [
        ("r1", "unavailable", "ok", "c0de"),
        ("r2", "unavailable", None, None),
    ]


async def test_a_purchase_written_meanwhile_by_another_writer_is_no_clash(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection, write: Any
) -> None:
    """The outbox flusher may store a purchase while its worker's group commit writes it: the
    commit waits for the other transaction, then must see that row as the same purchase."""
    purchase = PurchaseRow(7, 3, "u", "c0de", NOW, 1)
    other = await asyncpg.connect(settings.database_url)
    try:
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute(
            "INSERT INTO purchases VALUES ($1, $2, $3, $4, $5, $6)",
            *msgspec.structs.astuple(purchase),
        )
        async with pool.acquire() as conn:
            writing = asyncio.create_task(write(conn, [], [purchase]))
            await asyncio.sleep(0.3)
            assert not writing.done()  # waiting on the other writer's row
            await other_tx.commit()
            assert await writing == {}
    finally:
        await other.close()
    assert await db.fetchval("SELECT count(*) FROM purchases") == 1


async def test_flusher_writes_logged_decisions_then_acks_and_deletes_them(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    async with open_engine(settings) as engine:
        redis = engine.redis
        decision = await engine.checkout("zoe", 5)
        await engine.checkout("yan", 5)
        await engine.purchase(decision.sale_id, decision.code)
        flusher = Flusher(redis, pool, settings)
        written = 0
        while (n := await flusher.flush_once(block_ms=10)) or not written:
            written += n
        assert written == 3
        key = outbox.stream(decision.sale_id)
        assert await redis.xlen(key) == 0
        pending = await redis.xpending(key, outbox.GROUP)
        assert pending.pending == 0
    outcomes = await db.fetch("SELECT user_id, outcome FROM checkout_attempts ORDER BY id")
    assert sorted(tuple(r) for r in outcomes) == [("yan", "item_held"), ("zoe", "ok")]
    assert await db.fetchval("SELECT user_id FROM purchases") == "zoe"


async def test_entries_that_cannot_be_rows_are_kept_aside_and_never_block_the_outbox(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    made = outbox.Checkout("r1", "u", "5", "item_sold", "", "1795482486613", 0)
    bad = [
        {outbox.FIELD: "not json"},
        {"x": "no entry field"},
        outbox.entry(msgspec.structs.replace(made, outcome="not_an_outcome")),  # refused
        outbox.entry(msgspec.structs.replace(made, request="r2", time_ms="9" * 20)),  # no time
        {outbox.FIELD: '["c","u","5","item_sold","","1795482486613"]'},  # an older format
    ]
    async with open_engine(settings) as engine:
        redis = engine.redis
        decision = await engine.checkout("zoe", 5)
        key = outbox.stream(decision.sale_id)
        bad_ids = [await redis.xadd(key, fields) for fields in bad]
        await engine.checkout("yan", 6)
        flusher = Flusher(redis, pool, settings)
        assert await flusher.flush_once(block_ms=10) == 7  # one batch: all seven acknowledged
        assert await redis.xlen(key) == 0
        found = await Reconciler(redis, pool, settings).differences(decision.sale_id)
        assert [d.detail for d in found if d.what == "rejected"] == [
            "5 outbox entries kept in outbox_rejects"
        ]
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 2
    rejects = await db.fetch("SELECT stream, entry_id, payload FROM outbox_rejects")
    assert sorted(r["entry_id"] for r in rejects) == sorted(bad_ids)
    assert {r["stream"] for r in rejects} == {key}
    assert {r["payload"] for r in rejects} == {msgspec.json.encode(f).decode() for f in bad}


async def test_flushers_of_several_workers_share_a_new_stream(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    async with open_engine(settings) as engine:
        redis = engine.redis
        flushers = [Flusher(redis, pool, settings) for _ in range(3)]
        for n, flusher in enumerate(flushers):
            flusher.consumer += f"-{n}"  # one process here, several workers in production
        # All of them meet the new sale's stream at once; each must keep flushing.
        counts = await asyncio.gather(*(f.flush_once(block_ms=10) for f in flushers))
        assert counts == [0, 0, 0]
        for item in range(1, 7):
            await engine.checkout(f"u{item}", item)
        written = await asyncio.gather(*(f.flush_once(block_ms=10) for f in flushers))
        assert sum(written) == 6
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 6


async def test_entries_left_pending_by_a_dead_flusher_are_claimed_and_written(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    async with open_engine(settings) as engine:
        redis = engine.redis
        survivor = Flusher(redis, pool, settings, claim_idle_ms=200, claim_every_s=0)
        await survivor.flush_once(block_ms=1)  # creates the group
        for item in (1, 2, 3):
            await engine.checkout(f"u{item}", item)
        key = outbox.stream(current_sale(settings.sale_seconds))
        # A worker reads the entries, then dies before writing and acknowledging them.
        await redis.xreadgroup(outbox.GROUP, "dead", streams={key: ">"}, count=10)
        assert await survivor.flush_once(block_ms=1) == 0  # not idle long enough yet
        await asyncio.sleep(0.3)
        assert await survivor.flush_once(block_ms=1) == 3
        assert await redis.xlen(key) == 0
    assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == 3
