"""`notsale verify`: a sale checked end to end, exit 1 on anything lost (docs/operating.md)."""

from __future__ import annotations

import json
import os

import asyncpg
import msgspec

from notsale.clock import current_sale
from notsale.config import Settings
from notsale.keys import sale_keys
from tests.support import (
    Client,
    attempt_outcomes,
    checkout,
    drop_database,
    free_port,
    notsale_cli,
    purchase,
)


async def test_verify_passes_a_whole_sale_and_names_what_was_lost(
    client: Client, settings: Settings, db: asyncpg.Connection
) -> None:
    code = (await checkout(client, "ann", 1)).json()["code"]
    assert (await checkout(client, "ann", 2)).status_code == 200
    assert (await checkout(client, "bob", 1)).status_code == 409
    assert (await purchase(client, code)).status_code == 200
    await attempt_outcomes(db, 3)
    sale = current_sale(settings.sale_seconds)

    clean = notsale_cli(settings, "verify", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert (report["sale_id"], report["ok"], report["purchases"]) == (sale, True, 1)
    assert report["attempts"] == {"item_held": 1, "ok": 2}
    assert (report["failures"], report["rejects"]) == ([], [])
    assert "nothing lost" in notsale_cli(settings, "verify").stdout

    # The row of the checkout that issued the bought code is lost, and an entry was set aside.
    await db.execute("DELETE FROM checkout_attempts WHERE code = $1", code)
    await db.execute(
        "INSERT INTO outbox_rejects (stream, entry_id, payload, error) VALUES ($1, $2, $3, $4)",
        sale_keys(sale).outbox,
        "1-0",
        '{"e": "not json"}',
        "does not decode",
    )
    broken = notsale_cli(settings, "verify", "--sale-id", str(sale))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAILED purchase_without_attempt: item 1 (bought by ann)" in broken.stdout
    assert "FAILED rejected: 1 outbox entries kept in outbox_rejects" in broken.stdout
    assert "reject 1-0: does not decode" in broken.stdout


async def test_the_commands_say_in_one_line_which_store_failed(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Run before any migration, or with a store out of reach: one line, exit status 1,
    never a traceback."""
    empty = f"notsale_empty_{os.getpid()}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{empty}"')
    finally:
        await admin.close()
    try:
        unmigrated = msgspec.structs.replace(
            settings, database_url=settings.database_url.rsplit("/", 1)[0] + "/" + empty
        )
        redis_away = msgspec.structs.replace(
            settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"
        )
        pg_away = msgspec.structs.replace(
            settings, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"
        )
        for broken, says in (
            (unmigrated, "run `notsale migrate`"),
            (redis_away, "notsale: Redis failed"),
            (pg_away, "notsale: PostgreSQL failed"),
        ):
            for command in (["verify"], ["audit"], ["reconcile", "--check"]):
                done = notsale_cli(broken, *command)
                assert done.returncode == 1, (command, done.stdout, done.stderr)
                assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
                assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    finally:
        await drop_database(empty)
