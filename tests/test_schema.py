"""schemathesis drives a real server from the service's own OpenAPI document."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from notsale.app import create_app
from notsale.config import Settings
from tests.started import free_port
from tests.support import (
    SERVER_START_TIMEOUT_S,
    TEST_SETTINGS,
    Stores,
    log_tail,
    server_env,
    spawn_server,
    until_healthy,
)

SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(**TEST_SETTINGS)).openapi_schema.to_schema()
)


@pytest.fixture(scope="module")
def live_url(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    served = Settings(
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        port=port,
        **{**TEST_SETTINGS, "workers": 1},
    )
    log_path = str(tmp_path_factory.mktemp("schema") / "server.log")
    process = spawn_server(server_env(served), log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        if not asyncio.run(until_healthy(url, process, SERVER_START_TIMEOUT_S)):
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
