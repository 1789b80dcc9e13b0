"""NOTSALE_IDENTITY=jwt: the user is the `sub` of a verified bearer token (docs/api.md)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.config import Settings, SettingsError
from tests.support import Client, assert_error, attempt_outcomes, purchase

SECRET = "s" * 32


def token(
    sub: Any, key: Any = SECRET, alg: str = "HS256", exp_s: float = 60, **headers: Any
) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + exp_s)}, key, alg, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def checkout(client: Client, item: int, headers: dict[str, str], **query: str) -> Any:
    return await client.post("/checkout", params={"id": str(item), **query}, headers=headers)


@pytest.fixture
async def verified(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> AsyncIterator[Client]:
    settings = make_settings(identity="jwt", jwt_secret=SECRET)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def test_a_checkout_is_the_tokens_subjects(verified: Client, db: asyncpg.Connection) -> None:
    ann = bearer(token("ann"))
    held = await checkout(verified, 1, ann)  # no user_id: the token says who
    assert held.status_code == 200
    again = await checkout(verified, 1, ann, user_id="ann")  # the same user, named
    assert again.json()["code"] == held.json()["code"]
    assert_error(await checkout(verified, 2, ann, user_id="bob"), 403, "forbidden")
    refused = [
        {},  # no token
        {"Authorization": "Basic YW5uOng="},
        bearer("not.a.token"),
        bearer(token("ann", key="t" * 32)),  # signed with another key
        bearer(token("ann", exp_s=-10)),  # expired
        bearer(token("ann", key=None, alg="none")),  # unsigned
        bearer(token("a b")),  # a `sub` that is no user id
        bearer(jwt.encode({"sub": "ann"}, SECRET, "HS256")),  # no expiry
    ]
    for headers in refused:
        assert_error(await checkout(verified, 3, headers, user_id="ann"), 401, "unauthenticated")
    assert sorted(await attempt_outcomes(db, 11)) == sorted(
        ["ok"] * 2 + ["forbidden"] + ["unauthenticated"] * 8
    )
    rows = await db.fetch("SELECT user_id, outcome FROM checkout_attempts")
    users = {(r["user_id"], r["outcome"]) for r in rows}
    assert users == {("ann", "ok"), ("bob", "forbidden"), ("ann", "unauthenticated")}


async def test_only_the_subject_reads_their_purchases(verified: Client) -> None:
    code = (await checkout(verified, 1, bearer(token("ann")))).json()["code"]
    assert (await purchase(verified, code)).status_code == 200  # the code is the secret
    mine = await verified.get("/users/ann/purchases", headers=bearer(token("ann")))
    assert mine.status_code == 200 and len(mine.json()["purchases"]) == 1
    assert_error(await verified.get("/users/ann/purchases"), 401, "unauthenticated")
    theirs = await verified.get("/users/ann/purchases", headers=bearer(token("bob")))
    assert_error(theirs, 403, "forbidden")


async def test_keys_come_from_a_jwks_file_by_kid(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, tmp_path: Path
) -> None:
    keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "ab"}
    jwks: dict[str, list[Any]] = {"keys": []}
    for kid, key in keys.items():
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwks["keys"].append({**public, "kid": kid, "alg": "RS256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = make_settings(identity="jwt", jwt_jwks=str(path))
    async with AsyncTestClient(app=create_app(settings)) as client:
        for item, kid in enumerate("ab", start=1):  # either key (rotation)
            signed = bearer(token("ann", keys[kid], "RS256", kid=kid))
            assert (await checkout(client, item, signed)).status_code == 200
        for headers in (
            bearer(token("ann", stranger, "RS256", kid="a")),  # not a's key
            bearer(token("ann", keys["a"], "RS256", kid="c")),  # no such kid
            bearer(token("ann", keys["a"], "RS256")),  # no kid, and several keys
            bearer(token("ann", SECRET, "HS256", kid="a")),  # a's public key as an HMAC secret
        ):
            assert_error(await checkout(client, 3, headers), 401, "unauthenticated")


def test_jwt_identity_needs_keys(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="NOTSALE_JWT_JWKS"):
        Settings(identity="jwt")
    with pytest.raises(SettingsError, match="NOTSALE_JWT_JWKS"):
        Settings(identity="jwt", jwt_secret="short")
    broken = tmp_path / "jwks.json"
    broken.write_text("{not json")
    with pytest.raises(SettingsError, match="cannot be used"):
        create_app(Settings(identity="jwt", jwt_jwks=str(broken)))
    with pytest.raises(SettingsError, match="cannot be used"):
        create_app(Settings(identity="jwt", jwt_jwks=str(tmp_path / "missing.json")))
