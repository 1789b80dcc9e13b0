"""Microbenchmarks of the hot functions: `pytest bench` (or scripts/bench).
CI runs them once each with --benchmark-disable, as a smoke test."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from typing import Any

import msgspec
import pytest

from bench.support import COUNTER, Runner, checkout_ops
from notsale import metrics, outbox
from notsale.admission import Admissions
from notsale.api.models import CheckoutBody
from notsale.catalog import item_name
from notsale.clock import current_sale
from notsale.config import Settings
from notsale.engine.codes import new_code
from notsale.engine.sale import script_keys
from notsale.store.batches import copy_rows, insert_rows, write_groups
from notsale.store.rows import AttemptRow, PurchaseRow

BATCH = 100


def test_lua_round_trip_one_checkout(benchmark: Any, runner: Runner) -> None:
    sale = current_sale(runner.settings.sale_seconds)
    runner.run(runner.engine.checkout("warmup", 1))  # marks the sale ready
    benchmark(lambda: runner.run(runner.engine.send_ops(sale, checkout_ops(runner, 1))))


def test_lua_round_trip_batch_of_100_checkouts(benchmark: Any, runner: Runner) -> None:
    sale = current_sale(runner.settings.sale_seconds)
    runner.run(runner.engine.checkout("warmup", 1))
    benchmark.extra_info["ops_per_call"] = BATCH
    benchmark(lambda: runner.run(runner.engine.send_ops(sale, checkout_ops(runner, BATCH))))


def test_pipeline_of_100_single_checkout_evalshas(benchmark: Any, runner: Runner) -> None:
    """The alternative to one script run per batch: one pipeline of one-op runs."""
    sale = current_sale(runner.settings.sale_seconds)
    runner.run(runner.engine.checkout("warmup", 1))
    head = runner.engine.head(sale, runner.settings.terms())

    async def pipelined() -> None:
        async with runner.redis.pipeline(transaction=False) as pipe:
            for i in range(BATCH):
                ops = checkout_ops(runner, 1)
                runner.engine.sale_script(keys=script_keys(sale), args=[*head, *ops], client=pipe)
                del i

    benchmark.extra_info["ops_per_call"] = BATCH
    benchmark(lambda: runner.run(pipelined()))


def test_encode_checkout_body(benchmark: Any) -> None:
    body = CheckoutBody("A" * 28, 498745, 42, "Amber Oak Kettle", "/x", "2026-11-24T01:00:00Z")
    encode = msgspec.json.Encoder().encode
    benchmark(encode, body)


def test_check_an_admission(benchmark: Any) -> None:
    """What queue mode adds to a checkout in the worker: one admission checked, the first
    time (two keys, as while one rotates out; the sign in the loop is counted too)."""
    settings = Settings(admission="queue", admission_secret=f"{'n' * 32},{'o' * 32}")
    admissions = Admissions(settings)
    admission = admissions.sign(498745, "alice", 2**40)
    users = (f"user{n}" for n in itertools.count())

    def first_check() -> bool:  # a new admission each time: its signature is checked
        user = next(users)
        return admissions.valid(admissions.sign(498745, user, 2**40), 498745, user, 1)

    assert admissions.valid(admission, 498745, "alice", 1)
    assert benchmark(first_check)


def test_check_an_admission_again(benchmark: Any) -> None:
    """A buyer's next checkouts with the same admission: remembered as good."""
    admissions = Admissions(Settings(admission="queue", admission_secret="n" * 32))
    admission = admissions.sign(498745, "alice", 2**40)
    assert admissions.valid(admission, 498745, "alice", 1)
    assert benchmark(admissions.valid, admission, 498745, "alice", 1)


def test_decode_outbox_event(benchmark: Any) -> None:
    raw = b'["c","Xq3kP0aZ9bYw.1234","user123","42","item_held","","1795482486613",0]'
    benchmark(outbox.DECODER.decode, raw)


def test_item_name_uncached(benchmark: Any) -> None:
    counter = itertools.count(1)
    benchmark(lambda: item_name.__wrapped__(498745, next(counter)))


@pytest.mark.parametrize("rows", [1, 100, 1_000, 10_000])
@pytest.mark.parametrize("write", [insert_rows, copy_rows], ids=["statement", "copy"])
def test_write_attempts(benchmark: Any, runner: Runner, write: Any, rows: int) -> None:
    """The two ways rows.write_rows stores a batch, at four sizes (where they cross)."""
    now = dt.datetime.now(dt.UTC)

    def batch() -> list[AttemptRow]:
        base = next(COUNTER) * rows
        return [
            AttemptRow(f"b:{base + i}", 1, f"u{i}", i, None, "item_held", None, now)
            for i in range(rows)
        ]

    async def store(attempts: list[AttemptRow]) -> None:
        async with runner.pool.acquire() as conn:
            await write(conn, attempts, [], 10, 30)

    benchmark.extra_info["rows"] = rows
    benchmark.pedantic(lambda a: runner.run(store(a)), setup=lambda: ((batch(),), {}), rounds=5)


@pytest.mark.parametrize("purchases", [1, 100])
def test_commit_purchases(benchmark: Any, runner: Runner, purchases: int) -> None:
    """One transaction of the purchases' group commit (writer.py), limit check included: its
    time gives commits per second, and purchases per second per committing connection."""
    now = dt.datetime.now(dt.UTC)

    def batch() -> list[PurchaseRow]:
        sale = next(COUNTER)  # a sale of its own per round: items are sold once
        return [PurchaseRow(sale, i + 1, f"u{i}", new_code(sale), now, 1) for i in range(purchases)]

    async def store(rows: list[PurchaseRow]) -> None:
        async with runner.pool.acquire() as conn:
            refused = await write_groups(conn, [([], [row]) for row in rows], 10, 30)
            assert refused == [{}] * len(rows)

    benchmark.extra_info["purchases"] = purchases
    benchmark.pedantic(lambda r: runner.run(store(r)), setup=lambda: ((batch(),), {}), rounds=20)


def test_metrics_recorded_per_checkout(benchmark: Any) -> None:
    """What metrics add to one checkout: the start kept in the scope, and the answer's
    status, latency and outcome recorded (metrics.hot_answer), around an app that answers at
    once. Single-process values here; under `notsale serve` the hand-over goes to
    memory-mapped files every 0.5 s (bench/run.py --ab NOTSALE_METRICS=0 measures it all)."""

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        metrics.hot_answer(scope, 200, "ok")
        await send({"type": "http.response.start", "status": 200})

    async def discard(message: Any) -> None:
        pass

    app = metrics.metered(answer)
    scope = {"type": "http", "path": "/checkout"}

    def one() -> None:
        coroutine = app(scope, None, discard)
        with contextlib.suppress(StopIteration):
            coroutine.send(None)  # nothing in it waits: it runs to its end here

    benchmark(one)


def test_read_a_grid_page_of_60_items(benchmark: Any, runner: Runner) -> None:
    """What one page of the buyers' grid costs Redis: one read.lua run for 60 statuses."""
    sale = current_sale(runner.settings.sale_seconds)
    runner.run(runner.engine.checkout("warmup", 1))
    assert runner.run(runner.engine.read(sale, 1, 60)) is not None
    benchmark(lambda: runner.run(runner.engine.read(sale, 1, 60)))
