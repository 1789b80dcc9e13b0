"""The whole benchmark set, one run, one table: `python -m bench.run` (scripts/bench).

Every figure comes from this run on this machine: throughput is given as a ratio to a bare
ASGI hello-world served by the same granian settings a moment before, because absolute
numbers wander from run to run on a shared 2-core machine. Each notsale measurement gets a
fresh sale (its own database and Redis DB index), so runs never see each other's stock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.probe import probe
from bench.probe import summary as probe_summary
from notsale.config import Settings, redis_cluster
from notsale.connections import connect
from notsale.store.migrations import migrate, with_path
from tests.rediscluster import RedisCluster, cli

REPO = Path(__file__).resolve().parents[1]
WRK = REPO / "bench" / "wrk"
PORT = 8099
BENCH_REDIS_DB = 15  # the Redis DB index benchmarks flush and use
CONNECTIONS = 64
HELLO = "hello-world (bare ASGI)"
ONE_BUYER = 300  # sequential requests of each kind
REDIS_FLOOR = "hello-world + one Redis round trip"
COMMIT = "one PostgreSQL commit"
# Open buyers' pages polling during the VIEWED run, each as notsale/web/index.html does.
VIEWERS = 50
VIEW_POLL_S = 2.0
VIEW_PAGE = 60
WRK_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_COUNT = re.compile(r"(\d+) requests in")
LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
CHECKOUT = "checkout (stampede, random items)"
NO_METRICS = "checkout, NOTSALE_METRICS=0"
VIEWED = f"checkout, {VIEWERS} buyers' pages open"
# (label, wrk script, script arguments, extra settings) of the notsale runs.
MODES: tuple[tuple[str, str, tuple[str, ...], dict[str, str]], ...] = (
    (CHECKOUT, "checkout.lua", (), {}),
    ("purchase (each waits for its commit)", "purchase.lua", ("200",), {}),
    ("mix (checkout, then purchase on 200)", "mix.lua", (), {}),
    # What recording metrics costs the hot path: the same run with them off.
    (NO_METRICS, "checkout.lua", (), {"NOTSALE_METRICS": "0"}),
    # What the buyers' page costs the hot path: the same run while pages poll.
    (VIEWED, "checkout.lua", (), {}),
)


def fresh_stores(base: Settings, beside: bool = False) -> tuple[str, str]:
    """A new empty, migrated database and an empty Redis DB index, as URLs; `beside`: a
    second set, for a server run beside the first (made after it: the first drops old ones)."""
    name = f"notsale_bench_{int(time.time())}{'_beside' if beside else ''}"

    async def drop_old() -> None:
        admin = await asyncpg.connect(base.database_url)
        try:
            for old in await admin.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'notsale_bench_%'"
            ):
                await admin.execute(f'DROP DATABASE "{old["datname"]}" WITH (FORCE)')
        finally:
            await admin.close()

    if not beside:
        asyncio.run(drop_old())
    database_url = with_path(base.database_url, "/" + name)
    asyncio.run(migrate(database_url))  # creates it
    redis_url = with_path(base.redis_url, f"/{BENCH_REDIS_DB - 1 if beside else BENCH_REDIS_DB}")

    async def flush() -> None:
        async with connect(redis_url) as redis:
            await redis.flushdb()

    asyncio.run(flush())
    return database_url, redis_url


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


def checkout_of(rev: str, stack: contextlib.ExitStack) -> Path:
    """This repository at `rev`, cloned into a directory removed when `stack` closes."""
    where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="notsale-")))
    subprocess.run(["git", "clone", "-q", str(REPO), str(where)], check=True)
    subprocess.run(["git", "-C", str(where), "checkout", "-q", rev], check=True)
    return where


@contextmanager
def running(
    cmd: list[str], env: dict[str, str], ready: str, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_up(ready)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def worker_pids(server: subprocess.Popen[bytes]) -> list[str]:
    return subprocess.run(
        ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
    ).stdout.split()


def worker_rss_mb(server: subprocess.Popen[bytes]) -> float:
    rss = [
        int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096 for pid in worker_pids(server)
    ]
    return max(rss) / 2**20 if rss else 0.0


def cpu_s(pids: Iterable[str]) -> float:
    """CPU time (user + system) the processes have used so far (those gone count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_cpu_s(server: subprocess.Popen[bytes]) -> float:
    """CPU time the server's workers have used so far."""
    return cpu_s(worker_pids(server))


def named_pids(name: str) -> list[str]:
    return subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()


@contextmanager
def cpu_budget(server: subprocess.Popen[bytes]) -> Iterator[dict[str, float]]:
    """The CPU seconds each part of the machine spends meanwhile: the server (granian's
    process and its workers), Redis, PostgreSQL, and the load driver (children of this
    process that ended: wrk)."""

    def now() -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "server": cpu_s([str(server.pid), *worker_pids(server)]),
            "Redis": cpu_s(named_pids("redis-server")),
            "PostgreSQL": cpu_s(named_pids("postgres")),
            "wrk": children.ru_utime + children.ru_stime,
        }

    before, spent = now(), {}
    yield spent
    spent.update({part: used - before[part] for part, used in now().items()})


