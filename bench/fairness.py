"""The door under a crowd: humans, a NAT of humans and a bot, through the waiting room.

    python -m bench.fairness [--runs N] [--html docs/audit.html]

Each run serves this code in `queue` mode (2 workers, a fresh database and Redis DB index;
sales of SALE_S seconds, 1,000 items, limit 10, ACTIVE_MAX active buyers) and waits for a
sale whose pre-queue is open. Over real HTTP, each group from loopback addresses of its own
(Linux lets a client bind any 127.x.y.z):

- HUMANS people, each on their own address, wanting one item: they join at a random moment
  of the pre-queue, poll as told, then think 2-10 s between steps (checkout, purchase);
- NAT people behind one address, the same way;
- one bot on one address with BOT_IDS ids: it joins all of them as the pre-queue opens,
  polls as fast as it can (ignoring poll_after_ms), and once an id is admitted checks out
  and buys 10 items at once.

It then prints, per run and over all: refusals of the NAT group for rate or network (none
should be), the positions of the bot's ids against the humans' (two-sample
Kolmogorov-Smirnov: the fast polling should gain nothing), every position recomputed from
the published seed, forged and mutated admissions and tickets accepted (none should be),
holds expired unbought, and what `notsale audit` flags. A last run with
NOTSALE_IDENTITY=jwt gives the bot 10 valid tokens for its 100 ids.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import math
import multiprocessing
import os
import random
import ssl
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.run import PORT, fresh_stores, running
from notsale.admission import Admissions, new_ticket, ticket_id
from notsale.clock import current_sale, now_ms
from notsale.config import Settings
from notsale.connections import connect
from notsale.keys import queue_keys
from notsale.recovery.audit import audit, page
from notsale.store.pool import create_pool

HUMANS, NAT, BOT_IDS, BOT_ITEMS = 900, 100, 100, 10
SALE_S, SIZE, LIMIT, ACTIVE_MAX = 60, 1000, 10, 200
SECRET = "fairness-bench-secret-" + "x" * 16
THINK_S = (2.0, 10.0)
HUMAN_TRIES = 5  # looks at the grid before giving up
BOT_POLL_S = 0.05  # "as fast as it can": each id polls this often, told to or not
FORGERIES = 100_000
# The crowd needs this long before the start to join (a thousand clients, one process).
PREQUEUE_MIN_S = 45
URL = f"http://127.0.0.1:{PORT}"


@dataclass
class Seen:
    """What one group was answered."""

    statuses: Counter[str] = field(default_factory=Counter)
    positions: dict[str, int] = field(default_factory=dict)  # ticket_id -> position
    items: int = 0
    admitted: dict[str, Any] | None = None  # one admitted ticket's state, for the forgeries


def own_network(n: int) -> str:
    """The n-th person's address, in a /24 of its own (127.10.0.1, 127.10.1.1, …): people
    reach a shop from networks of their own, whatever the scenario's single machine."""
    return f"127.{10 + n // 250}.{n % 250}.1"


# One TLS context for every client (the URL is plain HTTP; httpx makes one per transport
# otherwise, about 10 ms each: a thousand clients held the loop for seconds, and people whose
# moment to join fell meanwhile joined all at once when their client was ready).
TLS = ssl.create_default_context()


def client(source: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source, verify=TLS)
    return httpx.AsyncClient(base_url=URL, transport=transport, timeout=30.0)


async def send(http: httpx.AsyncClient, seen: Seen, method: str, path: str, **kw: Any) -> Any:
    answer = await http.request(method, path, **kw)
    body = answer.json()
    seen.statuses[str(answer.status_code) + ("" if answer.is_success else f" {body['error']}")] += 1
    return answer.status_code, body, answer.headers


async def wait_admitted(
    http: httpx.AsyncClient, seen: Seen, sale: int, state: dict[str, Any], as_told: bool
) -> dict[str, Any] | None:
    """Poll until admitted (the state then) or the sale has nothing left (None)."""
    while not state["admitted"]:
        if state["remaining"] == 0:
            return None
        await asyncio.sleep(state["poll_after_ms"] / 1000 if as_told else BOT_POLL_S)
        status, body, headers = await send(
            http, seen, "GET", f"/sales/{sale}/queue", params={"ticket": state["ticket"]}
        )
        if status == 429:
            if as_told:  # told to wait: the wait it was told
                await asyncio.sleep(int(headers["retry-after"]))
            continue
        if status != 200:
            return None
        if body["position"] is not None:
            seen.positions[body["ticket_id"]] = body["position"]
        state = body
    seen.admitted = state
    return state


