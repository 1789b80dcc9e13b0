"""Settings: one frozen struct built once from the NOTSALE_* environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec

ENV_PREFIX = "NOTSALE_"
# Variables of the scripts (scripts/setup, scripts/services), not of the service.
SCRIPT_VARIABLES = frozenset({"NOTSALE_VENV", "NOTSALE_SERVICES_DIR", "NOTSALE_SERVICES_NO_SYSTEM"})
# Item ids are stored as PostgreSQL `integer` (sql/001): a sale cannot be larger.
SALE_SIZE_MAX = 2**31 - 1
DIGITS = re.compile(r"[0-9]{1,18}")
BOOLEANS = ("1", "0", "true", "false")
OPEN_SALES_MAX = 1000
SALE_OPEN_DEFAULT_S = 604_800  # a week
URL_SCHEMES = {
    "redis_url": ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
    "database_url": ("postgresql", "postgres"),
}
REDIS_PORT = 6379
# An HS256 secret shorter than its hash (32 bytes) is guessable offline from one token.
SECRET_MIN = 32


class SettingsError(ValueError):
    """A NOTSALE_* variable holds a value the service cannot run with."""


class Terms(msgspec.Struct, frozen=True, kw_only=True):
    """A sale's terms: fixed when it starts (store/terms.py), whatever the settings say
    later. The names are Settings': either serves where only these are read."""

    sale_seconds: int
    sale_size: int
    user_limit: int
    hold_seconds: int
    sale_open_seconds: int


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = os.cpu_count() or 1
    sale_seconds: int = 3600
    sale_size: int = 10_000
    user_limit: int = 10
    hold_seconds: int = 60
    # A user who let a hold expire may not hold that item again for this long (0: at once).
    cooldown_seconds: int = 10
    # Live holds a user may have across all open sales; 0 means 2 x user_limit.
    holds_max: int = 0
    # A sale stays open, after the next one started, until sold out or this long after its
    # own start; GET /sales lists at most OPEN_SALES_MAX of them, hence the bound below.
    # 0 means the default: a week, or OPEN_SALES_MAX sales if that is shorter.
    sale_open_seconds: int = 0
    # Entries a sale's outbox may hold (decisions PostgreSQL has not taken yet, ~200 bytes
    # each) before checkouts are refused with 503: while PostgreSQL is down, Redis fills up
    # to about this, not to its maxmemory.
    outbox_max: int = 1_000_000
    # GET /metrics and what feeds it (notsale.metrics); 0 or false turns both off.
    metrics: bool = True
    # Set: GET /metrics answers only to `Authorization: Bearer <admin_token>` (else 401).
    admin_token: str = ""
    # Proxies in front that append the address they were sent from to X-Forwarded-For: the
    # client's network (notsale/network.py) is read that many addresses from the end.
    trusted_proxies: int = 0
    # Who the user is: "query", the user_id parameter; "jwt", the `sub` of a bearer token
    # verified with the keys of the JWKS file jwt_jwks, or the HS256 secret jwt_secret.
    identity: Literal["query", "jwt"] = "query"
    jwt_jwks: str = ""
    jwt_secret: str = ""
    # How buyers reach checkout (notsale/admission.py): "open", anyone at any time (the queue
    # routes admit every join at once); "queue", a checkout needs an admission, given in
    # queue order while fewer than active_max admitted buyers of the sale are active.
    admission: Literal["open", "queue"] = "open"
    # The admissions' signing keys, comma-separated: the first signs, all are accepted (a new
    # key goes first; the old one stays until what it signed expired). Required for "queue".
    admission_secret: str = ""
    # A sale's queue opens this long before its start (joins then are shuffled at the start).
    prequeue_seconds: int = 600
    active_max: int = 2000
    # An admission is good for this long.
    admission_seconds: int = 600
    # "json": one JSON object per line; "text": readable lines; "auto": text on a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    # One line per request from granian (method, path, status, time; never the query).
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.sale_open_seconds == 0:
            default = min(SALE_OPEN_DEFAULT_S, OPEN_SALES_MAX * self.sale_seconds)
            msgspec.structs.force_setattr(self, "sale_open_seconds", default)
        for name in (
            "port",
            "workers",
            "sale_seconds",
            "sale_size",
            "user_limit",
            "hold_seconds",
            "sale_open_seconds",
            "outbox_max",
            "active_max",
            "admission_seconds",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be at least 1")
        for name in ("cooldown_seconds", "trusted_proxies", "prequeue_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be at least 0")
        if self.holds_max == 0:
            msgspec.structs.force_setattr(self, "holds_max", 2 * self.user_limit)
        if self.identity == "jwt" and not (self.jwt_jwks or len(self.jwt_secret) >= SECRET_MIN):
            raise SettingsError(
                f"{ENV_PREFIX}IDENTITY=jwt needs {ENV_PREFIX}JWT_JWKS (a file) or"
                f" {ENV_PREFIX}JWT_SECRET (at least {SECRET_MIN} characters)"
            )
        if self.admission == "queue" and not all(
            len(key) >= SECRET_MIN for key in self.admission_secret.split(",")
        ):
            raise SettingsError(
                f"{ENV_PREFIX}ADMISSION=queue needs {ENV_PREFIX}ADMISSION_SECRET: one key, or"
                f" several comma-separated, each of at least {SECRET_MIN} characters"
            )
        if self.port > 65535:
            raise SettingsError(f"{ENV_PREFIX}PORT must be at most 65535")
        if self.sale_size > SALE_SIZE_MAX:
            raise SettingsError(f"{ENV_PREFIX}SALE_SIZE must be at most {SALE_SIZE_MAX}")
        if self.sale_open_seconds > OPEN_SALES_MAX * self.sale_seconds:
            raise SettingsError(
                f"{ENV_PREFIX}SALE_OPEN_SECONDS may be at most {OPEN_SALES_MAX} times"
                f" {ENV_PREFIX}SALE_SECONDS ({OPEN_SALES_MAX} sales open at once), not"
                f" {self.sale_open_seconds} with sales of {self.sale_seconds} s"
            )
        for name, schemes in URL_SCHEMES.items():
            variable = f"{ENV_PREFIX}{name.upper()}"
            if name != "redis_url" or redis_cluster(self.redis_url, variable) is None:
                check_url(variable, getattr(self, name), schemes)

    def terms(self) -> Terms:
        """The terms a sale starting now gets."""
        return Terms(**{name: getattr(self, name) for name in Terms.__struct_fields__})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from NOTSALE_<FIELD>; unset or empty means the default."""
        env = os.environ if environ is None else environ
        raw = {
            name: env[ENV_PREFIX + name.upper()]
            for name in cls.__struct_fields__
            if env.get(ENV_PREFIX + name.upper())
        }
        for field in msgspec.structs.fields(cls):
            # Digits only: int() and msgspec would take "1e3", "8080.0" or " 42 ".
            value = raw.get(field.name)
            if value is None:
                continue
            if field.type is int and not DIGITS.fullmatch(value):
                raise SettingsError(
                    f"{ENV_PREFIX}{field.name.upper()} must be a whole number in digits,"
                    f" not {value!r}"
                )
            if field.type is bool and value.lower() not in BOOLEANS:
                raise SettingsError(
                    f"{ENV_PREFIX}{field.name.upper()} must be 1, 0, true or false, not {value!r}"
                )
        try:
            # strict=False lets "8080" from the environment become the int field it names.
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            # msgspec says "at `$.port`": name the variable the user actually set instead.
            where = re.sub(r"`\$\.(\w+)`", lambda m: ENV_PREFIX + m[1].upper(), str(exc))
            raise SettingsError(f"bad setting: {where}") from exc


# What docs/api.md says of each setting (scripts/api-tables writes its table from these and
# the defaults above; tests/test_docs.py holds them equal): the default as shown when it is
# not the field's own value, and the rule.
SETTING_NOTES: dict[str, tuple[str, str]] = {
    "redis_url": (
        "",
        "starts with `redis://`, `rediss://` or `unix://`; a Redis Cluster:"
        " `redis+cluster://[user:password@]host[:port][,host[:port]…]` (`rediss+cluster://` with"
        " TLS), or a `redis://` / `rediss://` URL listing several nodes; any node of it will do"
        " (see [scaling.md](scaling.md))",
    ),
    "database_url": ("", "starts with `postgresql://` or `postgres://`"),
    "host": ("", ""),
    "port": ("", "1 to 65535"),
    "workers": ("the number of CPU cores", "≥ 1"),
    "sale_seconds": ("", "≥ 1; sale id = floor(unix time / this)"),
    "sale_size": ("", "1 to 2,147,483,647"),
    "user_limit": ("", "≥ 1"),
    "hold_seconds": ("", "≥ 1"),
    "cooldown_seconds": (
        "",
        "≥ 0; how long after a hold expired its user may not hold that item again (0: at once)",
    ),
    "holds_max": (
        "2 x `NOTSALE_USER_LIMIT`",
        "≥ 1 (0: the default); live holds a user may have across all open sales",
    ),
    "sale_open_seconds": (
        "`604800` (a week), or 1000 x `NOTSALE_SALE_SECONDS` if that is shorter",
        "≥ 1 (0: the default), at most 1000 x `NOTSALE_SALE_SECONDS` (so at most 1000 sales are"
        " open at once); how long after its start a sale that has not sold out stays open",
    ),
    "outbox_max": (
        "",
        "≥ 1; decisions waiting for PostgreSQL in all open sales' outboxes (about 200 bytes"
        " each) before checkouts get 503",
    ),
    "metrics": ("", "`1`, `0`, `true` or `false`; `0`: no `GET /metrics` and nothing recorded"),
    "admin_token": ("", "unset: `/metrics` is open; set: it needs `Authorization: Bearer <this>`"),
    "trusted_proxies": (
        "",
        "≥ 0; how many proxies in front each append the address they were sent from to"
        " `X-Forwarded-For` (0: the header is never read)",
    ),
    "identity": (
        "",
        '`query` (the `user_id` parameter) or `jwt` (a bearer token\'s `sub`; see "Identity")',
    ),
    "jwt_jwks": ("", "with `jwt`: a JWKS file (JSON) of the keys that sign tokens; read at start"),
    "jwt_secret": ("", "with `jwt` and no JWKS file: the HS256 secret, at least 32 characters"),
    "admission": ("", '`open` or `queue` (the waiting room; see "Admission")'),
    "admission_secret": (
        "",
        "required with `queue`: the admissions' signing key, at least 32 characters; several,"
        " comma-separated, sign with the first and accept all (key rotation: put the new key"
        " first, drop the old one once `NOTSALE_ADMISSION_SECONDS` passed)",
    ),
    "prequeue_seconds": ("", "≥ 0; how long before a sale's start its queue opens"),
    "active_max": ("", "≥ 1; admitted buyers of a sale active at once"),
    "admission_seconds": ("", "≥ 1; how long an admission is good for"),
    "log_format": (
        "",
        "`json` (one object per line), `text` (readable lines) or `auto` (text when stderr is a"
        " terminal, else JSON)",
    ),
    "access_log": ("", "`1`, `0`, `true` or `false`; `1`: one line per request"),
}


def check_url(variable: str, url: str, schemes: tuple[str, ...]) -> None:
    """The whole URL is read now, so that a bad one fails at start, not at first use."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise SettingsError(f"{variable} is not a valid URL: {exc}") from None
    if parts.scheme not in schemes:
        names = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(f"{variable} must start with one of {names}, not {url!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(f"{variable} names no host: {url!r}")
    if port == 0:
        raise SettingsError(f"{variable} has port 0: {url!r}")


class ClusterURL(NamedTuple):
    nodes: list[tuple[str, int]]  # where to learn the cluster's layout: any node will do
    username: str | None
    password: str | None
    tls: bool


def redis_cluster(url: str, variable: str = ENV_PREFIX + "REDIS_URL") -> ClusterURL | None:
    """The Redis Cluster a URL names, or None for a single Redis: `redis+cluster://` (or
    `rediss+cluster://`, with TLS) followed by `[user:password@]host[:port][,host[:port]…]`,
    or a `redis://` or `rediss://` URL listing more than one node."""
    scheme, sep, rest = url.partition("://")
    tls = scheme.startswith("rediss")
    if not sep or scheme not in ("redis+cluster", "rediss+cluster", "redis", "rediss"):
        return None
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    if "+cluster" not in scheme and "," not in hosts:
        return None
    if path.strip("/") not in ("", "0") or "?" in url or "#" in url:
        raise SettingsError(
            f"{variable}: a Redis Cluster has only database 0 and takes no options: {url!r}"
        )
    nodes = []
    for node in hosts.split(","):
        try:
            parts = urlsplit(f"redis://{node}")
            host, port = parts.hostname, parts.port or REDIS_PORT
        except ValueError:
            host = None
        if not host or port == 0 or parts.username is not None:
            raise SettingsError(f"{variable}: {node!r} is not a host[:port] of a cluster node")
        nodes.append((host, port))
    username, _, password = userinfo.partition(":")
    return ClusterURL(nodes, unquote(username) or None, unquote(password) or None, tls)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """NOTSALE_* variables that no setting reads (a typo, most likely)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.__struct_fields__}
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX) and name not in known | SCRIPT_VARIABLES
    )