def budget_us(spent: dict[str, float], requests: float) -> dict[str, float]:
    return {f"{part} µs": used / requests * 1e6 for part, used in spent.items()}


@contextmanager
def viewers(url: str, count: int) -> Iterator[list[int]]:
    """`count` buyers' pages open meanwhile: each polls the open sales and its grid page
    every VIEW_POLL_S. Yields the list their answers' statuses are counted in."""
    stop = threading.Event()
    answered: list[int] = []
    sale = httpx.get(url + "/sales/current").json()["sale_id"]

    def page() -> None:
        with httpx.Client(base_url=url, timeout=5) as http:
            while not stop.wait(VIEW_POLL_S):
                sales = http.get("/sales")
                grid = http.get(f"/sales/{sale}/items", params={"count": VIEW_PAGE})
                answered.extend((sales.status_code, grid.status_code))

    threads = [threading.Thread(target=page, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield answered
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def wrk(url: str, seconds: int, script: str | None = None, *args: str) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(WRK / script)]
    out = subprocess.run(
        [*cmd, url, *(["--", *args] if args else [])], capture_output=True, text=True, check=True
    ).stdout
    rps, count = WRK_LINE.search(out), WRK_COUNT.search(out)
    lat = {p: float(v) * UNIT_MS[u] for p, v, u in LATENCY.findall(out)}
    return {
        "seconds": float(seconds),
        "rps": float(rps[1]) if rps else 0.0,
        "p50": lat.get("50", 0),
        "p99": lat.get("99", 0),
        "requests": float(count[1]) if count else 0.0,
    }


def attempts_drain_s(database_url: str, requests: float) -> float:
    """Seconds after the load stopped until checkout_attempts holds every answered request."""

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM checkout_attempts"))
        finally:
            await conn.close()

    started = time.monotonic()
    while asyncio.run(count()) < requests and time.monotonic() - started < 60:
        time.sleep(0.05)
    return time.monotonic() - started


def ab(setting: str, pairs: int, run: Callable[[dict[str, str]], dict[str, float]]) -> int:
    """Paired runs: the ratio within each pair is steadier than medians of separate runs
    (this machine's speed drifts by more than the costs measured here)."""
    name, _, value = setting.partition("=")
    rps, cpu = [], []
    for pair in range(pairs):
        order = [{}, {name: value}] if pair % 2 == 0 else [{name: value}, {}]
        served, changed = (run(extra) for extra in order)
        if pair % 2:
            served, changed = changed, served
        rps.append(served["rps"] / changed["rps"])
        cpu.append(served["cpu_us"] / changed["cpu_us"])
        print(f"pair {pair + 1}: req/s x{rps[-1]:.3f}, worker CPU per request x{cpu[-1]:.3f}")
    print(
        f"checkout as served / with {setting}, median of {pairs} pairs:"
        f" req/s x{median(rps):.3f}, worker CPU per request x{median(cpu):.3f}"
    )
    return 0


def redis_ports(redis_url: str) -> list[int]:
    cluster = redis_cluster(redis_url)
    if cluster is not None:
        return [port for _, port in cluster.nodes]
    return [urlsplit(redis_url).port or 6379]


def redis_stats(ports: list[int]) -> tuple[float, int, float]:
    """CPU seconds the Redis servers on `ports` have used, and their EVALSHA calls and
    microseconds in them (INFO commandstats: sale.lua runs, mostly)."""
    cpu, calls, usec = 0.0, 0, 0.0
    for port in ports:
        info = dict(
            line.split(":", 1) for line in cli(port, "info", "all").splitlines() if ":" in line
        )
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        evalsha = dict(
            pair.split("=") for pair in info.get("cmdstat_evalsha", "calls=0,usec=0").split(",")
        )
        calls += int(evalsha["calls"])
        usec += float(evalsha["usec"])
    return cpu, calls, usec


def on_cluster(rounds: int, run: Callable[[dict[str, str]], dict[str, float]]) -> int:
    """Paired checkout runs on the single Redis and on a private 3-master cluster (3
    replicas), with what each Redis spent: CPU per request, and sale.lua runs."""
    with RedisCluster() as cluster:
        # Replicas and a cluster's bus take CPU too: all six nodes are counted.
        nodes = [node.port for node in cluster.nodes]

        def measured(extra: dict[str, str]) -> dict[str, float]:
            if extra:
                cluster.flush()
            ports = nodes if extra else redis_ports(Settings.from_env().redis_url)
            before = redis_stats(ports)
            got = run(extra)
            cpu, calls, usec = (a - b for a, b in zip(redis_stats(ports), before, strict=True))
            print(
                f"{'cluster' if extra else 'single '}: {got['rps']:.0f} req/s,"
                f" p99 {got['p99']:.1f} ms, worker CPU {got['cpu_us']:.0f} µs/request, Redis CPU"
                f" {cpu / got['requests'] * 1e6:.1f} µs/request; {calls / got['seconds']:.0f}"
                f" sale.lua runs/s of {got['requests'] / max(calls, 1):.1f} ops,"
                f" {usec / max(calls, 1):.0f} µs each in Redis"
                f" ({usec / got['requests']:.1f} µs per op)",
                flush=True,
            )
            return got

        return ab(f"NOTSALE_REDIS_URL={cluster.url}", rounds, measured)


def one_buyer(
    url: str, hello_url: str, database_url: str, count: int, beside: str | None = None
) -> dict[str, float]:
    """p50 in ms of each kind of request, sent one at a time by one keep-alive client
    (`http.client`) to an idle server: what one buyer alone waits. Each notsale request (a
    checkout of a new item, its purchase, a checkout refused before Redis decides, `id=0`,
    which only logs its attempt, and `/health`) follows a hello-world request to a server of
    its own, so that both see the machine in the same state: its speed drifts by half here
    from one minute to the next, and a request after an idle moment takes twice as long as
    one in a tight loop. So do hello-world's /redis (REDIS_FLOOR), answered after one Redis
    round trip: what is left of a checkout above it is notsale's own; and one PostgreSQL
    commit (COMMIT) of a one-row insert from a connection of this process. With `beside`,
    another notsale is sent the same requests in the same rounds, timed the same way
    ("checkout beside", ...), the two taking turns at going first: a server sent fewer
    requests is idle longer between them and answers each more slowly (measured: ~0.1 ms a
    checkout, when only the first was sent `id=0` and /health)."""

    def connect(to: str) -> http.client.HTTPConnection:
        parts = urlsplit(to)
        return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)

    conn, hello = connect(url), connect(hello_url)
    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(asyncpg.connect(database_url))
    loop.run_until_complete(db.execute("CREATE TABLE IF NOT EXISTS bench_commit (n integer)"))
    took: dict[str, list[float]] = {}

    async def commit(n: int) -> float:
        started = time.perf_counter()
        async with db.transaction():
            await db.execute("INSERT INTO bench_commit VALUES ($1)", n)
        return (time.perf_counter() - started) * 1000

    def get(server: http.client.HTTPConnection, method: str, path: str) -> bytes:
        server.request(method, path)
        return server.getresponse().read()

    def timed(kind: str, method: str, path: str, to: http.client.HTTPConnection = conn) -> bytes:
        for label, server, server_path in (("hello", hello, "/"), (kind, to, path)):
            started = time.perf_counter()
            body = get(server, method, server_path)
            took.setdefault(label, []).append((time.perf_counter() - started) * 1000)
        return body

    # The server beside buys items of its own (count + 1 on), should both share their stores.
    servers = [("", conn, 1), *([(" beside", connect(beside), count + 1)] if beside else [])]
    try:
        for i in range(count):
            timed(REDIS_FLOOR, "POST", "/redis", hello)
            for label, server, first in servers[i % 2 :] + servers[: i % 2]:
                checkout = f"/checkout?user_id=solo{i}&id={first + i}"
                code = json.loads(timed("checkout" + label, "POST", checkout, server))["code"]
                timed("purchase" + label, "POST", f"/purchase?code={code}", server)
                timed("checkout?id=0" + label, "POST", "/checkout?user_id=solo&id=0", server)
                timed("GET /health" + label, "GET", "/health", server)
            get(hello, "POST", "/")  # the commit, too, right after a hello-world request
            took.setdefault(COMMIT, []).append(loop.run_until_complete(commit(i)))
    finally:
        for _, server, _ in servers:
            server.close()
        hello.close()
        loop.run_until_complete(db.close())
        loop.close()
    return {kind: median(ms) for kind, ms in took.items()}


