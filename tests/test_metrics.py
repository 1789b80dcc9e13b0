"""GET /metrics: Prometheus text whose counters add up across granian workers."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from notsale.clock import current_sale
from notsale.config import Settings
from notsale.metrics import HAND_OVER_S
from tests.started import free_port
from tests.support import Client, assert_error, log_tail, wait_for, workers_of

# Workers hand their per-request values to prometheus_client every HAND_OVER_S.
HANDED_OVER_S = 2 * HAND_OVER_S
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# RFC 9110's token: what a media type and its parameters' names are made of.
TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """A Content-Type read as strictly as Go's mime.ParseMediaType, which Prometheus 3 uses
    to decide how to read a scrape: a malformed or repeated parameter fails it."""
    kind, *parameters = header.split(";")
    assert re.fullmatch(rf"{TOKEN}/{TOKEN}", kind.strip()), header
    found: dict[str, str] = {}
    for parameter in parameters:
        name_value = re.fullmatch(rf'\s*({TOKEN})=({TOKEN}|"[^"]*")\s*', parameter)
        assert name_value, header
        assert name_value[1].lower() not in found, f"repeated parameter: {header}"
        found[name_value[1].lower()] = name_value[2]
    return kind.strip().lower(), found


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    kind = media_type(response.headers["content-type"])
    assert kind == ("text/plain", {"version": "0.0.4", "charset": "utf-8"})
    return samples(response.text)


def checkouts_by_pid(metrics_dir: str) -> dict[int, float]:
    """Each worker's own count of answered checkouts, read from its file."""
    counts = {}
    for path in glob.glob(os.path.join(metrics_dir, "counter_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        for metric in MultiProcessCollector.merge([path]):  # type: ignore[no-untyped-call]
            if metric.name == "notsale_requests":
                counts[pid] = sum(
                    s.value
                    for s in metric.samples
                    if s.name == "notsale_requests_total" and s.labels["route"] == "/checkout"
                )
    return counts


async def test_counters_add_up_across_two_workers(
    serve: Callable[..., Any],
    db: asyncpg.Connection,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where `notsale serve` makes its directory
    server = await serve(workers=2, sale_size=200, user_limit=200, access_log=True)
    [metrics_dir] = glob.glob(str(tmp_path / "notsale-metrics-*"))
    sent: Counter[str] = Counter()  # by outcome
    statuses: Counter[int] = Counter()
    codes: list[str] = []
    item = 0
    # A new connection per request, many at once, until both workers have answered some.
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base_url, limits=no_keepalive) as http:
        for _ in range(10):  # 200 items at most
            items = range(item + 1, item + 21)
            item += 20
            answers = await asyncio.gather(
                *(http.post("/checkout", params={"user_id": f"u{i}", "id": i}) for i in items),
                *(http.post("/checkout", params={"user_id": "x", "id": i}) for i in items[:5]),
                http.post("/checkout", params={"user_id": "x", "id": "0"}),  # no such item
                http.post("/checkout", params={"user_id": "x", "id": "one"}),  # invalid
            )
            codes += [a.json()["code"] for a in answers if a.status_code == 200]
            for answer in answers:
                outcome = "ok" if answer.status_code == 200 else answer.json()["error"]
                sent[outcome] += 1
                statuses[answer.status_code] += 1
            await asyncio.sleep(HANDED_OVER_S)
            if len([n for n in checkouts_by_pid(metrics_dir).values() if n]) == 2:
                break
        assert len([n for n in checkouts_by_pid(metrics_dir).values() if n]) == 2
        bought = await asyncio.gather(*(http.post("/purchase", params={"code": c}) for c in codes))
        assert {b.status_code for b in bought} == {200}
        await http.get("/no-such-route")
        await asyncio.sleep(HANDED_OVER_S)

        found = await scrape(http)
        checkouts = sum(sent.values())
        assert set(sent) == {"ok", "item_held", "item_not_found", "invalid_request"}
        requests = "notsale_requests_total"
        for status, count in statuses.items():
            assert value(found, requests, route="/checkout", status=str(status)) == count
        assert value(found, "notsale_requests_total", route="unmatched", status="404") == 1
        for outcome, count in sent.items():
            assert value(found, "notsale_outcomes_total", route="/checkout", outcome=outcome) == (
                count
            )
        assert value(found, "notsale_outcomes_total", route="/purchase", outcome="ok") == len(codes)
        latency = "notsale_request_duration_seconds_count"
        assert value(found, latency, route="/checkout") == checkouts
        assert value(found, latency, route="/purchase") == len(codes)
        assert value(found, "notsale_redis_batch_ops_sum") >= checkouts + len(codes)
        assert value(found, "notsale_redis_script_seconds_count") >= 1
        assert value(found, "notsale_purchases_waiting") == 0
        sale = str(current_sale(3600))
        assert value(found, "notsale_sale_sold", sale_id=sale) == len(codes)
        assert value(found, "notsale_sale_held", sale_id=sale) == 0
        assert value(found, "notsale_sale_remaining", sale_id=sale) == 200 - len(codes)
        assert value(found, "notsale_redis_up") == 1

        # Every attempt's row reaches PostgreSQL through some worker's flusher.
        async def attempts_written() -> float:
            found = await scrape(http)
            return value(found, "notsale_rows_written_total", table="checkout_attempts")

        assert await wait_for(attempts_written, checkouts) == checkouts
        found = await scrape(http)
        assert value(found, "notsale_rows_written_total", table="purchases") == len(codes)
        assert value(found, "notsale_flush_batch_entries_sum") == checkouts + len(codes)
        assert value(found, "notsale_outbox_backlog", sale_id=sale) == 0
        assert await db.fetchval("SELECT count(*) FROM checkout_attempts") == checkouts

        # A killed worker's counts stay (counters never go down); its live gauge goes.
        victim = workers_of(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            workers = workers_of(server.process.pid)
            return len(workers) == 2 and victim not in workers

        assert await wait_for(replaced, True, timeout=20)

        # ...and has started (granian loses a SIGTERM that reaches a worker while it starts:
        # the server's stop after this test would wait for it until it is killed).
        async def started() -> int:
            return log_tail(server.log_path, 1_000_000).count('"worker ready"')

        assert await wait_for(started, 3) == 3
        after = await scrape(http)
        assert value(after, "notsale_requests_total", route="/checkout", status="200") == sent["ok"]

        async def victim_gauges() -> list[str]:
            await scrape(http)  # a scrape forgets the gauges of dead workers
            return glob.glob(os.path.join(metrics_dir, f"gauge_live*_{victim}.db"))

        assert await wait_for(victim_gauges, []) == []

    # The access log names each request, never its query (purchase codes are secrets).
    text = Path(server.log_path).read_text()  # noqa: ASYNC240 (a small file, read once)
    lines = [json.loads(line) for line in text.splitlines()]  # JSON: not a terminal
    access = [line for line in lines if line["logger"] == "granian.access"]
    assert len([a for a in access if a["path"] == "/purchase" and a["status"] == 200]) == len(codes)
    assert not [c for c in codes if c in text]


async def test_metrics_route_is_documented_and_refuses_other_methods(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert "get" in schema["paths"]["/metrics"]
    response = await client.post("/metrics")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_metrics_answer_while_redis_is_down(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    from litestar.testing import AsyncTestClient

    from notsale.app import create_app

    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with AsyncTestClient(app=create_app(settings)) as http:
        await http.post("/checkout", params={"user_id": "u", "id": "1"})  # 503
        found = samples((await http.get("/metrics")).text)
    assert value(found, "notsale_redis_up") == 0
    assert value(found, "notsale_outcomes_total", route="/checkout", outcome="unavailable") >= 1


async def test_metrics_can_be_switched_off(
    make_settings: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    from litestar.testing import AsyncTestClient

    from notsale.app import create_app

    try:
        async with AsyncTestClient(app=create_app(make_settings(metrics=False))) as http:
            assert_error(await http.get("/metrics"), 404, "not_found")
    finally:
        create_app(make_settings())  # later tests in this process count again
