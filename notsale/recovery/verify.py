"""`notsale verify`: did a sale lose anything? One pass over PostgreSQL and Redis that
changes nothing: the purchases (no item twice, within the sale, nobody over the limit,
each issued by an attempt row), the outbox (drained, every entry set aside listed with its
reason), the attempt rows by outcome, and what `reconcile --check` compares."""

from __future__ import annotations

import asyncpg
import msgspec

from notsale.config import Settings
from notsale.connections import Client
from notsale.keys import sale_keys
from notsale.recovery.reconcile import Difference, Reconciler
from notsale.store.flusher import PURCHASE_REFUSED
from notsale.store.pool import QUERY_TIMEOUT_S
from notsale.store.terms import TermsBook

# Each lists the purchases of sale $1 that break a rule ($2: the rule's bound, if any).
SOLD_TWICE = (
    "SELECT item_id::text AS detail FROM purchases WHERE sale_id = $1"
    " GROUP BY item_id HAVING count(*) > 1"
)
OUTSIDE_SALE = (
    "SELECT item_id::text AS detail FROM purchases WHERE sale_id = $1"
    " AND NOT item_id BETWEEN 1 AND $2"
)
OVER_LIMIT = (
    "SELECT user_id || ': ' || count(*) AS detail FROM purchases WHERE sale_id = $1"
    " GROUP BY user_id HAVING count(*) > $2"
)
# A purchase whose code no stored attempt issued: the checkout's row was lost.
WITHOUT_ATTEMPT = (
    "SELECT 'item ' || item_id || ' (bought by ' || user_id || ')' AS detail"
    " FROM purchases p WHERE sale_id = $1 AND NOT EXISTS"
    " (SELECT 1 FROM checkout_attempts a WHERE a.code = p.code)"
)


class Reject(msgspec.Struct, frozen=True):
    entry_id: str
    error: str
    payload: str


class Report(msgspec.Struct, frozen=True):
    sale_id: int
    ok: bool
    purchases: int
    attempts: dict[str, int]  # rows by outcome
    failures: list[Difference]
    rejects: list[Reject]  # every entry set aside, the refused purchases included


async def verify(redis: Client, pool: asyncpg.Pool, settings: Settings, sale_id: int) -> Report:
    """What is wrong with a sale, if anything. A purchase PostgreSQL refused (after Redis
    lost writes: it was never answered 200) is listed among the rejects, not a failure."""
    book = TermsBook(pool, settings)
    terms = await book.of(sale_id, fix=False)
    rules = (
        ("item_sold_twice", SOLD_TWICE, ()),
        ("item_outside_sale", OUTSIDE_SALE, (terms.sale_size,)),
        ("user_over_limit", OVER_LIMIT, (terms.user_limit,)),
        ("purchase_without_attempt", WITHOUT_ATTEMPT, ()),
    )
    failures = [
        Difference(what, row["detail"])
        for what, query, bound in rules
        for row in await pool.fetch(query, sale_id, *bound, timeout=QUERY_TIMEOUT_S)
    ]
    failures += await Reconciler(redis, pool, settings, book).differences(sale_id)
    purchases = await pool.fetchval(
        "SELECT count(*) FROM purchases WHERE sale_id = $1", sale_id, timeout=QUERY_TIMEOUT_S
    )
    outcomes = await pool.fetch(
        "SELECT outcome, count(*) AS n FROM checkout_attempts WHERE sale_id = $1"
        " GROUP BY outcome ORDER BY outcome",
        sale_id,
        timeout=QUERY_TIMEOUT_S,
    )
    rejects = [
        Reject(r["entry_id"], r["error"], r["payload"])
        for r in await pool.fetch(
            "SELECT entry_id, error, payload FROM outbox_rejects WHERE stream = $1"
            " ORDER BY rejected_at, entry_id",
            sale_keys(sale_id).outbox,
            timeout=QUERY_TIMEOUT_S,
        )
    ]
    return Report(
        sale_id,
        not failures,
        int(purchases),
        {r["outcome"]: int(r["n"]) for r in outcomes},
        failures,
        rejects,
    )


def readable(report: Report) -> str:
    """The report as lines for a terminal."""
    sale = f"sale {report.sale_id}"
    lines = [f"{sale}: {report.purchases} purchases"]
    lines += [f"{sale}: {n} attempts {outcome}" for outcome, n in report.attempts.items()]
    lines += [f"{sale}: FAILED {f.what}: {f.detail}" for f in report.failures]
    for reject in report.rejects:
        kind = "refused purchase" if reject.error.startswith(PURCHASE_REFUSED) else "reject"
        lines.append(f"{sale}: {kind} {reject.entry_id}: {reject.error}: {reject.payload}")
    lines.append(f"{sale}: {'nothing lost' if report.ok else 'FAILED'}")
    return "\n".join(lines)
