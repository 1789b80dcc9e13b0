"""Nemesis runs from the command line, each seed against the same fresh database:

    python -m bench.nemesis --seconds 60 --seeds 1 2 3 [--workers 2] [--cross]

One summary line per seed, then its violations; exits 1 if any seed had one. The database
(notsale_nemesis_<random>, on the server of NOTSALE_DATABASE_URL) is dropped afterwards; the
logs of each run (server, Redis, events, every request) stay in --log-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

import asyncpg

from notsale.config import Settings
from notsale.store.migrations import migrate, with_path
from tests.nemesis import Report, run_nemesis
from tests.support import drop_database


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.nemesis", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="stampede length per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--buyers", type=int, default=60)
    parser.add_argument("--sale-size", type=int, default=300)
    parser.add_argument("--user-limit", type=int, default=5)
    parser.add_argument("--log-dir", default=None, help="default: a new temporary folder")
    parser.add_argument(
        "--cross",
        action="store_true",
        help="the next sale starts mid-run; a third of the checkouts name the older one",
    )
    return parser.parse_args(argv)


async def truncate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "TRUNCATE checkout_attempts, purchases, outbox_rejects, sale_terms, queue_seeds"
        )
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> list[Report]:
    base = Settings.from_env()
    name = f"notsale_nemesis_{secrets.token_hex(4)}"
    database_url = with_path(base.database_url, "/" + name)
    log_root = Path(args.log_dir or tempfile.mkdtemp(prefix="notsale-nemesis-"))
    print(f"database {name}, logs in {log_root}", flush=True)
    reports = []
    try:
        await migrate(database_url)  # creates it
        for seed in args.seeds:
            await truncate(database_url)
            report = await run_nemesis(
                seed,
                args.seconds,
                database_url,
                workers=args.workers,
                buyers=args.buyers,
                sale_size=args.sale_size,
                user_limit=args.user_limit,
                log_dir=str(log_root / f"seed-{seed}"),
                cross=args.cross,
            )
            reports.append(report)
            print(report.summary(), flush=True)
            for anomaly in report.anomalies:
                print(f"  anomaly: {anomaly}")
            for violation in report.violations:
                print(f"  VIOLATION: {violation}")
            if report.violations:
                print(f"  events and logs: {report.log_dir}", flush=True)
    finally:
        await drop_database(name, base.database_url)
    return reports


def main(argv: list[str] | None = None) -> int:
    reports = asyncio.run(run(parse_args(argv)))
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
