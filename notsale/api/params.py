"""Reading the query and path parameters of the contract, strictly, into our error codes."""

from __future__ import annotations

import re

from litestar.datastructures import MultiDict

from notsale.errors import ErrorCode, NotsaleError
from notsale.identity import USER_ID

# Canonical decimal: no sign, no leading zero (so every id has one spelling, and one URL),
# up to 2^63 - 1; longer digit strings are refused unparsed.
INTEGER = re.compile(r"0|[1-9][0-9]{0,18}")
INT64_MAX = 2**63 - 1
# Items in one page of GET /sales/{sale_id}/items at most.
PAGE_MAX = 100
# Tickets in one page of GET /sales/{sale_id}/fairness/prequeue at most.
PREQUEUE_PAGE_MAX = 1000


def invalid(detail: str) -> NotsaleError:
    return NotsaleError(ErrorCode.INVALID_REQUEST, detail)


def single(query: MultiDict[str], name: str) -> str:
    values = query.getall(name, [])
    if not values:
        raise invalid(f"The query parameter `{name}` is missing.")
    if len(values) > 1:
        raise invalid(f"The query parameter `{name}` is given more than once.")
    return values[0]


def user_id(raw: str) -> str:
    if not USER_ID.fullmatch(raw):
        raise invalid("`user_id` must be 1 to 64 characters of A-Z a-z 0-9 _ . : @ -.")
    return raw


def integer(raw: str, name: str) -> int:
    if INTEGER.fullmatch(raw):
        value = int(raw)
        if value <= INT64_MAX:
            return value
    raise invalid(
        f"`{name}` must be an integer in canonical decimal (no sign, no leading zero),"
        " at most 2^63 - 1."
    )


def item_id(raw: str, sale_size: int, name: str = "id") -> int:
    return in_sale(integer(raw, name), sale_size)


def in_sale(item: int, sale_size: int) -> int:
    if not 1 <= item <= sale_size:
        raise NotsaleError(ErrorCode.ITEM_NOT_FOUND, f"Items are numbered 1 to {sale_size}.")
    return item
