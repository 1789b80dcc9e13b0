"""What the tests and benchmarks share, loaded as a pytest plugin (`-p tests.support` in
pyproject.toml): real Redis and PostgreSQL (one database and one Redis DB index per run),
servers of this checkout, and the helpers every test file may use. Test files import this
module and the library modules beside it (nemesis, stampede, redisserver, ...), never
each other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from coredis import PureToken
from litestar.testing import AsyncTestClient

from notsale.app import create_app
from notsale.config import Settings
from notsale.connections import connect
from notsale.engine.sale import SaleEngine
from notsale.recovery.reconcile import Reconciler
from notsale.store.migrations import migrate, with_path
from notsale.store.pool import create_pool
from tests.started import free_port

BASE = Settings.from_env()
# Redis DB indexes a test run may claim; index 0 is left to the service's default.
REDIS_DB_INDEXES = range(1, 15)  # 15 is bench/run.py's
CLAIM_TTL_S = 3600
# Small numbers so a test can sell out a sale; tests override what they need.
TEST_SETTINGS = {"sale_size": 20, "user_limit": 3, "hold_seconds": 60, "workers": 2}


class Stores(msgspec.Struct):
    database_url: str
    redis_url: str


async def drop_database(name: str, base_url: str = BASE.database_url) -> None:
    """Drops a database a test or benchmark made, whoever is still connected to it."""
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# The test database plays a deployment that first ran this long ago: tests may name older
# sales (a test of the rule itself moves it, see `backdate_deployment`).
DEPLOYED_DAYS_AGO = 30


async def backdate_deployment(database_url: str, days: float) -> None:
    """This deployment first ran `days` ago (sql/005); servers started later read it."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE deployment SET first_at = now() - make_interval(secs => $1)", days * 86400
        )
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def stores() -> AsyncIterator[Stores]:
    """Creates this run's database (migrated) and claims a free Redis DB index."""
    run = f"notsale_test_{os.getpid()}_{secrets.token_hex(3)}"
    database_url = with_path(BASE.database_url, "/" + run)
    await migrate(database_url)  # creates the database
    await backdate_deployment(database_url, DEPLOYED_DAYS_AGO)
    claim_url = with_path(BASE.redis_url, "/0")
    # coredis clients are entered and left within one task, so each step opens its own.
    async with connect(claim_url) as claims:
        for index in REDIS_DB_INDEXES:
            claim = f"notsale:test-claim:{index}"
            if await claims.set(claim, run, condition=PureToken.NX, ex=CLAIM_TTL_S):
                break
        else:
            pytest.fail("no free Redis DB index for this test run")
    redis_url = with_path(BASE.redis_url, f"/{index}")
    try:
        yield Stores(database_url, redis_url)
    finally:
        async with connect(redis_url) as redis:
            await redis.flushdb()
        async with connect(claim_url) as claims:
            await claims.delete([claim])
        await drop_database(run)