async def human(sale: int, source: str, user: str, join_at: float, seen: Seen) -> None:
    async with client(source) as http:
        await asyncio.sleep(max(0.0, join_at - time.time()))
        _, state, _ = await send(
            http, seen, "POST", f"/sales/{sale}/queue", params={"user_id": user}
        )
        admitted = await wait_admitted(http, seen, sale, state, as_told=True)
        for _ in range(HUMAN_TRIES if admitted is not None else 0):
            await asyncio.sleep(random.uniform(*THINK_S))
            # A look at a page of the grid, for an item still available.
            first = random.randrange(0, SIZE, 100) + 1
            _, grid, _ = await send(
                http, seen, "GET", f"/sales/{sale}/items", params={"from": str(first)}
            )
            free = [i["item_id"] for i in grid["items"] if i["status"] == "available"]
            if not free:
                continue
            query = {
                "user_id": user,
                "id": str(random.choice(free)),
                "sale_id": str(sale),  # sales are a minute long here: it may be an older one
                "admission": admitted["admission"],
            }
            status, body, _ = await send(http, seen, "POST", "/checkout", params=query)
            if status == 200:
                await asyncio.sleep(random.uniform(*THINK_S))
                if (await send(http, seen, "POST", "/purchase", json={"code": body["code"]}))[
                    0
                ] == 200:
                    seen.items += 1
                return
            if status not in (409, 429):  # sold out, closed, admission gone
                return


