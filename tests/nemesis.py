"""A randomized nemesis run, in the spirit of Jepsen: a crowd buys while faults rain down.

`run_nemesis` starts a private Redis (AOF, fsync every second) behind a FaultProxy, a
FaultProxy in front of PostgreSQL, and one `notsale serve` that talks to both stores only
through the proxies. A crowd of buyers then checks out and purchases for a while, each buyer
never trying the same (user, item) pair twice, so that every checkout_attempts row can be
matched to the request that made it. Meanwhile a nemesis seeded by `seed` stalls, cuts and
slows the proxies, restarts Redis from its AOF and SIGKILLs granian workers. Then it heals
everything, waits until the outbox is written, stops the server with SIGTERM and checks what
PostgreSQL holds against what the crowd was answered (see `check`).

Used by tests/test_nemesis.py and `python -m bench.nemesis`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import coredis
import httpx
import msgspec

from notsale.config import Settings
from notsale.connections import connect
from notsale.recovery.reconcile import Reconciler
from notsale.store.flusher import CLAIM_EVERY_S, CLAIM_IDLE_MS
from notsale.store.pool import create_pool
from notsale.store.queries import PURCHASE_FIELDS
from notsale.store.rows import ATTEMPT_COLUMNS, AttemptRow, PurchaseRow
from tests.faultproxy import FaultProxy, through
from tests.redisserver import RedisServer
from tests.started import free_port
from tests.support import (
    SERVER_START_TIMEOUT_S,
    log_tail,
    server_env,
    spawn_server,
    until_healthy,
    workers_of,
)

# A request not answered within this long counts as unanswered (a hang, see `check`).
CLIENT_TIMEOUT_S = 10.0
# The nemesis acts every NEMESIS_EVERY_S (a uniform draw), each stall lasts STALL_S, each
# added delay DELAY_MS for DELAY_FOR_S.
NEMESIS_EVERY_S = (1.5, 3.0)
STALL_S = (0.5, 3.0)
DELAY_MS = (20, 200)
DELAY_FOR_S = (2.0, 5.0)
# One nemesis action ends within this long (a Redis restart waits for the new process).
ACTION_TIMEOUT_S = 30.0
BUYER_LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2)
TRANSPORT_BACKOFF_S = 0.05
# A purchase answered 503 or cut off is tried again (same code: safe) this often in all.
PURCHASE_TRIES = 3
PURCHASE_RETRY_S = (0.2, 0.6)
# After healing: /health must answer 200 this many times in a row, within HEAL_TIMEOUT_S.
HEALTHY_IN_A_ROW = 3
HEAL_TIMEOUT_S = 30.0
# Entries of a killed worker are claimed once idle for CLAIM_IDLE_MS (see flusher.py).
OUTBOX_DRAIN_S = CLAIM_IDLE_MS / 1000 + 2 * CLAIM_EVERY_S + 10
SIGTERM_WAIT_S = 30.0
# The sale must not roll over before the run is over (with this much to spare).
SALE_MARGIN_S = 600
HOLD_SECONDS = 60
# What a Redis rollback may lose, and so the rows docs/faults.md says it loses (counted as
# anomalies when their checkout was answered in such a window, as violations otherwise):
# - SIGKILLed with `appendfsync everysec`: Redis writes its AOF before it answers, and the
#   kernel keeps what was written, except while a background fsync runs late: then it holds
#   its AOF writes back for up to 2 s and answers meanwhile (redis.conf). So at most what it
#   answered in the 2 s before the kill, whatever the flusher had read by then.
# - restored from an older snapshot: everything it answered since the snapshot that no
#   flusher had written to PostgreSQL.
AOF_LOSS_S = 2.0
REDIS_KILLED = "restart-redis: SIGKILL"
# A PostgreSQL outage lasts from OUTAGE_S[0] to the larger of OUTAGE_S[1] and half the run
# (a 60 s run has outages of up to 30 s).
OUTAGE_S = (2.0, 8.0)
# At most this many violations of one kind are spelled out; the rest are counted.
EXAMPLES_PER_KIND = 10

# What an answered checkout's attempt row must say, by the status the client got.
OUTCOMES_BY_STATUS: dict[int, frozenset[str]] = {
    200: frozenset({"ok"}),
    400: frozenset({"invalid_request"}),
    404: frozenset({"item_not_found"}),
    409: frozenset({"item_sold", "item_held"}),
    410: frozenset({"sale_closed"}),
    429: frozenset({"user_limit"}),
    503: frozenset({"unavailable"}),
}
# The only statuses a well-formed checkout of an existing item may get (naming an older sale,
# 410 too: it sold out).
CHECKOUT_STATUSES = frozenset({200, 409, 429, 503})
NAMED_CHECKOUT_STATUSES = CHECKOUT_STATUSES | {410}
# What a purchase of a code just issued may get: 2xx, the contract's refusals, or 503.
PURCHASE_STATUSES = frozenset({200, 404, 409, 410, 429, 503})


class Checkout(msgspec.Struct, kw_only=True):
    """One POST /checkout as the crowd saw it."""

    user: str
    item: int
    sent_s: float  # since the crowd started
    took_s: float = 0.0
    status: int | None = None  # None: no answer (transport error or client timeout)
    error: str | None = None  # the body's "error", or the transport error's type
    code: str | None = None  # the code of a 200
    sale_id: int | None = None  # the sale of a 200
    named: int | None = None  # the sale the checkout named, if it named one


class Purchase(msgspec.Struct, kw_only=True):
    """The POST /purchase tries of one code (the checkout of `user`, `item` gave it)."""

    code: str
    user: str
    item: int
    sent_s: float
    answers: list[int | str] = msgspec.field(default_factory=list)  # status, or error type
    took_s: list[float] = msgspec.field(default_factory=list)  # of each try
    body: dict[str, Any] | None = None  # the body of the 200

    @property
    def ok(self) -> bool:
        return 200 in self.answers


class Event(msgspec.Struct):
    at_s: float  # since the crowd started
    what: str


class Report(msgspec.Struct, kw_only=True):
    seed: int
    seconds: float
    workers: int
    buyers: int
    sale_size: int
    user_limit: int
    sale_id: int = 0  # the sale running when the crowd started
    sale_ids: list[int] = msgspec.field(default_factory=list)  # and the next, if it crossed
    checkouts_sent: int = 0
    checkouts_answered: int = 0
    checkouts_unknown: int = 0  # transport errors + 503s: the client cannot tell
    transport_errors: int = 0
    timeouts: int = 0
    checkout_statuses: dict[str, int] = msgspec.field(default_factory=dict)
    slowest_checkout_s: float = 0.0
    purchases_sent: int = 0
    purchases_ok: int = 0  # answered 200
    purchase_answers: dict[str, int] = msgspec.field(default_factory=dict)
    slowest_purchase_s: float = 0.0
    rows: int = 0  # checkout_attempts
    purchases: int = 0  # purchases rows
    unavailable_rows: int = 0
    decided_rows: int = 0  # 503 rows whose request Redis decided after all
    decided: dict[str, int] = msgspec.field(default_factory=dict)
    rejects: int = 0  # outbox_rejects rows
    server_exit: int | None = None
    log_levels: dict[str, int] = msgspec.field(default_factory=dict)  # server log lines
    log_errors: dict[str, int] = msgspec.field(default_factory=dict)  # error lines by msg
    events: list[str] = msgspec.field(default_factory=list)
    # Since the crowd started: (from, to) of the answers a Redis rollback may have lost.
    redis_lost_s: list[tuple[float, float]] = msgspec.field(default_factory=list)
    anomalies: list[str] = msgspec.field(default_factory=list)  # worth a look, not failures
    violations: list[str] = msgspec.field(default_factory=list)
    log_dir: str = ""
    took_s: float = 0.0

    def summary(self) -> str:
        verdict = "PASS" if not self.violations else f"FAIL ({len(self.violations)} violations)"
        return (
            f"seed {self.seed}: {verdict}; checkouts sent {self.checkouts_sent}, answered"
            f" {self.checkouts_answered}, unknown {self.checkouts_unknown} (transport"
            f" {self.transport_errors}, timeouts {self.timeouts}); statuses"
            f" {self.checkout_statuses}; rows {self.rows}; purchases ok {self.purchases_ok}/"
            f"{self.purchases_sent}, stored {self.purchases}; 503 rows {self.unavailable_rows},"
            f" decided {self.decided_rows} {self.decided}; events {len(self.events)};"
            f" rejects {self.rejects}; server exit {self.server_exit};"
            f" slowest checkout {self.slowest_checkout_s:.2f} s, purchase"
            f" {self.slowest_purchase_s:.2f} s; {self.took_s:.0f} s in all"
        )


class Violations:
    """Violations by kind; `as_list` spells out EXAMPLES_PER_KIND of each and counts the rest."""

    def __init__(self) -> None:
        self._found: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, detail: str) -> None:
        self._found[kind].append(detail)

    def as_list(self) -> list[str]:
        out = []
        for kind, details in self._found.items():
            out += [f"{kind}: {d}" for d in details[:EXAMPLES_PER_KIND]]
            if len(details) > EXAMPLES_PER_KIND:
                out.append(f"{kind}: ... and {len(details) - EXAMPLES_PER_KIND} more")
        return out


# Setting up


def sale_seconds_for(run_s: float, now: float | None = None) -> int:
    """A sale length (from 1 h up) under which the running sale outlives the run."""
    now = time.time() if now is None else now
    need = run_s + SALE_MARGIN_S
    seconds = 3600
    while seconds - now % seconds < need:
        seconds += 600
    return seconds


def crossing_sale_seconds(run_s: float, now: float | None = None) -> int:
    """A sale length under which the next sale starts between 40 % and 60 % into the run."""
    now = time.time() if now is None else now
    seconds = max(10, int(run_s))
    while not 0.4 * run_s <= seconds - now % seconds <= 0.6 * run_s:
        seconds += 1
    return seconds


# The crowd


class Crowd:
    def __init__(
        self,
        base_url: str,
        sale_size: int,
        seed: int,
        deadline: float,
        *,
        prefix: str = "b",
        named: int | None = None,
    ) -> None:
        """Buyers are named `prefix` and a number: crowds of other prefixes may shop at once
        (at other servers, say). With `named`, a third of the checkouts name that sale (once
        the next one runs, the older sale is still open)."""
        self.base_url = base_url
        self.named = named
        self.prefix = prefix
        self.sale_size = sale_size
        self.seed = seed
        self.deadline = deadline
        self.started = time.monotonic()
        self.checkouts: list[Checkout] = []
        self.purchases: list[Purchase] = []
        # Shared: making one per client (httpx's default) costs ~30 ms of CPU each.
        self.tls = ssl.create_default_context()

    def since(self) -> float:
        return time.monotonic() - self.started

    async def run(self, buyers: int) -> None:
        await asyncio.gather(*(self.buyer(n) for n in range(buyers)))

    async def buyer(self, n: int) -> None:
        # A client of its own: one pool shared by the whole crowd costs the harness CPU per
        # request that grows with the number of connections (httpcore scans them all).
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=CLIENT_TIMEOUT_S, limits=BUYER_LIMITS, verify=self.tls
        ) as http:
            await self.shop(http, n)

    async def shop(self, http: httpx.AsyncClient, n: int) -> None:
        """Buyer b{n} checks out every item once, in a random order, buying what it gets;
        having tried them all, or at the limit, it goes on as b{n}.1, b{n}.2, ... (never a
        pair twice)."""
        rng = random.Random(f"{self.seed}:{self.prefix}:{n}")
        generation = 0
        while time.monotonic() < self.deadline:
            user = f"{self.prefix}{n}" + (f".{generation}" if generation else "")
            items = list(range(1, self.sale_size + 1))
            rng.shuffle(items)
            for item in items:
                if time.monotonic() >= self.deadline:
                    return
                named = self.named if self.named is not None and rng.random() < 1 / 3 else None
                checkout = await self.checkout(http, user, item, named)
                if checkout.code is not None:
                    await self.purchase(http, checkout, rng)
                elif checkout.status == 429:
                    break
                elif checkout.status is None:
                    # No server to answer (workers killed, being respawned): don't spin.
                    await asyncio.sleep(TRANSPORT_BACKOFF_S)
            generation += 1

    async def checkout(
        self, http: httpx.AsyncClient, user: str, item: int, named: int | None = None
    ) -> Checkout:
        record = Checkout(user=user, item=item, sent_s=self.since(), named=named)
        self.checkouts.append(record)
        params: dict[str, str | int] = {"user_id": user, "id": item}
        if named is not None:
            params["sale_id"] = named
        try:
            response = await http.post("/checkout", params=params)
        except httpx.TransportError as exc:
            record.error = type(exc).__name__
        else:
            record.status = response.status_code
            body = body_of(response)
            if response.status_code == 200:
                record.code = str(body.get("code"))
                record.sale_id = int(body.get("sale_id", 0))
            else:
                record.error = str(body.get("error"))
        record.took_s = self.since() - record.sent_s
        return record

    async def purchase(
        self, http: httpx.AsyncClient, checkout: Checkout, rng: random.Random
    ) -> None:
        assert checkout.code is not None
        record = Purchase(
            code=checkout.code, user=checkout.user, item=checkout.item, sent_s=self.since()
        )
        self.purchases.append(record)
        for attempt in range(PURCHASE_TRIES):
            if attempt:
                await asyncio.sleep(rng.uniform(*PURCHASE_RETRY_S))
            started = time.monotonic()
            try:
                response = await http.post("/purchase", params={"code": checkout.code})
            except httpx.TransportError as exc:
                record.answers.append(type(exc).__name__)
                record.took_s.append(round(time.monotonic() - started, 3))
            else:
                record.answers.append(response.status_code)
                record.took_s.append(round(time.monotonic() - started, 3))
                if response.status_code == 200:
                    record.body = body_of(response)
                    return
                if response.status_code != 503:
                    return
            if time.monotonic() >= self.deadline:
                return


def body_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": f"not JSON: {response.text[:80]!r}"}
    return body if isinstance(body, dict) else {"error": f"not an object: {body!r:.80}"}


# The nemesis


class Nemesis:
    """Draws one fault every NEMESIS_EVERY_S from its own seeded Random, logs it, and always
    heals what it did (stalls end by themselves; delays and Redis are healed by `heal`)."""

    KINDS = (
        "stall-redis",
        "cut-redis",
        "hang-redis",
        "stall-postgres",
        "cut-postgres",
        "refuse-postgres",
        "restart-redis",
        "rollback-redis",
        "kill-worker",
        "delay",
    )

    def __init__(
        self,
        seed: int,
        redis: RedisServer,
        redis_proxy: FaultProxy,
        pg_proxy: FaultProxy,
        server: subprocess.Popen[bytes],
        since: Callable[[], float],
        seconds: float,
    ) -> None:
        self.rng = random.Random(seed)
        self.outage_s = (OUTAGE_S[0], max(OUTAGE_S[1], seconds / 2))
        self.redis = redis
        # rollback-redis: the snapshot taken at its first draw (path, when) and restored at
        # the next; the answers each rollback may have lost.
        self.snapshot: tuple[str, float] | None = None
        self.lost: list[tuple[float, float]] = []
        self.proxies = {"redis": redis_proxy, "postgres": pg_proxy}
        self.server = server
        self.since = since
        self.events: list[Event] = []
        self._undelays: set[asyncio.Task[None]] = set()

    def log(self, what: str) -> None:
        self.events.append(Event(round(self.since(), 2), what))

    async def run(self, deadline: float) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(*NEMESIS_EVERY_S))
            if time.monotonic() >= deadline:
                return
            # Every draw is made up front, whatever the action then meets, so a seed always
            # gives the same sequence of faults.
            kind = self.rng.choice(self.KINDS)
            stall_s = self.rng.uniform(*STALL_S)
            delay_ms = self.rng.randint(*DELAY_MS)
            delay_for_s = self.rng.uniform(*DELAY_FOR_S)
            target = self.rng.choice(sorted(self.proxies))
            victim = self.rng.random()
            outage_s = self.rng.uniform(*self.outage_s)
            try:
                async with asyncio.timeout(ACTION_TIMEOUT_S + outage_s):
                    await self.act(kind, stall_s, delay_ms, delay_for_s, target, victim, outage_s)
            except Exception as exc:  # the run goes on; the failure is in the log
                self.log(f"{kind} failed: {exc!r}")
            if self.server.poll() is not None:
                self.log(f"the server exited (status {self.server.returncode})")
                return

    async def act(
        self,
        kind: str,
        stall_s: float,
        delay_ms: int,
        delay_for_s: float,
        target: str,
        victim: float,
        outage_s: float,
    ) -> None:
        if kind == "hang-redis":
            self.log(f"hang-redis: SIGSTOP for {stall_s:.2f} s")
            self.redis.hang()
            try:
                await asyncio.sleep(stall_s)
            finally:
                self.redis.wake()
                self.log("hang-redis: SIGCONT")
        elif kind == "refuse-postgres":
            self.log(f"refuse-postgres for {outage_s:.2f} s")
            await asyncio.to_thread(self.proxies["postgres"].refuse)
            try:
                await asyncio.sleep(outage_s)
            finally:
                await asyncio.to_thread(self.proxies["postgres"].refuse, False)
                self.log("refuse-postgres over")
        elif kind == "rollback-redis" and self.snapshot is None:
            path = os.path.join(self.redis.dir, "older.rdb")
            await asyncio.to_thread(self.redis.snapshot, path)
            self.snapshot = (path, self.since())
            self.log("rollback-redis: snapshot taken")
        elif kind == "rollback-redis":
            (path, taken_s), self.snapshot = self.snapshot, None
            self.log("rollback-redis: SIGKILL, then started from the older snapshot")
            await asyncio.to_thread(self.redis.restore, path)
            self.lost.append((taken_s, self.since()))  # up to the kill, which came after the log
        elif kind in ("stall-redis", "stall-postgres"):
            proxy = self.proxies[kind.removeprefix("stall-")]
            self.log(f"{kind} for {stall_s:.2f} s")
            await asyncio.to_thread(proxy.stall)
            try:
                await asyncio.sleep(stall_s)
            finally:
                await asyncio.to_thread(proxy.resume)
                self.log(f"{kind} over")
        elif kind in ("cut-redis", "cut-postgres"):
            self.log(kind)
            await asyncio.to_thread(self.proxies[kind.removeprefix("cut-")].cut)
        elif kind == "restart-redis":
            killed_s = self.since()
            self.log(REDIS_KILLED)
            await asyncio.to_thread(self.redis.restart)
            self.lost.append((killed_s - AOF_LOSS_S, self.since()))
            self.log("restart-redis: started again from its AOF")
        elif kind == "kill-worker":
            workers = await asyncio.to_thread(workers_of, self.server.pid)
            if not workers:
                self.log("kill-worker: none up (granian is restarting)")
                return
            pid = workers[int(victim * len(workers))]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.log(f"kill-worker {pid} (of {workers})")
        else:
            proxy = self.proxies[target]
            self.log(f"delay {target} {delay_ms} ms for {delay_for_s:.2f} s")
            await asyncio.to_thread(proxy.delay, delay_ms / 1000)
            task = asyncio.create_task(self._undelay(target, delay_for_s))
            self._undelays.add(task)
            task.add_done_callback(self._undelays.discard)

    async def _undelay(self, target: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        await asyncio.to_thread(self.proxies[target].delay, 0)
        self.log(f"delay {target} over")

    async def heal(self) -> None:
        for task in list(self._undelays):
            task.cancel()
        await asyncio.gather(*self._undelays, return_exceptions=True)
        for proxy in self.proxies.values():
            await asyncio.to_thread(heal_proxy, proxy)
        if self.redis.process is None or self.redis.process.poll() is not None:
            await asyncio.to_thread(self.redis.start)
            self.log("heal: Redis started again")
        self.log("healed")


def heal_proxy(proxy: FaultProxy) -> None:
    proxy.resume()
    proxy.delay(0)
    proxy.refuse(False)


# After the run


async def outbox_backlog(redis_url: str) -> int:
    async with connect(redis_url) as redis:
        return sum([await redis.xlen(key) for key in await redis.keys("*:outbox")])


async def wait_drained(redis_url: str, timeout: float) -> int:
    """Waits until every outbox stream is empty; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = await outbox_backlog(redis_url)
        except (coredis.exceptions.RedisError, OSError):
            left = -1
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


