"""notsale as operators install it: a wheel, in a fresh venv, away from the checkout."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from notsale.store.migrations import with_path
from tests.conftest import BASE, REPO, Stores, free_port, log_tail, spawn_server, wait_for

# Building the wheel and installing it with its dependencies (from pip's cache or PyPI).
INSTALL_TIMEOUT_S = 600


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 60)
async def test_a_wheel_installed_outside_the_checkout_migrates_serves_and_sells(
    tmp_path: Path, stores: Stores
) -> None:
    # Built from a copy: a build leaves build/ and *.egg-info in the tree it builds.
    ignored = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__")
    source = await asyncio.to_thread(shutil.copytree, REPO, tmp_path / "source", ignore=ignored)
    await asyncio.to_thread(
        run, sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", "wheels",
        str(source), cwd=tmp_path,
    )  # fmt: skip
    [wheel] = (tmp_path / "wheels").glob("notsale-*.whl")
    venv = tmp_path / "venv"
    await asyncio.to_thread(run, sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    await asyncio.to_thread(
        run, str(venv / "bin" / "pip"), "install", "-q", str(wheel), cwd=tmp_path
    )
    where = run(str(venv / "bin" / "python"), "-c", "import notsale; print(notsale.__file__)",
                cwd=tmp_path)  # fmt: skip
    assert where.startswith(str(venv)), where  # the installed package, not the checkout

    name = f"notsale_wheel_{secrets.token_hex(4)}"
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "NOTSALE_DATABASE_URL": with_path(BASE.database_url, "/" + name),
        "NOTSALE_REDIS_URL": stores.redis_url,
        "NOTSALE_PORT": str(port),
        "NOTSALE_WORKERS": "1",
    }
    notsale = str(venv / "bin" / "notsale")
    try:
        await asyncio.to_thread(run, notsale, "migrate", cwd=tmp_path, env=env)
        log_path = str(tmp_path / "serve.log")
        server = spawn_server(env, log_path, [notsale, "serve"])
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def health() -> int:
                    try:
                        return (await http.get("/health")).status_code
                    except httpx.TransportError:
                        return 0

                assert await wait_for(health, 200, timeout=30) == 200, log_tail(log_path)
                params = {"user_id": "wheel", "id": "1"}
                held = await http.post("/checkout", params=params)
                assert held.status_code == 200
                bought = await http.post("/purchase", params={"code": held.json()["code"]})
                assert bought.status_code == 200
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            assert await asyncio.to_thread(server.wait, 30) == 0
        conn = await asyncpg.connect(env["NOTSALE_DATABASE_URL"])
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 3
            assert await conn.fetchval("SELECT user_id FROM purchases") == "wheel"
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(BASE.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
