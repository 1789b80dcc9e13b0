"""Purchase codes: 128 random bits that also name the sale they belong to."""

from __future__ import annotations

import re
import secrets

# 16 random bytes as unpadded URL-safe base64 are exactly 22 characters; the sale id follows
# in decimal, so a purchase (which carries only the code) knows which sale's keys to look in.
RANDOM_BYTES = 16
RANDOM_CHARS = 22
CODE_MAX_CHARS = 64
CODE_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{CODE_MAX_CHARS}}}")


def new_code(sale_id: int) -> str:
    return secrets.token_urlsafe(RANDOM_BYTES) + str(sale_id)


def code_sale(code: str) -> int | None:
    """The sale a well-formed code names, or None if the code cannot be one of ours."""
    tail = code[RANDOM_CHARS:]
    if not tail.isdigit() or not tail.isascii() or len(tail) > 18:
        return None
    return int(tail)