def print_budget(runs: dict[str, list[dict[str, float]]]) -> None:
    """CPU per answered request of each part of the machine, medians. Everything shares the
    cores, so hello-world's total against a run's bounds that run's ratio to hello-world."""
    parts = [key for key in runs[HELLO][0] if key.endswith(" µs")]
    hello = sum(median(r[part] for r in runs[HELLO]) for part in parts)
    print("\nCPU per request, µs (median of the runs; server = granian and its workers)\n")
    print(f"| run | {' | '.join(p.removesuffix(' µs') for p in parts)} | all | hello's all / all |")
    print("|---|" + "---|" * (len(parts) + 2))
    for label, got in runs.items():
        each = [median(r[part] for r in got) for part in parts]
        cells = [f"{c:.0f}" for c in each]
        print(f"| {label} | {' | '.join(cells)} | {sum(each):.0f} | {hello / sum(each):.2f} |")


def print_one_buyer(served: dict[str, float], against: str = "") -> None:
    print(f"\none buyer alone: p50 of {ONE_BUYER} sequential requests each, one keep-alive client")
    hello = served["hello"]
    print("| request | p50 ms | target |")
    print("|---|---|---|")
    print(f"| hello-world | {hello:.2f} | |")
    floor = served[REDIS_FLOOR]
    print(f"| {REDIS_FLOOR} | {floor:.2f} (x{floor / hello:.1f} hello) | |")
    checkout, purchase, commit = served["checkout"], served["purchase"], served[COMMIT]
    print(f"| POST /checkout | {checkout:.2f} (x{checkout / hello:.1f} hello) | ≤ 2 x hello |")
    target = hello + commit + 0.5
    print(f"| POST /purchase | {purchase:.2f} | ≤ {target:.2f} (hello + one commit + 0.5 ms) |")
    if "checkout beside" in served:
        beside = served["checkout beside"]
        print(f"| POST /checkout, {against} | {beside:.2f} (x{beside / hello:.1f} hello) | |")
        print(f"| POST /purchase, {against} | {served['purchase beside']:.2f} | |")
    for kind in ("checkout?id=0", "GET /health"):
        print(f"| {kind} | {served[kind]:.2f} | |")
    print(f"| {COMMIT} | {commit:.2f} | |")


