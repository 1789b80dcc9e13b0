"""What the Redis client path costs, client by client, in one pytest-benchmark run: one
`sale.lua` run carrying 1 and 100 checkouts, and one XADD of an outbox-sized entry, through

- coredis 6's command API (a registered script: EVALSHA), as notsale ran sale.lua before
  the lane below, and still does on a Redis Cluster;
- coredis 6 used differently: one connection held by the caller, EVALSHA sent with
  `Connection.create_request` (no pool checkout, no command wrappers, no retry policy);
- coredis 5.7, the last asyncio-native coredis (installed on first use into
  `.bench-deps/coredis5` and imported beside coredis 6, see `coredis5`);
- redis-py's asyncio client with hiredis (the bench extra installs both);
- notsale's own connection for the scripts (`notsale/engine/lane.py`: the command written
  on the socket by the caller, replies parsed by coredis' RESP parser in the protocol's
  callback), which serves sale.lua on a single Redis since this comparison.

Every test starts on an emptied Redis and makes the same calls in the same order
(`pedantic`, fixed rounds), so each client's script runs do the same work in Redis.
`pytest bench -k clients`; `--benchmark-disable` runs each once (CI).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio

from bench.support import Runner, checkout_ops
from notsale import outbox
from notsale.clock import current_sale
from notsale.engine.lane import Lane
from notsale.engine.sale import script_keys

REPO = Path(__file__).resolve().parents[1]
CLIENTS = ["coredis6", "coredis6-held-connection", "coredis5", "redis-py-hiredis", "notsale-lane"]
ROUNDS = {1: 300, 100: 40}
ENTRY = {outbox.FIELD: "x" * 200}  # about an outbox entry's size

Call = Callable[[str, list[str], list[Any]], Awaitable[Any]]


def coredis5() -> ModuleType:
    """coredis 5.x, imported beside the coredis 6 notsale runs on: its modules are loaded
    under the same names from a folder of their own, then moved out of sys.modules, so
    `import coredis` still gives coredis 6 (coredis 5's objects keep their own modules)."""
    target = REPO / ".bench-deps" / "coredis5"
    if not (target / "coredis").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(target), "coredis>=5.7,<6"],
            check=True,
        )  # fmt: skip
    ours = {k: v for k, v in sys.modules.items() if k == "coredis" or k.startswith("coredis.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(target))
    try:
        five = importlib.import_module("coredis")
        for found in pkgutil.walk_packages(five.__path__, "coredis."):
            # Not the optional extras, nor typing modules of other Python versions.
            if ".recipes" not in found.name and "._py_3" not in found.name:
                importlib.import_module(found.name)
    finally:
        sys.path.remove(str(target))
        for name in [k for k in sys.modules if k == "coredis" or k.startswith("coredis.")]:
            del sys.modules[name]
        sys.modules.update(ours)
    return five


@pytest.fixture(params=CLIENTS)
def evalsha(request: pytest.FixtureRequest, runner: Runner) -> Iterator[tuple[Call, Call]]:
    """(a call running a script by its SHA, an XADD) through the client under test."""
    url = runner.settings.redis_url
    name = request.param
    if name == "coredis6":

        async def run6(sha: str, keys: list[str], args: list[Any]) -> Any:
            return await runner.engine.sale_script(keys=keys, args=args)  # as SaleEngine._run

        yield run6, lambda key, *_: runner.redis.xadd(key, ENTRY)
    elif name == "coredis6-held-connection":
        conn = runner.run(runner.redis.connection_pool.get_connection())

        async def held(sha: str, keys: list[str], args: list[Any]) -> Any:
            return await conn.create_request(b"EVALSHA", sha, len(keys), *keys, *args, decode=True)

        async def xadd_held(key: str, *_: Any) -> Any:
            return await conn.create_request(b"XADD", key, "*", "e", ENTRY["e"], decode=True)

        yield held, xadd_held
        runner.redis.connection_pool.release(conn)
    elif name == "coredis5":
        five = coredis5().Redis.from_url(url, decode_responses=True)

        async def run5(sha: str, keys: list[str], args: list[Any]) -> Any:
            return await five.evalsha(sha, keys, args)

        yield run5, lambda key, *_: five.xadd(key, ENTRY)
        five.connection_pool.disconnect()
    elif name == "notsale-lane":
        lane = Lane.of(runner.redis)
        assert lane is not None
        script = runner.engine.sale_script.script

        async def run_lane(sha: str, keys: list[str], args: list[Any]) -> Any:
            return await lane.evalsha(sha, script, keys, args)

        yield run_lane, lambda key, *_: lane.call("XADD", key, "*", "e", ENTRY["e"])
        lane.close()
    else:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)

        async def run_py(sha: str, keys: list[str], args: list[Any]) -> Any:
            return await client.evalsha(sha, len(keys), *keys, *args)

        yield run_py, lambda key, *_: client.xadd(key, ENTRY)
        runner.run(client.aclose())


@pytest.mark.parametrize("ops", list(ROUNDS))
def test_clients_sale_lua(
    benchmark: Any, runner: Runner, evalsha: tuple[Call, Call], ops: int
) -> None:
    call, _ = evalsha
    sale = current_sale(runner.settings.sale_seconds)
    runner.run(runner.engine.checkout("warmup", 1))  # the sale made ready, the script loaded
    keys = script_keys(sale)
    head = runner.engine.head(sale, runner.settings.terms())
    sha = runner.engine.sale_script.sha

    def batch() -> tuple[tuple[list[Any]], dict[str, Any]]:
        return ([*head, *checkout_ops(runner, ops)],), {}

    def once(args: list[Any]) -> None:
        replies = runner.run(call(sha, keys, args))
        assert len(replies) == ops

    benchmark.extra_info["ops_per_call"] = ops
    benchmark.pedantic(once, setup=batch, rounds=ROUNDS[ops])


def test_clients_xadd(benchmark: Any, runner: Runner, evalsha: tuple[Call, Call]) -> None:
    _, xadd = evalsha
    key = f"{{sale:{current_sale(runner.settings.sale_seconds)}}}:bench"
    benchmark.pedantic(lambda: runner.run(xadd(key)), rounds=ROUNDS[1])
