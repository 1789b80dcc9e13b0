"""Log lines: JSON for machines, text for a terminal, granian's included; no secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from notsale.logs import ACCESS_FORMAT, ACCESS_LOGGER, log_config, setup_logging

ACCESS = {
    "addr": "10.0.0.1",
    "method": "POST",
    "path": "/purchase",
    "query_string": "code=SECRETCODE",
    "status": 200,
    "dt_ms": 1.5,
    "scheme": "http",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    setup_logging("json", again=True)


def emit(capsys: pytest.CaptureFixture[str], log_format: str) -> list[str]:
    # Configured again: the handler then writes to capsys' stderr.
    setup_logging(log_format, again=True)
    logging.getLogger("notsale.store").warning("flusher paused", extra={"error": "down"})
    logging.getLogger("_granian").info("Listening at: http://127.0.0.1:8080")
    logging.getLogger(ACCESS_LOGGER).info(ACCESS_FORMAT, ACCESS)
    return capsys.readouterr().err.splitlines()


def test_json_lines_carry_fields_and_never_the_query(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    ours, granian, access = (json.loads(line) for line in emit(capsys, "json"))
    assert ours["level"] == "warning" and ours["logger"] == "notsale.store"
    assert ours["msg"] == "flusher paused" and ours["error"] == "down"
    assert granian["logger"] == "_granian" and granian["msg"].startswith("Listening at")
    assert access["path"] == "/purchase" and access["status"] == 200
    assert access["msg"] == '10.0.0.1 "POST /purchase" 200 1.500ms'
    assert "SECRETCODE" not in json.dumps(access)


def test_text_lines_for_a_terminal(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    ours, granian, access = emit(capsys, "text")
    assert ours.endswith(" warning notsale.store: flusher paused error='down'")
    assert granian.endswith(" info _granian: Listening at: http://127.0.0.1:8080")
    assert access.endswith(' info granian.access: 10.0.0.1 "POST /purchase" 200 1.500ms')
    assert "SECRETCODE" not in access


def test_auto_is_json_unless_stderr_is_a_terminal() -> None:
    # Under pytest stderr is captured, not a terminal.
    formatter = log_config("auto")["formatters"]["notsale"]["()"]
    assert formatter == "notsale.logs.JsonFormatter"