def soak(total: int, workers: int, serve: list[str], url: str, base: Settings) -> int:
    """Checkout load until `total` requests were answered; worker RSS after every 30 s."""
    database_url, redis_url = fresh_stores(base)
    env = {
        **os.environ,
        "NOTSALE_PORT": str(PORT),
        "NOTSALE_WORKERS": str(workers),
        "NOTSALE_DATABASE_URL": database_url,
        "NOTSALE_REDIS_URL": redis_url,
    }
    with running(serve, env, url + "/health") as server:
        print(f"start: max worker RSS {worker_rss_mb(server):.1f} MB")
        done = 0.0
        while done < total:
            got = wrk(url, 30, "checkout.lua")
            done += got["requests"]
            print(
                f"{done:.0f} requests, {got['rps']:.0f} req/s, "
                f"max worker RSS {worker_rss_mb(server):.1f} MB",
                flush=True,
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pairs", type=int, default=10_000, help="locust full mode pairs")
    parser.add_argument("--sim-users", type=int, default=1000)
    parser.add_argument("--sim-seconds", type=int, default=60)
    parser.add_argument("--skip-locust", action="store_true")
    parser.add_argument(
        "--ab",
        metavar="VAR=VALUE",
        help="instead: --repeat pairs of checkout runs, as served and with this setting,"
        " alternating which goes first; prints the median of the pairs' ratios",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="instead: --repeat pairs of checkout runs on the configured Redis and on a"
        " private 3-master Redis Cluster, with each one's Redis CPU and sale.lua runs",
    )
    parser.add_argument(
        "--one-buyer",
        action="store_true",
        help="instead: only what one buyer alone waits (sequential requests, idle server)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="--one-buyer, timing the checkouts and purchases of git revision REV too, served "
        "beside this code's (a clone in a temporary directory), in the same rounds",
    )
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        metavar="N",
        help="instead: N checkout requests in 30 s wrk runs, printing worker RSS after each",
    )
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk (scripts/bench does it)")
    base = Settings.from_env()
    url = f"http://127.0.0.1:{PORT}"
    granian = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--loop",
        "uvloop",
        "--workers",
        str(opts.workers),
        "--backlog",
        "4096",
        "--port",
        str(PORT),
        "--no-ws",
    ]
    serve = [sys.executable, "-m", "notsale", "serve"]
    if opts.soak:
        return soak(opts.soak, opts.workers, serve, url, base)

    def notsale_env() -> dict[str, str]:
        database_url, redis_url = fresh_stores(base)
        return {
            **os.environ,
            "NOTSALE_PORT": str(PORT),
            "NOTSALE_WORKERS": str(opts.workers),
            "NOTSALE_DATABASE_URL": database_url,
            "NOTSALE_REDIS_URL": redis_url,
        }

    def hello_run() -> dict[str, float]:
        with (
            running([*granian, "bench.hello:app"], dict(os.environ), url) as server,
            cpu_budget(server) as spent,
        ):
            got = wrk(url, opts.seconds)
        return {**got, **budget_us(spent, got["requests"])}

    def notsale_run(
        label: str, script: str, args: tuple[str, ...], extra: dict[str, str]
    ) -> dict[str, float]:
        env = {**notsale_env(), **extra}
        with running(serve, env, url + "/health") as server:
            cpu_before = worker_cpu_s(server)
            if label == VIEWED:
                # First the pages alone, less what idle workers take (flusher, watch): the
                # CPU the pages cost, free of the crowd.
                time.sleep(opts.seconds)
                idle_cpu_s = (worker_cpu_s(server) - cpu_before) / opts.seconds
                with viewers(url, VIEWERS) as answered:
                    cpu_before = worker_cpu_s(server)
                    time.sleep(opts.seconds)
                    page_cpu_s = (worker_cpu_s(server) - cpu_before) / opts.seconds
                    cpu_before = worker_cpu_s(server)
                    with cpu_budget(server) as spent:
                        got = wrk(url, opts.seconds, script, *args)
                got["page_cpu_s"] = page_cpu_s - idle_cpu_s
                if set(answered) != {200}:
                    raise SystemExit(f"a buyers' page was answered {sorted(set(answered))}")
            else:
                with cpu_budget(server) as spent:
                    got = wrk(url, opts.seconds, script, *args)
            got.update(budget_us(spent, got["requests"]))
            # Worker CPU per answered wrk request: steadier than req/s on a shared machine,
            # and it leaves out what the load drivers themselves cost.
            got["cpu_us"] = (worker_cpu_s(server) - cpu_before) / got["requests"] * 1e6
            got["rss"] = worker_rss_mb(server)
            # Only the checkout-only run knows how many attempts it made (wrk's count).
            if script == "checkout.lua":
                got["drain"] = attempts_drain_s(env["NOTSALE_DATABASE_URL"], got["requests"])
        return got

    def one_buyer_run() -> None:
        env = notsale_env()
        hello = [*granian, "bench.hello:app"]
        hello[hello.index("--port") + 1] = str(PORT + 1)
        hello_url = f"http://127.0.0.1:{PORT + 1}"
        with contextlib.ExitStack() as stack:
            stack.enter_context(running(hello, env, hello_url))
            stack.enter_context(running(serve, env, url + "/health"))
            beside = None
            if opts.against:
                database_url, redis_url = fresh_stores(base, beside=True)
                beside = f"http://127.0.0.1:{PORT + 2}"
                clone = checkout_of(opts.against, stack)
                other = {
                    **env,
                    "NOTSALE_PORT": str(PORT + 2),
                    "NOTSALE_DATABASE_URL": database_url,
                    "NOTSALE_REDIS_URL": redis_url,
                    "PYTHONPATH": str(clone),
                }
                stack.enter_context(running(serve, other, beside + "/health", clone))
            served = one_buyer(url, hello_url, env["NOTSALE_DATABASE_URL"], ONE_BUYER, beside)
        print_one_buyer(served, opts.against)

    if opts.one_buyer or opts.against:
        one_buyer_run()
        return 0
    if opts.cluster:
        return on_cluster(
            opts.repeat, lambda extra: notsale_run(CHECKOUT, "checkout.lua", (), extra)
        )
    if opts.ab:
        return ab(
            opts.ab, opts.repeat, lambda extra: notsale_run(CHECKOUT, "checkout.lua", (), extra)
        )

    # Every run is repeated, the runs of one round back to back, and the median kept: on a
    # shared 2-core machine one run can be off by half.
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(opts.repeat):
        runs.setdefault(HELLO, []).append(hello_run())
        for label, script, args, extra in MODES:
            runs.setdefault(label, []).append(notsale_run(label, script, args, extra))
    hello_rps = median(r["rps"] for r in runs[HELLO])
    rows = [
        (
            label,
            f"{median(r['rps'] for r in got):.0f}",
            f"{median(r['rps'] for r in got) / hello_rps:.2f}",
            f"{median(r['p50'] for r in got):.2f}",
            f"{median(r['p99'] for r in got):.2f}",
            f"{median(r['cpu_us'] for r in got):.0f}" if "cpu_us" in got[0] else "",
            f"{max(r['rss'] for r in got):.0f}" if "rss" in got[0] else "",
            f"{max(r['drain'] for r in got):.2f}" if "drain" in got[0] else "",
        )
        for label, got in runs.items()
    ]

    print(
        f"\nwrk -t2 -c{CONNECTIONS} -d{opts.seconds}s, median of {opts.repeat} runs, "
        f"{opts.workers} granian workers, "
        f"{os.cpu_count()} cores shared with Redis, PostgreSQL and wrk\n"
    )
    print(
        "| run | req/s | ratio to hello | p50 ms | p99 ms | worker CPU µs/request "
        "| max worker RSS MB | attempts in PostgreSQL s after load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print_budget(runs)
    for what, before, after in (
        ("metrics cost: checkout without metrics -> with", NO_METRICS, CHECKOUT),
        (f"page cost: checkout alone -> with {VIEWERS} buyers' pages open", CHECKOUT, VIEWED),
    ):
        rps = median(r["rps"] for r in runs[after]) / median(r["rps"] for r in runs[before])
        cpu = median(r["cpu_us"] for r in runs[after]) / median(r["cpu_us"] for r in runs[before])
        print(f"{what}: req/s x{rps:.3f}, worker CPU per request x{cpu:.3f}")
    # The pages' own share: the CPU they take alone, against what the crowd's checkouts take.
    page_cpu = median(r["page_cpu_s"] for r in runs[VIEWED])
    crowd_cpu = median(r["cpu_us"] * r["rps"] / 1e6 for r in runs[CHECKOUT])
    print(
        f"{VIEWERS} buyers' pages alone: worker CPU {page_cpu * 1000:.1f} ms/s,"
        f" {page_cpu / crowd_cpu:.1%} of what the checkout stampede takes"
    )

    one_buyer_run()

    if not opts.skip_locust:
        locust = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(REPO / "bench" / "locustfile.py"),
            "--headless",
            "--only-summary",
            "-H",
            url,
        ]
        env = notsale_env()
        with running(serve, env, url + "/health"):
            full = subprocess.run(
                [*locust, "-u", "64", "-r", "64", "--mode", "full", "--pairs", str(opts.pairs)],
                env=env,
                capture_output=True,
                text=True,
            )
        # The locustfile times the pairs themselves (first request to last answer), without
        # locust's start-up and the final checks.
        print(f"\nlocust full mode, {opts.pairs} pairs, 64 users (exit {full.returncode}):")
        print("\n".join(line for line in full.stdout.splitlines() if "full mode" in line))
        env = notsale_env()
        with running(serve, env, url + "/health"), ThreadPoolExecutor(1) as background:
            # One buyer's latency, measured alongside the crowd by a driver that is not busy.
            probed = background.submit(probe, url, opts.sim_seconds)
            sim = subprocess.run(
                [
                    *locust,
                    "-u",
                    str(opts.sim_users),
                    "-r",
                    "200",
                    "-t",
                    f"{opts.sim_seconds}s",
                    "--mode",
                    "sim",
                ],
                env=env,
                capture_output=True,
                text=True,
            )
        summary = [
            line
            for line in (sim.stdout + sim.stderr).splitlines()
            if "Aggregated" in line or "POST" in line or "fails" in line
        ]
        print(
            f"\nlocust sim mode: {opts.sim_users} buyers, {opts.sim_seconds}s "
            f"(exit {sim.returncode})"
        )
        print("\n".join(summary[-8:]))
        print(probe_summary(probed.result()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