@pytest.fixture
async def db(stores: Stores) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this run's database, emptied (with Redis) before the test."""
    conn = await asyncpg.connect(stores.database_url)
    await conn.execute(
        "TRUNCATE checkout_attempts, purchases, outbox_rejects, sale_terms, queue_seeds"
    )
    async with connect(stores.redis_url) as redis:
        await redis.flushdb()
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def make_settings(stores: Stores) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values = {
            "database_url": stores.database_url,
            "redis_url": stores.redis_url,
            **TEST_SETTINGS,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def client(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool of the run's database as a worker has it, closed after the test."""
    made = await create_pool(settings.database_url)
    try:
        yield made
    finally:
        await made.close()


@contextlib.asynccontextmanager
async def open_engine(settings: Settings, **options: Any) -> AsyncIterator[SaleEngine]:
    """A sale engine as a worker has it (rebuilding unready sales from PostgreSQL), with
    SaleEngine's `options`. Not a fixture: a coredis client is entered and left in one task."""
    pool = await create_pool(settings.database_url)
    try:
        async with connect(settings.redis_url) as redis:
            reconciler = Reconciler(redis, pool, settings)
            engine = SaleEngine(redis, settings, prepare=reconciler.ensure_ready, **options)
            try:
                yield engine
            finally:
                engine.close()
    finally:
        await pool.close()


async def wait_for(probe: Callable[[], Any], expected: Any, timeout: float = 10.0) -> Any:
    """Poll an async probe until it returns `expected` (rows arrive within the flush interval)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def health_status(http: httpx.AsyncClient) -> int:
    """The status GET /health answers, 0 while nothing answers."""
    try:
        return (await http.get("/health")).status_code
    except httpx.TransportError:
        return 0


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of a `notsale` command with these settings."""
    fields = {
        "NOTSALE_" + name.upper(): str(getattr(settings, name))
        for name in Settings.__struct_fields__
    }
    return {**os.environ, **fields}


def notsale_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`notsale <args>` of this checkout, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "notsale", *args],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def workers_of(pid: int) -> list[int]:
    """A server's granian workers: the child processes of its `notsale serve`."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return sorted(int(p) for p in found.stdout.split())


Client = AsyncTestClient[Any]


async def checkout(client: Client, user: str, item: int | str) -> Any:
    return await client.post("/checkout", params={"user_id": user, "id": str(item)})


async def purchase(client: Client, code: str) -> Any:
    return await client.post("/purchase", params={"code": code})


async def attempt_outcomes(db: asyncpg.Connection, count: int) -> list[str]:
    async def probe() -> int:
        return int(await db.fetchval("SELECT count(*) FROM checkout_attempts"))

    assert await wait_for(probe, count) == count
    rows = await db.fetch("SELECT outcome FROM checkout_attempts ORDER BY attempted_at, id")
    return [r["outcome"] for r in rows]


def assert_error(response: Any, status: int, error: str) -> None:
    """An answer of the contract's error shape: this status and error code, and a detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


class Server(msgspec.Struct):
    """A real `notsale serve` (granian, several workers) running as a subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: str


def spawn_server(
    env: dict[str, str], log_path: str, command: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """`notsale serve` of this checkout (or `command`), logging to log_path."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command or [sys.executable, "-m", "notsale", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the test can signal every worker
        )


def closed_after(port: int, sent: bytes = b"", wait_s: float = 30.0) -> float:
    """Seconds until the server on 127.0.0.1:`port` closes a connection that sent `sent`,
    then nothing; `wait_s` if it is still open by then."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        with contextlib.suppress(TimeoutError):
            while sock.recv(4096):
                pass
        return min(time.monotonic() - started, wait_s)


def log_tail(log_path: str, chars: int = 4000) -> str:
    with open(log_path, errors="replace") as log:
        return log.read()[-chars:]


async def until_healthy(
    base_url: str, process: subprocess.Popen[bytes], timeout: float, in_a_row: int = 1
) -> bool:
    """True once /health answered 200 `in_a_row` times in a row (any worker may answer);
    False if the server exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    healthy = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        while time.monotonic() < deadline and process.poll() is None:
            healthy = healthy + 1 if await health_status(http) == 200 else 0
            if healthy >= in_a_row:
                return True
            await asyncio.sleep(0.1)
    return False


# A server must answer /health within this long after its start, or the test fails.
SERVER_START_TIMEOUT_S = 30.0


@pytest.fixture
async def serve(
    make_settings: Callable[..., Settings], db: asyncpg.Connection, tmp_path: Any
) -> AsyncIterator[Callable[..., Any]]:
    """Starts servers with the given settings overrides; stops them after the test."""
    started: list[Server] = []

    async def start(*, on: tuple[str, ...] = (), **overrides: Any) -> Server:
        """`on`: what runs the server's command elsewhere (`ip netns exec <ns>`, say)."""
        settings = make_settings(port=free_port(), **overrides)
        env = server_env(settings)
        log_path = str(tmp_path / f"server-{len(started)}.log")
        process = spawn_server(env, log_path, [*on, sys.executable, "-m", "notsale", "serve"])
        server = Server(process, f"http://{settings.host}:{settings.port}", log_path)
        started.append(server)
        if await until_healthy(server.base_url, process, SERVER_START_TIMEOUT_S):
            return server
        pytest.fail(f"server did not become healthy:\n{log_tail(log_path)}")

    yield start
    for server in started:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait()