async def stop_server(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM and wait; None if it did not exit within SIGTERM_WAIT_S."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(process.wait, SIGTERM_WAIT_S)
    except subprocess.TimeoutExpired:
        return None


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    else:
        # Workers outlive a main process that died: end the whole group anyway.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def scan_log(log_path: str) -> tuple[dict[str, int], dict[str, int]]:
    """Lines by level, and error (and critical) lines by message, of the server's log."""
    levels: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with open(log_path, errors="replace") as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                levels["other"] += 1
                if "Traceback" in line or "ERROR" in line:
                    errors[line.strip()[:120]] += 1
                continue
            if not isinstance(entry, dict):
                levels["other"] += 1
                continue
            level = str(entry.get("level", "?"))
            levels[level] += 1
            if level in ("error", "critical"):
                errors[str(entry.get("msg", ""))[:120]] += 1
    return dict(levels), dict(errors)


def write_records(log_dir: Path, crowd: Crowd, events: list[Event], report: Report) -> None:
    encoder = msgspec.json.Encoder()
    with open(log_dir / "checkouts.jsonl", "wb") as out:
        for c in crowd.checkouts:
            out.write(encoder.encode(c) + b"\n")
    with open(log_dir / "purchases.jsonl", "wb") as out:
        for p in crowd.purchases:
            out.write(encoder.encode(p) + b"\n")
    with open(log_dir / "events.log", "w") as out:
        out.writelines(f"{e.at_s:7.2f} s  {e.what}\n" for e in events)
    (log_dir / "report.json").write_bytes(msgspec.json.format(encoder.encode(report)))


# The checker


async def read_rows(database_url: str) -> tuple[list[AttemptRow], list[PurchaseRow], int]:
    conn = await asyncpg.connect(database_url)
    try:
        columns = ", ".join(ATTEMPT_COLUMNS)
        attempts = [
            AttemptRow(*r) for r in await conn.fetch(f"SELECT {columns} FROM checkout_attempts")
        ]
        query = f"SELECT {PURCHASE_FIELDS} FROM purchases"
        purchases = [PurchaseRow(*r) for r in await conn.fetch(query)]
        rejects = int(await conn.fetchval("SELECT count(*) FROM outbox_rejects"))
    finally:
        await conn.close()
    return attempts, purchases, rejects


def check(
    report: Report,
    checkouts: list[Checkout],
    purchases: list[Purchase],
    attempts: list[AttemptRow],
    stored: list[PurchaseRow],
) -> list[str]:
    """What PostgreSQL holds against what the crowd was answered; fills the report's counts
    and returns the violations (empty: the run kept every promise)."""
    found = Violations()
    report.sale_ids = report.sale_ids or [report.sale_id]
    check_answers(report, checkouts, purchases, found)
    check_purchases(report, checkouts, purchases, attempts, stored, found)
    check_attempts(report, checkouts, attempts, found)
    check_refusals(report, checkouts, attempts, stored, found)
    return found.as_list()


def check_refusals(
    report: Report,
    checkouts: list[Checkout],
    attempts: list[AttemptRow],
    stored: list[PurchaseRow],
    found: Violations,
) -> None:
    """Every 409 `item_sold`, 410 `sale_closed` and 429 `user_limit` justified by what the rows
    say: the item is stored as bought, the sale sold out (unless a purchase may have been lost
    with Redis); the user had checked out as many items as the limit before in that sale
    (holds outlive the run, so each counted then). Redis deciding on lost or extra state
    would refuse what the rows do not justify."""
    sold = {(s.sale_id, s.item_id) for s in stored}
    sold_out = {
        sale for sale, n in Counter(s.sale_id for s in stored).items() if n >= report.sale_size
    }
    sale_of = {(a.user_id, a.item_id): a.sale_id for a in attempts}
    # The holds each user was given: answered 200 (and when), or made as a row says while the
    # client never saw the 200 (its answer was lost, or it was 503 and decided ok after all).
    # Each per sale, the sale a row names (a refusal's row is the only record of its sale).
    answered: dict[tuple[int, str], list[tuple[float, int]]] = defaultdict(list)
    for c in checkouts:
        if c.status == 200 and c.sale_id is not None:
            answered[(c.sale_id, c.user)].append((c.sent_s + c.took_s, c.item))
    unseen: dict[tuple[int, str], set[int]] = defaultdict(set)
    for row in attempts:
        if "ok" in (row.outcome, row.decided) and row.item_id is not None:
            unseen[(row.sale_id, row.user_id)].add(row.item_id)
    for c in checkouts:
        done_s = c.sent_s + c.took_s
        sale = sale_of.get((c.user, c.item))
        if sale is None:
            continue  # no row: check_attempts says whether that is allowed
        if c.status == 410 and sale not in sold_out and not lost_with_redis(report, done_s):
            found.add(
                "unjustified", f"checkout {c.user} {c.item}: sale {sale} closed, not sold out"
            )
        elif c.status == 409 and c.error == "item_sold" and (sale, c.item) not in sold:
            if not lost_with_redis(report, done_s):
                found.add("unjustified", f"checkout {c.user} {c.item}: item_sold, not stored")
        elif c.status == 429 and c.error == "user_limit":
            mine = answered[(sale, c.user)]
            held = {item for at, item in mine if at <= done_s} | unseen[(sale, c.user)]
            if len(held) < report.user_limit:
                found.add(
                    "unjustified", f"checkout {c.user} {c.item}: user_limit with {len(held)} held"
                )


def check_answers(
    report: Report, checkouts: list[Checkout], purchases: list[Purchase], found: Violations
) -> None:
    """Only the contract's statuses, each with its error code; no request left hanging."""
    report.checkouts_sent = len(checkouts)
    answered = [c for c in checkouts if c.status is not None]
    report.checkouts_answered = len(answered)
    report.transport_errors = len(checkouts) - len(answered)
    report.timeouts = sum(1 for c in checkouts if c.error is not None and "Timeout" in c.error)
    report.checkouts_unknown = report.transport_errors + sum(1 for c in answered if c.status == 503)
    report.checkout_statuses = {
        str(k): v for k, v in sorted(Counter(c.status or 0 for c in checkouts).items())
    }
    report.slowest_checkout_s = round(max((c.took_s for c in answered), default=0.0), 3)
    for c in answered:
        assert c.status is not None
        if c.status not in (CHECKOUT_STATUSES if c.named is None else NAMED_CHECKOUT_STATUSES):
            found.add("unexpected status", f"checkout {c.user} {c.item}: {c.status} {c.error}")
        elif c.status != 200 and c.error not in OUTCOMES_BY_STATUS[c.status]:
            found.add("body", f"checkout {c.user} {c.item}: {c.status} with error {c.error!r}")
    for c in checkouts:
        if c.error is not None and "Timeout" in c.error:
            found.add("hang", f"checkout {c.user} {c.item} sent at {c.sent_s:.2f} s: {c.error}")
    report.purchases_sent = len(purchases)
    report.purchases_ok = sum(1 for p in purchases if p.ok)
    report.purchase_answers = {
        str(k): v for k, v in sorted(Counter(str(a) for p in purchases for a in p.answers).items())
    }
    report.slowest_purchase_s = max((t for p in purchases for t in p.took_s), default=0.0)
    # A code tried at once is bought (200) or not known yet (503); a refusal means Redis
    # lost the hold or the sale: allowed, but worth a look.
    refused = Counter(
        answer
        for p in purchases
        for answer in p.answers
        if answer in PURCHASE_STATUSES - {200, 503}
    )
    report.anomalies += [f"{n} purchases of fresh codes answered {a}" for a, n in refused.items()]
    for p in purchases:
        for answer in p.answers:
            if isinstance(answer, int) and answer not in PURCHASE_STATUSES:
                found.add("unexpected status", f"purchase {p.code} ({p.user} {p.item}): {answer}")
            elif isinstance(answer, str) and "Timeout" in answer:
                found.add("hang", f"purchase {p.code} ({p.user} {p.item}) sent at {p.sent_s:.2f} s")
        bought = None if p.body is None else (p.body.get("user_id"), p.body.get("item_id"))
        if bought is not None and bought != (p.user, p.item):
            found.add("purchase body", f"{p.code} of {p.user} {p.item} answered {p.body}")


def lost_with_redis(report: Report, answered_s: float) -> bool:
    """Whether a checkout answered then may have lost its outbox entry with a Redis rollback."""
    return any(start <= answered_s <= end for start, end in report.redis_lost_s)


def check_purchases(
    report: Report,
    checkouts: list[Checkout],
    purchases: list[Purchase],
    attempts: list[AttemptRow],
    stored: list[PurchaseRow],
    found: Violations,
) -> None:
    """Sold <= stock, every user within the limit, every 200 stored, nothing else stored."""
    report.purchases = len(stored)
    for sale, n in Counter(s.sale_id for s in stored).items():
        if n > report.sale_size:
            found.add("oversold", f"{n} purchases of {report.sale_size} items in sale {sale}")
    for s in stored:
        if not 1 <= s.item_id <= report.sale_size:
            found.add("oversold", f"item {s.item_id} is not in the sale: {s}")
        if s.sale_id not in report.sale_ids:
            found.add("sale", f"purchase in sale {s.sale_id}, not {report.sale_ids}: {s}")
    items = Counter((s.sale_id, s.item_id) for s in stored)
    for item, n in items.items():
        if n > 1:
            found.add("oversold", f"item {item} stored {n} times")
    for (sale, user), n in Counter((s.sale_id, s.user_id) for s in stored).items():
        if n > report.user_limit:
            found.add("user limit", f"{user} bought {n} items in sale {sale}")
    by_code = {s.code: s for s in stored}
    for p in purchases:
        if not p.ok:
            continue
        kept = by_code.get(p.code)
        if kept is None:
            found.add("lost purchase", f"{p.code} ({p.user} {p.item}) answered 200, not stored")
        elif (kept.user_id, kept.item_id) != (p.user, p.item):
            found.add("lost purchase", f"{p.code} of {p.user} {p.item} stored as {kept}")
    tried = {p.code for p in purchases}
    issued = {a.code for a in attempts if a.code is not None}
    issued_at = {c.code: c.sent_s + c.took_s for c in checkouts if c.code is not None}
    for s in stored:
        if s.code not in tried:
            found.add("phantom purchase", f"stored, never sent to /purchase: {s}")
        if s.code in issued:
            continue
        if s.code in issued_at and lost_with_redis(report, issued_at[s.code]):
            report.anomalies.append(f"row of the checkout that issued {s.code} lost with Redis")
        else:
            # A phantom too when its checkout was never sent; alone, the sign of a lost row.
            found.add("orphan purchase", f"stored, no attempt row issued its code: {s}")


def check_attempts(
    report: Report, checkouts: list[Checkout], attempts: list[AttemptRow], found: Violations
) -> None:
    """One row per answered checkout saying what the client was answered, at most one per
    unanswered one, none for anything never sent."""
    sent = {(c.user, c.item): c for c in checkouts}
    assert len(sent) == len(checkouts), "the crowd sent a (user, item) pair twice"
    answered = [c for c in checkouts if c.status is not None]
    report.rows = len(attempts)
    report.unavailable_rows = sum(1 for a in attempts if a.outcome == "unavailable")
    report.decided_rows = sum(1 for a in attempts if a.decided is not None)
    report.decided = dict(Counter(a.decided for a in attempts if a.decided is not None))
    rows_of: dict[tuple[str, int | None], list[AttemptRow]] = defaultdict(list)
    for row in attempts:
        rows_of[(row.user_id, row.item_id)].append(row)
        if row.decided is not None and row.outcome != "unavailable":
            found.add("decided", f"row {row.id} says {row.outcome} and decided {row.decided}")
        if row.sale_id not in report.sale_ids:
            found.add("sale", f"row {row.id} in sale {row.sale_id}, not {report.sale_ids}")
    for pair, rows in rows_of.items():
        if len(rows) > 1:
            found.add("duplicate rows", f"{pair}: {[(r.id, r.outcome) for r in rows]}")
        if pair not in sent:
            found.add("phantom row", f"{pair} never sent: {[(r.id, r.outcome) for r in rows]}")
    for c in answered:
        assert c.status is not None
        rows = rows_of.get((c.user, c.item), [])
        if len(rows) != 1:
            if not rows and lost_with_redis(report, c.sent_s + c.took_s):
                report.anomalies.append(f"row of checkout {c.user} {c.item} lost with Redis")
            elif not rows:
                found.add(
                    "missing row",
                    f"checkout {c.user} {c.item} sent at {c.sent_s:.2f} s, answered {c.status}"
                    f" {c.error or ''} after {c.took_s:.2f} s: no row",
                )
            continue
        row = rows[0]
        expected = OUTCOMES_BY_STATUS.get(c.status, frozenset())
        if c.status != 200 and c.error in expected:
            expected = frozenset({c.error})
        if row.outcome not in expected:
            found.add(
                "outcome",
                f"checkout {c.user} {c.item} sent at {c.sent_s:.2f} s answered {c.status}"
                f" {c.error or ''}, row {row.id} says {row.outcome} (decided {row.decided})",
            )
        elif c.status == 200 and (row.code, row.sale_id) != (c.code, c.sale_id):
            found.add(
                "outcome",
                f"checkout {c.user} {c.item}: code {c.code} of sale {c.sale_id}, row has"
                f" {row.code} of sale {row.sale_id}",
            )


async def differences(
    redis_url: str, database_url: str, settings: Settings, sale_id: int
) -> list[str]:
    """Where Redis and PostgreSQL disagree on the sale (`notsale reconcile --check`)."""
    pool = await create_pool(database_url)
    try:
        async with connect(redis_url) as redis:
            found = await Reconciler(redis, pool, settings).differences(sale_id)
    finally:
        await pool.close()
    return [f"{d.what}: {d.detail}" for d in found]


async def settle(base_url: str, sale_id: int) -> None:
    """A purchase of a made-up code: if Redis restarted since its last decision, it makes the
    service rebuild the sale, as the next buyer would."""
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as http:
        await http.post("/purchase", params={"code": "settle" * 4 + str(sale_id)})


# The run


async def run_nemesis(
    seed: int,
    seconds: float,
    database_url: str,
    *,
    workers: int = 2,
    buyers: int = 60,
    sale_size: int = 300,
    user_limit: int = 5,
    log_dir: str,
    cross: bool = False,
) -> Report:
    """One nemesis run against a migrated, empty database; see the module's docstring.
    `cross`: the next sale starts mid-run, the older one stays open, and a third of the
    checkouts name the older one."""
    began = time.monotonic()
    logs = Path(log_dir)
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    report = Report(
        seed=seed,
        seconds=seconds,
        workers=workers,
        buyers=buyers,
        sale_size=sale_size,
        user_limit=user_limit,
        log_dir=str(logs),
    )
    violations = Violations()
    pg_port = urlsplit(database_url).port or 5432
    redis = RedisServer(aof=True)
    redis_proxy = FaultProxy("127.0.0.1", redis.port)
    pg_proxy = FaultProxy("127.0.0.1", pg_port)
    process: subprocess.Popen[bytes] | None = None
    tasks: list[asyncio.Task[None]] = []
    crowd: Crowd | None = None
    nemesis: Nemesis | None = None
    try:
        await asyncio.to_thread(redis.start)
        redis_proxy.start()
        pg_proxy.start()
        outlive_s = seconds + OUTBOX_DRAIN_S + 120
        if cross:
            sale_seconds = crossing_sale_seconds(seconds)
            open_seconds = sale_seconds * (2 + int(outlive_s // sale_seconds))
        else:
            # The sale under test closes when the next starts, after the run.
            sale_seconds = open_seconds = sale_seconds_for(outlive_s)
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0",
            database_url=through(database_url, pg_proxy),
            host="127.0.0.1",
            port=free_port(),
            workers=workers,
            sale_seconds=sale_seconds,
            sale_open_seconds=open_seconds,
            sale_size=sale_size,
            user_limit=user_limit,
            hold_seconds=HOLD_SECONDS,
        )
        report.sale_id = int(time.time() // sale_seconds)
        report.sale_ids = [report.sale_id, report.sale_id + 1] if cross else [report.sale_id]
        base_url = f"http://{settings.host}:{settings.port}"
        log_path = str(logs / "server.log")
        process = spawn_server(server_env(settings), log_path)
        if not await until_healthy(base_url, process, SERVER_START_TIMEOUT_S, HEALTHY_IN_A_ROW):
            raise RuntimeError(f"server did not become healthy:\n{log_tail(log_path)}")

        named = report.sale_id if cross else None
        crowd = Crowd(base_url, sale_size, seed, time.monotonic() + seconds, named=named)
        nemesis = Nemesis(seed, redis, redis_proxy, pg_proxy, process, crowd.since, seconds)
        tasks = [
            asyncio.create_task(crowd.run(buyers)),
            asyncio.create_task(nemesis.run(crowd.deadline)),
        ]
        # Both end by themselves: the crowd within a client timeout of its deadline, the
        # nemesis within an action's timeout.
        await asyncio.gather(*tasks)
        await nemesis.heal()
        if process.poll() is not None:
            # Nothing left to heal or drain: what PostgreSQL holds now is all there is.
            report.server_exit = process.returncode
            violations.add("server down", f"exited with {process.returncode} during the run")
        else:
            if not await until_healthy(base_url, process, HEAL_TIMEOUT_S, HEALTHY_IN_A_ROW):
                violations.add("no recovery", f"/health not 200 {HEAL_TIMEOUT_S} s after healing")
            for sale in report.sale_ids:
                await settle(base_url, sale)
            left = await wait_drained(redis.url, OUTBOX_DRAIN_S)
            if left:
                violations.add("outbox", f"{left} entries still unwritten after {OUTBOX_DRAIN_S} s")
            nemesis.log(f"outbox drained ({left} left)")
            report.server_exit = await stop_server(process)
            nemesis.log(f"server stopped (exit {report.server_exit})")
            if report.server_exit != 0:
                violations.add("shutdown", f"SIGTERM: exit {report.server_exit} (None: still up)")

        attempts, stored, report.rejects = await read_rows(database_url)
        # Redis holds what PostgreSQL stored, both ways, once the service rebuilt the sale
        # by itself; no entry PostgreSQL would take is kept aside.
        unequal = [
            f"sale {sale}: {d}"
            for sale in report.sale_ids
            for d in await differences(redis.url, database_url, settings, sale)
        ]
        report.events = [f"{e.at_s:7.2f} s  {e.what}" for e in nemesis.events]
        report.redis_lost_s = nemesis.lost
        found = check(report, crowd.checkouts, crowd.purchases, attempts, stored)
        report.violations = violations.as_list() + found + [f"stores: {d}" for d in unequal]
        report.log_levels, report.log_errors = await asyncio.to_thread(scan_log, log_path)
        return report
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await teardown(
            process,
            [redis_proxy.close, pg_proxy.close],
            redis,
            logs,
        )
        report.took_s = round(time.monotonic() - began, 1)
        if crowd is not None:
            events = nemesis.events if nemesis is not None else []
            await asyncio.to_thread(write_records, logs, crowd, events, report)


async def teardown(
    process: subprocess.Popen[bytes] | None,
    closers: list[Callable[[], None]],
    redis: RedisServer,
    logs: Path,
) -> None:
    """Everything the run started is stopped, whatever failed before or fails here."""
    steps: list[Callable[[], Any]] = []
    if process is not None:
        steps.append(lambda: kill_group(process))
    steps += closers
    steps.append(lambda: copy_redis_log(redis, logs))
    steps.append(redis.close)
    for step in steps:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(step)


def copy_redis_log(redis: RedisServer, logs: Path) -> None:
    source = Path(redis.dir) / "redis.log"
    if source.exists():
        shutil.copyfile(source, logs / "redis.log")