async def bot(
    sale: int, source: str, seen: Seen, tokens: list[str] | None = None, ids: int = BOT_IDS
) -> None:
    """BOT_IDS ids on one address, as fast as it can; with `tokens`, each id signs in with
    one of them (the token of another id is refused: 403 forbidden)."""
    async with client(source) as http:

        async def one(n: int) -> None:
            user = f"bot{n}"
            headers = (
                {} if tokens is None else {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            )
            status, state, _ = await send(
                http,
                seen,
                "POST",
                f"/sales/{sale}/queue",
                params={"user_id": user},
                headers=headers,
            )
            if status != 200:
                return
            admitted = await wait_admitted(http, seen, sale, state, as_told=False)
            if admitted is None:
                return
            got = 0
            for _ in range(BOT_ITEMS * 20):
                if got == BOT_ITEMS:
                    return
                query = {
                    "user_id": user,
                    "id": str(random.randint(1, SIZE)),
                    "sale_id": str(sale),
                    "admission": admitted["admission"],
                }
                status, body, _ = await send(
                    http, seen, "POST", "/checkout", params=query, headers=headers
                )
                if status == 200:
                    if (await send(http, seen, "POST", "/purchase", json={"code": body["code"]}))[
                        0
                    ] == 200:
                        got += 1
                        seen.items += 1
                elif status not in (409,):
                    return

        await asyncio.gather(*(one(n) for n in range(ids)))


def ks(a: list[int], b: list[int]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: the statistic D and its asymptotic p-value (nan
    when a sample is empty)."""
    if not a or not b:
        return math.nan, math.nan
    xs, ys = sorted(a), sorted(b)
    d = 0.0
    i = j = 0
    while i < len(xs) and j < len(ys):
        v = min(xs[i], ys[j])
        while i < len(xs) and xs[i] == v:
            i += 1
        while j < len(ys) and ys[j] == v:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    n = len(xs) * len(ys) / (len(xs) + len(ys))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


def mutated(token: str) -> str:
    spot = random.randrange(len(token))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return token[:spot] + random.choice(alphabet.replace(token[spot], "")) + token[spot + 1 :]


async def forgeries(
    settings: Settings, sale: int, admission: str, user: str, ticket: str
) -> dict[str, int]:
    """FORGERIES forged or mutated admissions, and replays for another user or sale, checked
    as the workers check them; as many forged or mutated tickets looked up in the sale's
    queue; and 200 of each sent over HTTP. What was accepted, by kind."""
    checker, now = Admissions(settings), now_ms()
    accepted: Counter[str] = Counter()
    for n in range(FORGERIES):
        kind = n % 4
        if kind == 0:
            forged, for_sale, for_user = mutated(admission), sale, user
        elif kind == 1:
            forged, for_sale, for_user = admission, sale, f"other{n}"
        elif kind == 2:
            forged, for_sale, for_user = admission, sale + 1, user
        else:
            raw = os.urandom(32)
            forged = f"{sale}.{now + 600_000}.{base64.urlsafe_b64encode(raw).decode()[:43]}"
            for_sale, for_user = sale, user
        accepted["admission"] += checker.valid(forged, for_sale, for_user, now)
    async with connect(settings.redis_url) as redis:
        ids = [ticket_id(mutated(ticket) if n % 2 else new_ticket()) for n in range(FORGERIES)]
        for start in range(0, FORGERIES, 5000):
            found = await redis.hmget(queue_keys(sale).tickets, ids[start : start + 5000])
            accepted["ticket"] += sum(1 for f in found if f is not None)
    async with httpx.AsyncClient(base_url=URL) as http:
        for n in range(200):
            query = {
                "user_id": user if n % 2 else f"x{n}",
                "id": "1",
                "admission": mutated(admission),
            }
            accepted["admission over HTTP"] += (
                await http.post("/checkout", params=query)
            ).status_code == 200
            poll = await http.get(f"/sales/{sale}/queue", params={"ticket": mutated(ticket)})
            accepted["ticket over HTTP"] += poll.status_code == 200
    return dict(accepted)


def bot_process(sale: int, source: str, ids: int) -> Seen:
    """The bot, in a process of its own (as it would be, on a machine of its own): the
    crowd's thousand clients in this one would slow it down."""
    seen = Seen()
    asyncio.run(bot(sale, source, seen, ids=ids))
    return seen


async def scenario(settings: Settings, run: int) -> dict[str, Any]:
    sale = current_sale(SALE_S) + 1
    starts = sale * SALE_S
    if starts - time.time() < PREQUEUE_MIN_S:  # too little pre-queue left: the next one
        await asyncio.sleep(starts - time.time() + 0.1)
        sale, starts = sale + 1, starts + SALE_S
    print(f"run {run}: sale {sale}, starting in {starts - time.time():.0f} s", flush=True)
    people, nat = Seen(), Seen()
    joins = [random.uniform(time.time() + 1, starts - 2) for _ in range(HUMANS + NAT)]
    crowd = [human(sale, own_network(n), f"h{n}", joins[n], people) for n in range(HUMANS)]
    crowd += [human(sale, "127.2.0.1", f"n{n}", joins[HUMANS + n], nat) for n in range(NAT)]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as apart:
        loop = asyncio.get_running_loop()
        bot_run = loop.run_in_executor(apart, bot_process, sale, "127.3.0.1", BOT_IDS)
        await asyncio.gather(*crowd)
        robot = await bot_run
    async with httpx.AsyncClient(base_url=URL) as http:
        fair = (await http.get(f"/sales/{sale}/fairness")).json()
        listed: list[dict[str, Any]] = []
        while len(listed) < fair["prequeued"]:
            page_ = await http.get(
                f"/sales/{sale}/fairness/prequeue", params={"from": str(len(listed))}
            )
            listed += page_.json()["tickets"]
    seed = bytes.fromhex(fair["seed"])
    order = sorted(
        (t["ticket_id"] for t in listed),
        key=lambda t: hashlib.sha256(seed + t.encode()).hexdigest(),
    )
    recomputed = {t: n + 1 for n, t in enumerate(order)}
    seen = {**people.positions, **nat.positions, **robot.positions}
    wrong = sum(1 for t, p in seen.items() if t in recomputed and recomputed[t] != p)
    commitment_ok = hashlib.sha256(seed).hexdigest() == fair["seed_sha256"]

    # The draw is what is compared: the places of pre-queued tickets (a late joiner's place
    # comes after them all, whoever they are).
    def drawn(group: Seen) -> list[int]:
        return [p for p in group.positions.values() if p <= fair["prequeued"]]

    d, p = ks(drawn(robot), [*drawn(people), *drawn(nat)])
    first = {
        name: sum(1 for p in group.positions.values() if p <= ACTIVE_MAX)
        for name, group in (("humans", people), ("NAT", nat), ("bot", robot))
    }
    pool = await create_pool(settings.database_url)
    try:
        async with connect(settings.redis_url) as redis:
            report = await audit(redis, pool, settings, sale)
    finally:
        await pool.close()
    flagged = {u for f in report.flagged for u in f.user_ids}
    refused_nat = {k: v for k, v in nat.statuses.items() if k.startswith(("429 too_early", "403"))}
    return {
        "sale": sale,
        "report": report,
        "nat refused for rate or network": sum(refused_nat.values()),
        "bot too_early answers": robot.statuses.get("429 too_early", 0),
        "bot positions (median)": sorted(robot.positions.values())[len(robot.positions) // 2],
        "human positions (median)": sorted([*people.positions.values(), *nat.positions.values()])[
            (len(people.positions) + len(nat.positions)) // 2
        ],
        "KS D, p (pre-queued places)": (round(d, 3), round(p, 3)),
        "pre-queued: humans, NAT, bot": (len(drawn(people)), len(drawn(nat)), len(drawn(robot))),
        "let in at the start (places 1-ACTIVE_MAX)": first,
        "positions seen / recomputed wrong": (len(seen), wrong),
        "commitment matches seed": commitment_ok,
        "items: humans, NAT, bot": (people.items, nat.items, robot.items),
        "holds expired unbought (% of stock)": round(100 * report.expired_holds / SIZE, 2),
        "bot ids flagged (%)": round(
            100 * sum(1 for n in range(BOT_IDS) if f"bot{n}" in flagged) / BOT_IDS, 1
        ),
        "NAT ids flagged (%)": round(
            100 * sum(1 for n in range(NAT) if f"n{n}" in flagged) / NAT, 1
        ),
        "humans flagged": sum(1 for n in range(HUMANS) if f"h{n}" in flagged),
        "statuses humans": dict(people.statuses),
        "statuses NAT": dict(nat.statuses),
        "statuses bot": dict(robot.statuses),
        "_drawn": (drawn(robot), [*drawn(people), *drawn(nat)]),
        "_sample": people.admitted,
    }


def env_for(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "NOTSALE_DATABASE_URL": settings.database_url,
        "NOTSALE_REDIS_URL": settings.redis_url,
        "NOTSALE_WORKERS": "2",
        "NOTSALE_PORT": str(PORT),
        "NOTSALE_SALE_SECONDS": str(SALE_S),
        "NOTSALE_PREQUEUE_SECONDS": str(SALE_S),
        "NOTSALE_SALE_SIZE": str(SIZE),
        "NOTSALE_USER_LIMIT": str(LIMIT),
        "NOTSALE_ACTIVE_MAX": str(ACTIVE_MAX),
        "NOTSALE_ADMISSION": "queue",
        "NOTSALE_ADMISSION_SECRET": SECRET,
        **extra,
    }


async def stores(beside: bool = False) -> Settings:
    """Fresh stores (`beside`: without dropping the last run's, for its audit)."""
    # fresh_stores runs its own event loop: in a thread of its own.
    database_url, redis_url = await asyncio.to_thread(fresh_stores, Settings.from_env(), beside)
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admission="queue",
        admission_secret=SECRET,
        sale_seconds=SALE_S,
        sale_size=SIZE,
        user_limit=LIMIT,
    )


async def one_run(run: int) -> dict[str, Any]:
    settings = await stores()
    serve = [sys.executable, "-m", "notsale", "serve"]
    with running(serve, env_for(settings, {}), f"{URL}/health"):
        found = await scenario(settings, run)
        for key, value in found.items():
            if not key.startswith("_") and key != "report":
                print(f"  {key}: {value}", flush=True)
        # Forgeries against a real admission and ticket of this sale: a human's.
        admitted = found["_sample"]
        found["forgeries accepted"] = await forgeries(
            settings, found["sale"], admitted["admission"], admitted["user_id"], admitted["ticket"]
        )
        print(f"  forgeries accepted: {found['forgeries accepted']}", flush=True)
    return found


async def jwt_run() -> int:
    """The bot with 10 valid tokens for its 100 ids: the items it gets."""
    settings = await stores(beside=True)
    secret = "j" * 32
    tokens = [
        jwt.encode({"sub": f"bot{n}", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
        for n in range(10)
    ]
    env = env_for(
        settings,
        {"NOTSALE_IDENTITY": "jwt", "NOTSALE_JWT_SECRET": secret, "NOTSALE_ADMISSION": "open"},
    )
    with running([sys.executable, "-m", "notsale", "serve"], env, f"{URL}/health"):
        robot = Seen()
        await bot(current_sale(SALE_S), "127.3.0.1", robot, tokens)
    print(f"jwt, 10 tokens for 100 bot ids: the bot bought {robot.items} items")
    print(f"  answers: {dict(robot.statuses)}")
    return robot.items


async def main_async(runs: int) -> tuple[int, str]:
    """The exit status, and the last run's audit page."""
    results = []
    for run in range(1, runs + 1):
        results.append(await one_run(run))
    bot_positions = [p for r in results for p in r["_drawn"][0]]
    human_positions = [p for r in results for p in r["_drawn"][1]]
    d, p = ks(bot_positions, human_positions)
    print(f"over {runs} runs: bot vs human positions KS D {d:.3f}, p {p:.3f}")
    items = await jwt_run()
    return (0 if items <= 100 else 1), page(results[-1]["report"])


def main() -> int:
    global HUMANS, NAT, BOT_IDS
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="of each group's size")
    parser.add_argument("--html", type=Path, help="write the last run's audit page here")
    args = parser.parse_args()
    HUMANS, NAT, BOT_IDS = (max(1, round(n * args.scale)) for n in (HUMANS, NAT, BOT_IDS))
    status, html = asyncio.run(main_async(args.runs))
    if args.html:
        args.html.write_text(html)
    return status


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
