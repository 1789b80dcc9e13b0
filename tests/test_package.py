"""notsale as operators install it: a wheel, in a fresh venv, away from the checkout."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from notsale.store.migrations import migration_files, with_path
from tests.started import free_port
from tests.support import (
    BASE,
    REPO,
    Stores,
    drop_database,
    health_status,
    log_tail,
    spawn_server,
    wait_for,
)

# Building the wheel and installing it with its dependencies (from pip's cache or PyPI).
INSTALL_TIMEOUT_S = 600


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def dockerfile_pip_commands() -> list[list[str]]:
    """The image's `python -m pip …` commands, in order, as argument lists."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    runs = [line.removeprefix("RUN ") for line in text.splitlines() if line.startswith("RUN ")]
    steps = [shlex.split(step) for run in runs for step in run.split("&&")]
    return [step for step in steps if step[:3] == ["python", "-m", "pip"]]


def test_the_image_is_slim_unprivileged_checked_and_serves() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert ("python:${PYTHON_VERSION}-slim", "serve") in stages
    version = re.search(r"^ARG PYTHON_VERSION=3\.(\d+)$", text, re.M)
    assert version and int(version[1]) >= 12
    serve = text[text.index(" AS serve") : text.index(" AS load")]
    assert "USER notsale" in serve and "useradd --system" in serve
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", serve, re.M)
    assert 'ENTRYPOINT ["notsale"]' in serve and 'CMD ["serve"]' in serve
    assert "NOTSALE_HOST=0.0.0.0" in serve
    assert "gcc" not in text and "build-essential" not in text


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 60)
async def test_a_wheel_installed_outside_the_checkout_migrates_serves_and_sells(
    tmp_path: Path,
    stores: Stores,
    db: asyncpg.Connection,  # empties the run's Redis, which this test shares
) -> None:
    """The Dockerfile's own pip commands: the wheel built from a copy of the source (a build
    leaves build/ and *.egg-info in the tree it builds), then installed with the lock into
    a fresh venv."""
    ignored = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__")
    source = await asyncio.to_thread(shutil.copytree, REPO, tmp_path / "source", ignore=ignored)
    build, install = dockerfile_pip_commands()[:2]
    wheels = tmp_path / "wheels"
    build = [str(wheels) if word == "/wheels" else word for word in build]
    await asyncio.to_thread(run, sys.executable, *build[1:], cwd=source)
    [wheel] = wheels.glob("notsale-*.whl")
    venv = tmp_path / "venv"
    await asyncio.to_thread(run, sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    paths = {
        "/wheels/requirements.lock": str(source / "requirements.lock"),
        "/wheels/notsale-*.whl": str(wheel),
    }
    install = [paths.get(word, word) for word in install]
    await asyncio.to_thread(run, str(venv / "bin" / "python"), *install[1:], cwd=tmp_path)
    # The lock pins every package the install took, at the version it took.
    frozen = run(str(venv / "bin" / "pip"), "freeze", "--exclude", "notsale", cwd=tmp_path)
    locked = (REPO / "requirements.lock").read_text().splitlines()
    assert set(frozen.splitlines()) <= set(locked)
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
                assert await wait_for(lambda: health_status(http), 200, timeout=30) == 200, (
                    log_tail(log_path)
                )
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
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
                migration_files()
            )
            assert await conn.fetchval("SELECT user_id FROM purchases") == "wheel"
        finally:
            await conn.close()
    finally:
        await drop_database(name)


def test_the_compose_file_is_valid_and_runs_what_it_says(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (scripts/test installs Debian's)")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copy(REPO / ".env.example", tmp_path / ".env")  # as the README says to
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "haproxy.cfg", tmp_path / "scripts")
    profiles = ["--profile", "load", "--profile", "two-hosts"]
    rendered = run("docker-compose", *profiles, "config", cwd=tmp_path)
    services = yaml.safe_load(rendered)["services"]
    assert set(services) == {"redis", "postgres", "notsale", "locust", "notsale-2", "haproxy"}
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes --appendfsync everysec" in redis
    assert "--maxmemory-policy noeviction" in redis
    for store in ("redis", "postgres"):
        assert services[store]["healthcheck"]["test"]
        assert services[store]["volumes"]
        assert services["notsale"]["depends_on"][store] == {"condition": "service_healthy"}
    notsale = services["notsale"]["environment"]
    assert notsale["NOTSALE_REDIS_URL"] == "redis://redis:6379/0"
    assert notsale["NOTSALE_DATABASE_URL"].endswith("@postgres:5432/notsale")
    assert notsale["NOTSALE_USER_LIMIT"] == "10"  # from .env
    assert services["locust"]["profiles"] == ["load"]
    assert services["locust"]["build"]["target"] == "load"
    assert "profiles" not in services["notsale"]
    # The second host: the first's image and settings, reached only through HAProxy.
    second = services["notsale-2"]
    assert second["profiles"] == ["two-hosts"] and "ports" not in second
    assert second["environment"] == notsale and second["image"] == services["notsale"]["image"]
    haproxy = services["haproxy"]
    assert haproxy["environment"]["NOTSALE_A"] == "notsale:8080"
    assert haproxy["environment"]["NOTSALE_B"] == "notsale-2:8080"
    assert haproxy["volumes"][0].startswith(str(tmp_path / "scripts" / "haproxy.cfg"))
