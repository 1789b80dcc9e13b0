"""Logs: one JSON object per line in production, readable lines in a terminal; quiet on the
hot path (warnings and up there). notsale's and granian's loggers share one configuration,
applied in the serving process and, by granian, in each worker (`log_config`).

Purchase codes are secrets: no log line carries one. Requests reach the log only through
granian's access log (NOTSALE_ACCESS_LOG), whose lines name the path, never the query.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import time
from typing import Any

import msgspec

# Attributes every LogRecord has; anything else was passed with extra= and is logged as a field.
STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
ENCODER = msgspec.json.Encoder(enc_hook=repr)
ACCESS_LOGGER = "granian.access"
# granian's access line, without the query string (it would carry purchase codes).
ACCESS_FORMAT = '%(addr)s "%(method)s %(path)s" %(status)d %(dt_ms).3fms'
# The fields of an access record kept in JSON lines (granian also passes the query string).
ACCESS_FIELDS = ("addr", "method", "path", "status", "dt_ms")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields: extra= values, or an access record's request."""
    if record.name == ACCESS_LOGGER and isinstance(record.args, dict):
        return {k: record.args[k] for k in ACCESS_FIELDS if k in record.args}
    return {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return ENCODER.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01 warning notsale: message key=value …`, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{when} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        if record.name != ACCESS_LOGGER:
            line += "".join(f" {k}={v!r}" for k, v in _fields(record).items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def chosen(log_format: str) -> str:
    if log_format == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return log_format


def log_config(log_format: str = "auto") -> dict[str, Any]:
    """A logging.config.dictConfig for notsale's and granian's loggers."""
    formatter = JsonFormatter if chosen(log_format) == "json" else TextFormatter
    logger = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"notsale": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "notsale",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            **{name: dict(logger) for name in ("notsale", "_granian", ACCESS_LOGGER)},
            # coredis says at INFO what notsale handles itself (a script loaded on a node it
            # was missing from, a connection lost): its warnings and errors only, as ours.
            "coredis": {**logger, "level": "WARNING"},
        },
    }


_applied: str | None = None


def setup_logging(log_format: str = "auto", *, again: bool = False) -> None:
    """Configure logging, unless it already is in this format (or `again`): dictConfig also
    resets the handlers and levels of notsale's module loggers."""
    global _applied
    if again or _applied != chosen(log_format):
        logging.config.dictConfig(log_config(log_format))
        _applied = chosen(log_format)
