"""The waiting room's secrets and proofs (docs/api.md, "Admission: the waiting room"):
tickets and their public ids, admissions signed with NOTSALE_ADMISSION_SECRET, and the
order a committed seed gives the pre-queue. The queue itself lives in Redis (engine/queue.lua).

An admission is `<sale>.<expires_ms>.<signature>`: HMAC-SHA256 of the sale, the user and the
expiry under the first secret, checked against every secret (rotation: a new one is put
first, the old one kept until the admissions it signed expired), in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from notsale.config import Settings

# A ticket: 128 random bits, in URL-safe base64 (22 characters).
TICKET_BYTES = 16
TICKET = re.compile(r"[A-Za-z0-9_-]{22}")
ADMISSION = re.compile(r"([0-9]{1,18})\.([0-9]{1,15})\.([A-Za-z0-9_-]{43})")
# A seed: 128 random bits, in hex.
SEED_BYTES = 16
# Admissions a worker remembers as good at most (then it forgets them all).
GOOD_MAX = 100_000


def new_ticket() -> str:
    return secrets.token_urlsafe(TICKET_BYTES)


def ticket_id(ticket: str) -> str:
    """A ticket's public name: what the pre-queue list shows, and not enough to poll with."""
    return hashlib.sha256(f"ticket:{ticket}".encode()).hexdigest()[:32]


def new_seed() -> str:
    return secrets.token_hex(SEED_BYTES)


def commitment(seed: str) -> str:
    """What is published when a sale's queue opens, long before the seed is."""
    return hashlib.sha256(bytes.fromhex(seed)).hexdigest()


def shuffled(seed: str, ticket_ids: Iterable[str]) -> list[str]:
    """The pre-queued tickets in position order: by sha256(seed + ticket_id), ascending.
    Anyone holding the seed and the list can compute it again."""
    raw = bytes.fromhex(seed)
    return sorted(ticket_ids, key=lambda t: hashlib.sha256(raw + t.encode()).hexdigest())


class Admissions:
    """Signs and checks admissions; built once per worker. In `open` mode without a secret,
    admissions are signed with a key of this worker's own: checkouts ignore them there."""

    def __init__(self, settings: Settings) -> None:
        self.required = settings.admission == "queue"
        given = [s for s in settings.admission_secret.split(",") if s]
        self._keys = [s.encode() for s in given] or [secrets.token_bytes(32)]
        # Admissions found good, with their expiry: a buyer's next checkouts carry the same
        # one, and skip the signature (forged ones are never kept).
        self._good: dict[tuple[str, int, str], int] = {}

    @staticmethod
    def _signed(key: bytes, sale_id: int, user_id: str, expires_ms: int) -> str:
        message = f"admission\n{sale_id}\n{user_id}\n{expires_ms}".encode()
        signature = base64.urlsafe_b64encode(hmac.digest(key, message, "sha256"))
        return f"{sale_id}.{expires_ms}.{signature.decode().rstrip('=')}"

    def sign(self, sale_id: int, user_id: str, expires_ms: int) -> str:
        return self._signed(self._keys[0], sale_id, user_id, expires_ms)

    def valid(self, admission: str, sale_id: int, user_id: str, now_ms: int) -> bool:
        """Whether `admission` admits `user_id` to `sale_id` at `now_ms`. The whole token is
        compared, not its decoded signature: base64 spells some bytes more than one way, and
        no other spelling of an admission is one."""
        known = self._good.get((admission, sale_id, user_id))
        if known is not None:
            return known > now_ms
        found = ADMISSION.fullmatch(admission)
        if found is None or found[1] != str(sale_id) or int(found[2]) <= now_ms:
            return False
        expires_ms = int(found[2])
        # Each comparison takes the same time however much of the token matches; keys are
        # tried in order (which key signed an admission is no secret).
        good = any(
            hmac.compare_digest(admission, self._signed(key, sale_id, user_id, expires_ms))
            for key in self._keys
        )
        if good:
            if len(self._good) >= GOOD_MAX:
                self._good.clear()
            self._good[admission, sale_id, user_id] = expires_ms
        return good
