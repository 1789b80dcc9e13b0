"""The command line: `notsale serve | migrate | reconcile | verify | audit` (also `python -m
notsale …`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from notsale.config import Settings, SettingsError, unknown_variables
from notsale.logs import setup_logging

log = logging.getLogger("notsale")

# prometheus_client's multiprocess mode keeps every process' values in files under this.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_directory(settings: Settings) -> Iterator[None]:
    """A fresh directory where each worker keeps its metrics (prometheus_client's
    multiprocess mode, see notsale.metrics), removed when serving ends."""
    if not settings.metrics:
        yield
        return
    path = tempfile.mkdtemp(prefix="notsale-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = path
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notsale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply pending migrations, then serve with granian")
    commands.add_parser("migrate", help="apply pending sql/ migrations and exit")
    rebuild = commands.add_parser(
        "reconcile", help="rebuild a sale's Redis state from PostgreSQL (default: current sale)"
    )
    rebuild.add_argument("--sale-id", type=int, help="the sale to rebuild (default: running)")
    rebuild.add_argument(
        "--check",
        action="store_true",
        help="only report differences; exit 1 when there are any",
    )
    check = commands.add_parser(
        "verify",
        help="check that a sale lost nothing (default: current sale); exit 1 if it did",
    )
    check.add_argument("--sale-id", type=int, help="the sale to check (default: running)")
    check.add_argument("--json", action="store_true", help="the report as one JSON object")
    audit = commands.add_parser(
        "audit", help="who bought what in a sale, and which ids act as one client"
    )
    audit.add_argument("--sale-id", type=int, help="the sale to audit (default: running)")
    audit.add_argument("--json", action="store_true", help="the report as one JSON object")
    audit.add_argument("--html", metavar="FILE", help="also write a short HTML report here")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"notsale: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    for name in unknown_variables(os.environ):
        log.warning(
            "unknown setting ignored: no NOTSALE_ variable has this name", extra={"variable": name}
        )
    serving = args.command == "serve"
    with metrics_directory(settings) if serving else contextlib.nullcontext():
        # The one import made late, on purpose: prometheus_client decides when it is first
        # imported whether values go to files in the directory just set, and granian forks
        # the workers from this process. Everything the commands need comes with it.
        from notsale import cli

        if serving:
            cli.serve(settings)
        elif args.command == "reconcile":
            return cli.reconcile_command(settings, args.sale_id, args.check)
        elif args.command == "verify":
            return cli.verify_command(settings, args.sale_id, args.json)
        elif args.command == "audit":
            return cli.audit_command(settings, args.sale_id, args.json, args.html)
        else:
            cli.run_migrations(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