class Throwaway:
    """Redis and PostgreSQL servers of a test's own (via scripts/services), to stop at will.
    The machine's shared servers are never stopped."""

    def __init__(self, state_dir: str, redis_url: str, database_url: str) -> None:
        self.state_dir, self.redis_url, self.database_url = state_dir, redis_url, database_url

    def services(self, *args: str) -> None:
        env = {
            **os.environ,
            "NOTSALE_SERVICES_DIR": self.state_dir,
            "PYTHON": sys.executable,
            "NOTSALE_REDIS_URL": self.redis_url,
            "NOTSALE_DATABASE_URL": self.database_url,
        }
        done = subprocess.run(
            [str(REPO / "scripts" / "services"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def throwaway(stores: Stores) -> Iterator[Callable[..., Throwaway]]:
    """make(redis=True) gives a private Redis (and the run's PostgreSQL); make(postgres=True)
    a private PostgreSQL (and the run's Redis). Both are stopped after the test."""
    made: list[Throwaway] = []

    def make(*, redis: bool = False, postgres: bool = False) -> Throwaway:
        # PostgreSQL runs as an unprivileged user: its folder must be reachable by it.
        state_dir = tempfile.mkdtemp(prefix="notsale-services-")
        os.chmod(state_dir, 0o755)
        redis_url = f"redis://127.0.0.1:{free_port()}/0" if redis else stores.redis_url
        database_url = (
            f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
            if postgres
            else stores.database_url
        )
        made.append(Throwaway(state_dir, redis_url, database_url))
        made[-1].services("up")
        return made[-1]

    yield make
    for servers in made:
        servers.services("down")
        shutil.rmtree(servers.state_dir, ignore_errors=True)


# The settings of holds_capped_across_sales.
HOLDS_CAPPED = {"hold_seconds": 2, "cooldown_seconds": 0, "user_limit": 2, "holds_max": 3}


async def holds_capped_across_sales(client: Client, running: int) -> None:
    """NOTSALE_HOLDS_MAX (3 here) live holds across all open sales, 429 `holds_max` with
    Retry-After past it; the limit (2) takes precedence, a hold asked for again is no new
    one, and a bought item or an expired hold is no longer counted. 11 checkouts: 8 ok, 2
    holds_max, 1 user_limit."""

    async def named(user: str, item: int, sale: int) -> Any:
        params = {"user_id": user, "id": str(item), "sale_id": str(sale)}
        return await client.post("/checkout", params=params)

    first = await checkout(client, "ann", 1)
    assert first.status_code == 200
    assert (await checkout(client, "ann", 2)).status_code == 200
    assert (await named("ann", 1, running - 1)).status_code == 200  # her third hold
    over = await named("ann", 2, running - 1)
    assert_error(over, 429, "holds_max")
    assert 1 <= int(over.headers["retry-after"]) <= 2
    assert_error(await named("ann", 1, running - 2), 429, "holds_max")  # any other sale
    assert_error(await checkout(client, "ann", 3), 429, "user_limit")  # takes precedence
    again = await checkout(client, "ann", 1)  # the hold she has: the same code back
    assert again.json()["code"] == first.json()["code"]
    assert (await named("bob", 2, running - 1)).status_code == 200  # others are not capped
    assert (await purchase(client, first.json()["code"])).status_code == 200
    assert (await named("ann", 3, running - 1)).status_code == 200  # bought: not a hold
    await asyncio.sleep(2.2)  # every hold expired
    for item in (4, 5):
        assert (await named("ann", item, running - 2)).status_code == 200
