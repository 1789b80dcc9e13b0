"""One buyer's view of a crowded sale: latency as notsale answers it, not as a busy driver sees it.

locust's sim mode runs 1,000 buyers as greenlets of one Python process sharing the two cores
with the service; its percentiles include each greenlet's wait for that process. This probe
is one keep-alive connection that sends a checkout every INTERVAL_S (and the purchase when
it gets a code), one request at a time, timing each with the CPU it barely uses.

    python -m bench.probe --url http://127.0.0.1:8080 --seconds 30
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import time
from urllib.parse import urlsplit

# Between two checkouts: ~100 requests/s, enough for a p99 in 30 s, a small share of the load.
INTERVAL_S = 0.01


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))] if sorted_ms else 0.0


def probe(url: str, seconds: float) -> dict[str, list[float]]:
    """Latencies in ms per route, over `seconds` of checkouts (and purchases on 200)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    took: dict[str, list[float]] = {"checkout": [], "purchase": []}

    def post(route: str, query: str) -> tuple[int, bytes]:
        start = time.perf_counter()
        conn.request("POST", f"/{route}?{query}")
        answer = conn.getresponse()
        body = answer.read()
        took[route].append((time.perf_counter() - start) * 1000)
        return answer.status, body

    n = 0
    try:
        conn.request("GET", "/sales/current")
        sale_size = json.loads(conn.getresponse().read())["size"]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
            status, body = post("checkout", f"user_id=probe{n}&id={random.randint(1, sale_size)}")
            if status == 200:
                post("purchase", "code=" + json.loads(body)["code"])
            time.sleep(INTERVAL_S)
    finally:
        conn.close()
    return took


def summary(took: dict[str, list[float]]) -> str:
    lines = []
    for route, ms in took.items():
        ms = sorted(ms)
        lines.append(
            f"probe {route}: {len(ms)} requests, p50 {percentile(ms, 0.5):.1f} ms, "
            f"p99 {percentile(ms, 0.99):.1f} ms, max {percentile(ms, 1.0):.1f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=30)
    opts = parser.parse_args()
    print(summary(probe(opts.url, opts.seconds)))


if __name__ == "__main__":
    main()
