"""Structured logs: one JSON object per line, quiet on the hot path (warnings and up there)."""

from __future__ import annotations

import logging
import sys
import time

import msgspec

# Attributes every LogRecord has; anything else was passed with extra= and is logged as a field.
STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
ENCODER = msgspec.json.Encoder(enc_hook=repr)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in STANDARD_ATTRS)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return ENCODER.encode(entry).decode()


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("notsale")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
