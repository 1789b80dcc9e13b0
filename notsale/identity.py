"""Who the user is (NOTSALE_IDENTITY): the `user_id` a request names, or, with `jwt`, the
`sub` of the bearer token it carries, verified by PyJWT with the keys of a JWKS file or an
HS256 secret. A name typed into a query costs a bot nothing; an account at an identity
provider costs something."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt

from notsale.config import Settings, SettingsError
from notsale.errors import ErrorCode, NotsaleError

# A user id (docs/api.md, "Parameters"), in a query or a path, or a token's `sub`.
USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
BEARER = "bearer "
# At most this long: a longer Authorization header is refused unread (a JWT is ~1 KB).
TOKEN_MAX = 8192


class Identity:
    """Verifies bearer tokens; built once per worker, when the app is made (a JWKS file that
    cannot be read fails the start, not the first request)."""

    def __init__(self, settings: Settings) -> None:
        self.verified = settings.identity == "jwt"
        # Each key, with its algorithm, by its `kid` (None: the HS256 secret's).
        self._keys: dict[str | None, tuple[Any, str]] = {}
        if self.verified and settings.jwt_jwks:
            try:
                found = jwt.PyJWKSet.from_json(Path(settings.jwt_jwks).read_text()).keys
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise SettingsError(f"NOTSALE_JWT_JWKS cannot be used: {exc}") from None
            self._keys = {key.key_id: (key.key, key.algorithm_name) for key in found}
        elif self.verified:
            self._keys = {None: (settings.jwt_secret, "HS256")}

    def user(self, headers: Iterable[tuple[bytes, bytes]], named: str | None) -> str:
        """The user of a request with these (raw ASGI) headers that names `named` as its
        user_id, if any: `named`; with `jwt`, its token's `sub`, which `named` must be too
        (403 `forbidden`)."""
        if not self.verified:
            if named is None:
                raise NotsaleError(ErrorCode.INVALID_REQUEST, "`user_id` is missing.")
            return named
        sub = self.subject(authorization(headers))
        if named is not None and named != sub:
            raise NotsaleError(ErrorCode.FORBIDDEN)
        return sub

    def subject(self, authorization: str | None) -> str:
        if not authorization or authorization[: len(BEARER)].lower() != BEARER:
            raise NotsaleError(ErrorCode.UNAUTHENTICATED)
        token = authorization[len(BEARER) :].strip()
        if len(token) > TOKEN_MAX:
            raise NotsaleError(ErrorCode.UNAUTHENTICATED, "The bearer token is too long.")
        try:
            key, algorithm = self._key_of(jwt.get_unverified_header(token).get("kid"))
            claims = jwt.decode(
                token, key, algorithms=[algorithm], options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError as exc:
            raise NotsaleError(
                ErrorCode.UNAUTHENTICATED, f"The bearer token was refused: {exc}."
            ) from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not USER_ID.fullmatch(sub):
            raise NotsaleError(
                ErrorCode.UNAUTHENTICATED,
                "The token's `sub` is not a user id (1-64 of [A-Za-z0-9_.:@-]).",
            )
        return sub

    def _key_of(self, kid: object) -> tuple[Any, str]:
        """The key a token names by `kid`; a token without one, the only key there is."""
        key = self._keys.get(kid if isinstance(kid, str) else None)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise jwt.InvalidKeyError("no key has this token's `kid`")
        return key


def authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The Authorization header of raw ASGI headers."""
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
