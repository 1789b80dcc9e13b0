"""The JSON bodies of the contract (docs/api.md), one Struct each."""

from __future__ import annotations

import msgspec


class Body(msgspec.Struct, frozen=True):
    """Base of every response body. Frozen: a body is built once and only serialized.
    No omit_defaults: the contract lists every field of every body, so all are always sent."""


class ErrorBody(Body, frozen=True):
    error: str
    detail: str


class CheckoutBody(Body, frozen=True):
    code: str
    sale_id: int
    item_id: int
    name: str
    image_url: str
    expires_at: str


class PurchaseBody(Body, frozen=True):
    sale_id: int
    item_id: int
    user_id: str
    name: str
    purchased_at: str


class SaleBody(Body, frozen=True):
    sale_id: int
    starts_at: str
    ends_at: str
    size: int
    sold: int
    held: int
    remaining: int
    user_limit: int


class OpenSaleBody(SaleBody, frozen=True):
    closes_at: str  # unless it sells out before


class SalesBody(Body, frozen=True):
    sales: list[OpenSaleBody]


class ItemBody(Body, frozen=True):
    sale_id: int
    item_id: int
    name: str
    image_url: str
    status: str


class ItemsBody(Body, frozen=True):
    sale_id: int
    items: list[ItemBody]


class PurchasesBody(Body, frozen=True):
    sale_id: int
    user_id: str
    purchases: list[PurchaseBody]


class HealthBody(Body, frozen=True):
    status: str
    redis: str
    postgres: str


class QueueBody(Body, frozen=True):
    ticket: str
    ticket_id: str
    sale_id: int
    user_id: str
    position: int | None  # None while pre-queued
    admitted: bool
    admission: str | None
    admission_expires_at: str | None
    poll_after_ms: int
    eta_seconds: int | None
    remaining: int


class FairnessBody(Body, frozen=True):
    sale_id: int
    prequeue_opens_at: str
    starts_at: str
    seed_sha256: str
    seed: str | None  # published at the start
    prequeued: int | None


class PrequeuedBody(Body, frozen=True):
    ticket_id: str
    position: int


class PrequeueBody(Body, frozen=True):
    tickets: list[PrequeuedBody]
