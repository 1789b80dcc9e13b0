"""Every error code of the HTTP contract, as an exception with its status."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    ITEM_NOT_FOUND = "item_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CODE_NOT_FOUND = "code_not_found"
    ITEM_SOLD = "item_sold"
    ITEM_HELD = "item_held"
    CODE_EXPIRED = "code_expired"
    USER_LIMIT = "user_limit"
    COOLDOWN = "cooldown"
    HOLDS_MAX = "holds_max"
    SALE_CLOSED = "sale_closed"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    ADMISSION_REQUIRED = "admission_required"
    ADMISSION_INVALID = "admission_invalid"
    TICKET_INVALID = "ticket_invalid"
    TOO_EARLY = "too_early"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.ITEM_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CODE_NOT_FOUND: 404,
    ErrorCode.ITEM_SOLD: 409,
    ErrorCode.ITEM_HELD: 409,
    ErrorCode.CODE_EXPIRED: 410,
    ErrorCode.USER_LIMIT: 429,
    ErrorCode.COOLDOWN: 429,
    ErrorCode.HOLDS_MAX: 429,
    ErrorCode.SALE_CLOSED: 410,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.ADMISSION_REQUIRED: 403,
    ErrorCode.ADMISSION_INVALID: 403,
    ErrorCode.TICKET_INVALID: 403,
    ErrorCode.TOO_EARLY: 429,
}

DEFAULT_DETAIL: dict[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: "The request is missing a parameter or has a malformed one.",
    ErrorCode.ITEM_NOT_FOUND: "No such item in this sale, or the sale has not started.",
    ErrorCode.NOT_FOUND: "No such route.",
    ErrorCode.METHOD_NOT_ALLOWED: "This route does not take that method.",
    ErrorCode.CODE_NOT_FOUND: "This purchase code is unknown.",
    ErrorCode.ITEM_SOLD: "This item is already sold.",
    ErrorCode.ITEM_HELD: "Another user holds this item right now; try again later.",
    ErrorCode.CODE_EXPIRED: "The hold behind this code expired or its sale closed.",
    ErrorCode.USER_LIMIT: "You already hold or bought as many items as one user may in this sale.",
    ErrorCode.SALE_CLOSED: "That sale has closed: it sold out, or its open time is over.",
    ErrorCode.COOLDOWN: (
        "You let your hold on this item expire a moment ago; you may hold it again after"
        " Retry-After seconds."
    ),
    ErrorCode.HOLDS_MAX: (
        "You hold as many items as one user may across all open sales; you may hold another"
        " after Retry-After seconds, or once you buy one."
    ),
    ErrorCode.UNAVAILABLE: (
        "A backing store cannot be reached or refused to write; the outcome is unknown. Retry:"
        " a purchase with the same code is safe to retry, and a checkout retried gets the same"
        " code back if its hold was made."
    ),
    ErrorCode.UNAUTHENTICATED: "This route needs a valid bearer token (Authorization: Bearer …).",
    ErrorCode.FORBIDDEN: "The user_id is not the bearer token's subject.",
    ErrorCode.ADMISSION_REQUIRED: (
        "This sale admits buyers from its queue: join it (POST /sales/{sale_id}/queue) and"
        " check out with the admission it gives you."
    ),
    ErrorCode.ADMISSION_INVALID: (
        "This admission is forged, expired, or for another sale or user; poll your ticket."
    ),
    ErrorCode.TICKET_INVALID: "No such ticket in this sale's queue.",
    ErrorCode.TOO_EARLY: "Polled sooner than poll_after_ms; ask again after Retry-After seconds.",
}


# When each code is answered, as docs/api.md's error table says (scripts/api-tables writes
# it from STATUS, DEFAULT_DETAIL and this; within a status, in this order).
WHEN: dict[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: (
        "a parameter is missing, repeated, malformed, too long, or not an integer in canonical"
        " decimal up to 2^63 - 1"
    ),
    ErrorCode.UNAUTHENTICATED: (
        "`/metrics` without the bearer token `NOTSALE_ADMIN_TOKEN` names; with identity `jwt`,"
        " a checkout, a queue join or a user's purchases without a valid bearer token"
    ),
    ErrorCode.FORBIDDEN: "identity `jwt`: a `user_id` that is not the token's `sub`",
    ErrorCode.ADMISSION_REQUIRED: "queue mode: a checkout without an admission",
    ErrorCode.ADMISSION_INVALID: (
        "queue mode: an admission that is forged, expired, or for another sale or user"
    ),
    ErrorCode.TICKET_INVALID: "a queue poll with an unknown or forged ticket",
    ErrorCode.ITEM_NOT_FOUND: (
        "an `id` outside `1..SALE_SIZE`, or a `sale_id` of a sale that has not started or is"
        " before this deployment's first sale"
    ),
    ErrorCode.NOT_FOUND: "no such route; a sale's queue that has not opened yet",
    ErrorCode.CODE_NOT_FOUND: "the purchase code is unknown",
    ErrorCode.METHOD_NOT_ALLOWED: "the route exists, the method does not",
    ErrorCode.ITEM_SOLD: (
        "checkout of an item already sold (on a purchase: only after Redis lost writes)"
    ),
    ErrorCode.ITEM_HELD: "checkout of an item another user holds",
    ErrorCode.CODE_EXPIRED: "purchase after the hold expired or its sale closed",
    ErrorCode.SALE_CLOSED: (
        "checkout naming a sale that has closed (sold out, or past"
        " `NOTSALE_SALE_OPEN_SECONDS`); a new join of its queue"
    ),
    ErrorCode.TOO_EARLY: (
        "a queue join or poll sooner than `poll_after_ms` after the previous one (with"
        " `Retry-After`)"
    ),
    ErrorCode.COOLDOWN: (
        "checkout of an item whose hold this user let expire less than"
        " `NOTSALE_COOLDOWN_SECONDS` ago (with `Retry-After`); `user_limit` takes precedence"
    ),
    ErrorCode.HOLDS_MAX: (
        "checkout of a new hold by a user who holds `NOTSALE_HOLDS_MAX` items across all open"
        " sales (with `Retry-After`); `user_limit` and `cooldown` take precedence"
    ),
    ErrorCode.USER_LIMIT: (
        "the user's bought + held items in this sale reach the limit (on a purchase: only"
        " after Redis lost writes)"
    ),
    ErrorCode.UNAVAILABLE: "Redis or PostgreSQL cannot be reached, timed out, or refused to write",
}


class Failed(StrEnum):
    """What an `unavailable` answer is about."""

    REDIS = "redis"
    POSTGRES = "postgres"
    BACKLOG = "backlog"  # the outbox holds too much that PostgreSQL has not taken yet


class NotsaleError(Exception):
    """An answer of the contract that is not a success; the app maps it to JSON."""

    def __init__(
        self, code: ErrorCode, detail: str | None = None, retry_after_s: int | None = None
    ) -> None:
        self.code = code
        self.status = STATUS[code]
        self.detail = detail or DEFAULT_DETAIL[code]
        self.retry_after_s = retry_after_s  # sent as Retry-After
        super().__init__(f"{code}: {self.detail}")


class Unavailable(NotsaleError):
    """503: a store failed, refused or did not answer in time; `failed` says which."""

    def __init__(self, failed: Failed, detail: str | None = None) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, detail)
        self.failed = failed
