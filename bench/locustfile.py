"""locust for notsale, in two modes (pick with --mode):

full  a fixed number (--pairs) of checkout+purchase pairs on distinct items, every answer
      checked against the contract; when done, the sale is verified through the API and,
      given NOTSALE_DATABASE_URL, in PostgreSQL. Run it on a fresh sale:
        locust -f bench/locustfile.py --headless -u 64 -r 64 --mode full --pairs 10000 \\
          -H http://127.0.0.1:8080
sim   a crowd of buyers with think time: each picks random items, retries on 409, stops at
      the user limit or when the sale is sold out; anything outside the contract fails.
        locust -f bench/locustfile.py --headless -u 1000 -r 200 -t 60s --mode sim \\
          -H http://127.0.0.1:8080
Without --headless, locust serves its web UI on :8089.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import asyncpg
import gevent
import httpx
from locust import FastHttpUser, events, task
from locust.exception import StopUser

CODE = re.compile(r"[A-Za-z0-9_-]{22,}")
logging.getLogger("httpx").setLevel(logging.WARNING)  # the final checks ask a lot
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# Statuses the contract allows, per route; anything else is a failure.
CONTRACT = {"checkout": {200, 409, 429}, "purchase": {200, 410}}
SOLD_OUT_CHECK_EVERY = 10  # refusals between two looks at /sales/current (sim mode)


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    parser.add_argument("--mode", choices=["full", "sim"], default="sim", include_in_web_ui=True)
    parser.add_argument("--pairs", type=int, default=10_000, help="full mode: pairs to run")
    parser.add_argument("--user-limit", type=int, default=10, help="the service's USER_LIMIT")


class Shared:
    """What every simulated user of this locust process adds to."""

    pairs: ClassVar[Iterator[int]] = itertools.count()
    done: ClassVar[int] = 0  # pairs bought and checked
    finished: ClassVar[int] = 0  # pairs over, bought or failed
    sale_id: ClassVar[int | None] = None
    bought: ClassVar[set[tuple[int, str]]] = set()
    first_started: ClassVar[float | None] = None  # full mode: when the first pair began
    last_finished: ClassVar[float] = 0.0


# Think time of a sim buyer between two requests, in seconds.
THINK_S = (0.2, 1.0)


class Buyer(FastHttpUser):
    def wait_time(self) -> float:
        return random.uniform(*THINK_S) if self.mode == "sim" else 0.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.mode = opts.mode
        if self.mode == "sim":
            self.user_id = f"sim{random.getrandbits(48):x}"
            self.refusals = 0
            self.size = self.client.get("/sales/current").json()["size"]

    @task
    def act(self) -> None:
        if self.mode == "full":
            self.full_pair()
        else:
            self.sim_step()

    def full_pair(self) -> None:
        opts = self.environment.parsed_options
        n = next(Shared.pairs)
        if n >= opts.pairs:
            raise StopUser()
        if Shared.first_started is None:
            Shared.first_started = time.monotonic()
        try:
            self.one_pair(n, opts)
        finally:
            Shared.finished += 1
            Shared.last_finished = time.monotonic()
            if Shared.finished == opts.pairs:
                # The last pair is in: end the run, from a greenlet of its own (quit() kills
                # every user's greenlet, this one included).
                gevent.spawn(self.environment.runner.quit)

    def one_pair(self, n: int, opts: Any) -> None:
        user, item = f"full{n // opts.user_limit}", n + 1
        with self.client.post(
            f"/checkout?user_id={user}&id={item}", name="checkout", catch_response=True
        ) as r:
            body = r.json() if r.status_code == 200 else {}
            if not (
                r.status_code == 200
                and CODE.fullmatch(body.get("code", ""))
                and body.get("item_id") == item
                and TIME.fullmatch(body.get("expires_at", ""))
                and body.get("image_url", "").endswith(f"/items/{item}/image.svg")
            ):
                r.failure(f"checkout {r.status_code}: {r.text[:200]}")
                return
        with self.client.post(
            f"/purchase?code={body['code']}", name="purchase", catch_response=True
        ) as p:
            bought = p.json() if p.status_code == 200 else {}
            if not (
                p.status_code == 200
                and bought.get("item_id") == item
                and bought.get("user_id") == user
                and bought.get("sale_id") == body["sale_id"]
                and bought.get("name") == body["name"]
            ):
                p.failure(f"purchase {p.status_code}: {p.text[:200]}")
                return
        Shared.sale_id = body["sale_id"]
        Shared.bought.add((item, user))
        Shared.done += 1

    def sim_step(self) -> None:
        item = random.randint(1, self.size)
        with self.client.post(
            f"/checkout?user_id={self.user_id}&id={item}", name="checkout", catch_response=True
        ) as r:
            if r.status_code not in CONTRACT["checkout"]:
                r.failure(f"checkout {r.status_code}: {r.text[:200]}")
                return
            r.success()
        if r.status_code == 429:
            raise StopUser()  # at the user limit: this buyer is done
        if r.status_code == 409:
            self.refusals += 1
            if self.refusals % SOLD_OUT_CHECK_EVERY == 0:
                sale = self.client.get("/sales/current", name="sales/current").json()
                if sale["sold"] >= sale["size"]:
                    raise StopUser()
            return
        code = r.json()["code"]
        with self.client.post(f"/purchase?code={code}", name="purchase", catch_response=True) as p:
            if p.status_code not in CONTRACT["purchase"]:
                p.failure(f"purchase {p.status_code}: {p.text[:200]}")


async def stored_purchases(dsn: str, sale_id: int) -> set[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT item_id, user_id FROM purchases WHERE sale_id = $1", sale_id
        )
    finally:
        await conn.close()
    return {(r["item_id"], r["user_id"]) for r in rows}


@events.test_stop.add_listener
def verify_full_run(environment: Any, **_: Any) -> None:
    """Full mode: the sale as the API and PostgreSQL see it must match every 200 we got."""
    if environment.parsed_options.mode != "full" or Shared.sale_id is None:
        return
    problems: list[str] = []
    current = httpx.get(environment.host + "/sales/current").json()
    if current["sale_id"] == Shared.sale_id and current["sold"] < Shared.done:
        problems.append(f"/sales/current says {current['sold']} sold, {Shared.done} were bought")
    for item, user in sorted(Shared.bought)[:: max(1, len(Shared.bought) // 50)]:
        status = httpx.get(f"{environment.host}/sales/{Shared.sale_id}/items/{item}").json()
        if status.get("status") != "sold":
            problems.append(f"item {item} bought by {user} is {status.get('status')}")
    dsn = os.environ.get("NOTSALE_DATABASE_URL")
    if dsn:
        stored = asyncio.run(stored_purchases(dsn, Shared.sale_id))
        missing = Shared.bought - stored
        if missing:
            problems.append(f"{len(missing)} purchases answered 200 are not in PostgreSQL")
    took = Shared.last_finished - (Shared.first_started or Shared.last_finished)
    print(
        f"full mode: {Shared.done} pairs bought in sale {Shared.sale_id} in {took:.2f} s "
        f"({Shared.done / took if took else 0:.0f} pairs/s, first request to last answer); "
        + ("verified: API and PostgreSQL agree" if not problems else "PROBLEMS:")
    )
    for problem in problems:
        print("  " + problem)
    if problems:
        environment.process_exit_code = 1
