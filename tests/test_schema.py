"""schemathesis drives a real server from the service's own OpenAPI document."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from notsale.app import create_app
from notsale.config import Settings
from tests.conftest import TEST_SETTINGS, Stores, free_port, log_tail, spawn_server

SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(**TEST_SETTINGS)).openapi_schema.to_schema()
)


@pytest.fixture(scope="module")
def live_url(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "NOTSALE_PORT": str(port),
        "NOTSALE_WORKERS": "1",
        "NOTSALE_REDIS_URL": stores.redis_url,
        "NOTSALE_DATABASE_URL": stores.database_url,
        **{f"NOTSALE_{k.upper()}": str(v) for k, v in TEST_SETTINGS.items() if k != "workers"},
    }
    log_path = str(tmp_path_factory.mktemp("schema") / "server.log")
    process = spawn_server(env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"server did not start:\n{log_tail(log_path)}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@SCHEMA.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_its_openapi_document_says(
    case: schemathesis.Case, live_url: str
) -> None:
    case.call_and_validate(base_url=live_url)
