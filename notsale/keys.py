"""Redis key names: one sale's keys share the hash tag {sale:<id>}, so they share a slot."""

from __future__ import annotations

from typing import NamedTuple

# The sale ids whose outbox stream exists (may hold entries PostgreSQL lacks), whatever the
# sale's age: the flushers read every one of them, and drop a sale once its stream is gone.
OUTBOX_REGISTRY = "notsale:outboxes"


class SaleKeys(NamedTuple):
    """The keys of one sale, in the KEYS order of sale.lua and reconcile.lua (their headers
    say what each holds; the last is reconcile.lua's alone)."""

    hold: str
    hexp: str
    sold: str
    code: str
    users: str
    outbox: str
    ready: str
    lease: str


def sale_keys(sale_id: int) -> SaleKeys:
    return SaleKeys(*(f"{{sale:{sale_id}}}:{name}" for name in SaleKeys._fields))


def health_key(sale_id: int) -> str:
    """Written by /health: in the sale's slot, so that it probes the master deciding it."""
    return f"{{sale:{sale_id}}}:health"


# A user's live holds across every open sale: a sorted set of `sale:item` scored by the
# hold's expiry (ms). In no sale's slot: a user's holds span sales.
HOLDS_PREFIX = "notsale:holds:"


def holds_key(user_id: str) -> str:
    return HOLDS_PREFIX + user_id


class QueueKeys(NamedTuple):
    """The keys of one sale's waiting room, in the sale's slot, in the KEYS order of
    queue.lua (its header says what each holds); `active` is also sale.lua's last key."""

    queue: str
    tickets: str
    queuers: str
    order: str
    prequeue: str
    active: str
    since: str


def queue_keys(sale_id: int) -> QueueKeys:
    return QueueKeys(*(f"{{sale:{sale_id}}}:q:{name}" for name in QueueKeys._fields))
