"""Settings come from NOTSALE_* variables and fail at start-up with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from notsale.config import ClusterURL, Settings, SettingsError, redis_cluster, unknown_variables
from tests.started import free_port


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.sale_seconds, s.sale_size, s.user_limit, s.hold_seconds) == (
        "127.0.0.1",
        8080,
        3600,
        10_000,
        10,
        60,
    )
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert (s.sale_open_seconds, s.holds_max, s.identity) == (604_800, 20, "query")


def test_no_default_is_refused_whatever_else_is_set() -> None:
    """The open window's default is a week, or 1,000 sales when they are short; the holds'
    cap follows the limit."""
    short = Settings.from_env({"NOTSALE_SALE_SECONDS": "60", "NOTSALE_USER_LIMIT": "3"})
    assert (short.sale_open_seconds, short.holds_max) == (60_000, 6)
    with pytest.raises(SettingsError, match="NOTSALE_SALE_OPEN_SECONDS may be at most"):
        Settings.from_env({"NOTSALE_SALE_SECONDS": "60", "NOTSALE_SALE_OPEN_SECONDS": "604800"})


def test_values_are_read_from_the_environment() -> None:
    s = Settings.from_env({"NOTSALE_PORT": "9000", "NOTSALE_SALE_SIZE": "5"})
    assert (s.port, s.sale_size) == (9000, 5)


def test_switches_take_1_0_true_false() -> None:
    on = {"NOTSALE_METRICS": "1", "NOTSALE_ACCESS_LOG": "TRUE", "NOTSALE_LOG_FORMAT": "text"}
    s = Settings.from_env(on)
    assert (s.metrics, s.access_log, s.log_format) == (True, True, "text")
    s = Settings.from_env({"NOTSALE_METRICS": "false", "NOTSALE_ACCESS_LOG": "0"})
    assert (s.metrics, s.access_log, s.log_format) == (False, False, "auto")


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis://10.0.0.1:6379/0", None),
        ("redis+cluster://a:7000", ClusterURL([("a", 7000)], None, None, False)),
        (
            "redis+cluster://a:7000,b,[::1]:7002/0",
            ClusterURL([("a", 7000), ("b", 6379), ("::1", 7002)], None, None, False),
        ),
        ("redis://a:7000,b:7001", ClusterURL([("a", 7000), ("b", 7001)], None, None, False)),
        ("rediss+cluster://u:p%40ss@a:7000", ClusterURL([("a", 7000)], "u", "p@ss", True)),
    ],
)
def test_cluster_urls_name_their_nodes(url: str, cluster: ClusterURL | None) -> None:
    assert redis_cluster(url) == cluster
    assert Settings.from_env({"NOTSALE_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    "env",
    [
        {"NOTSALE_PORT": "http"},
        {"NOTSALE_PORT": "70000"},
        {"NOTSALE_USER_LIMIT": "0"},
        {"NOTSALE_REDIS_URL": "localhost:6379"},
        {"NOTSALE_DATABASE_URL": "mysql://x"},
        {"NOTSALE_PORT": "8080.0"},
        {"NOTSALE_SALE_SIZE": "1e3"},
        {"NOTSALE_WORKERS": " 2"},
        {"NOTSALE_SALE_SIZE": "2147483648"},
        {"NOTSALE_REDIS_URL": "redis://127.0.0.1:99999/0"},
        {"NOTSALE_REDIS_URL": "redis://:6379/0"},
        {"NOTSALE_DATABASE_URL": "postgresql://postgres@127.0.0.1:port/x"},
        {"NOTSALE_METRICS": "yes"},
        {"NOTSALE_ACCESS_LOG": "2"},
        {"NOTSALE_LOG_FORMAT": "xml"},
        {"NOTSALE_REDIS_URL": "redis+cluster://"},
        {"NOTSALE_REDIS_URL": "redis+cluster://a:7000,,b:7001"},
        {"NOTSALE_REDIS_URL": "redis+cluster://a:port"},
        {"NOTSALE_REDIS_URL": "redis://a:7000,b:99999"},
        {"NOTSALE_REDIS_URL": "redis+cluster://a:7000/3"},
        {"NOTSALE_REDIS_URL": "redis+cluster://a:7000?protocol_version=2"},
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="NOTSALE_"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"NOTSALE_PORT": "8080.0"},
        {"NOTSALE_SALE_SIZE": "99999999999"},
        {"NOTSALE_DATABASE_URL": "postgresql://postgres@127.0.0.1:port/x"},
        {"NOTSALE_REDIS_URL": "redis+cluster://a:7000,b:port"},
    ],
)
def test_the_command_line_refuses_a_bad_setting_in_one_line_with_exit_2(
    env: dict[str, str],
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "notsale", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("notsale: ") and next(iter(env)) in line


def test_an_unknown_notsale_variable_is_named_in_a_warning() -> None:
    env = {"NOTSALE_SALE_SIZ": "5", "NOTSALE_VENV": "/x", "NOTSALE_PORT": "1"}
    assert unknown_variables(env) == ["NOTSALE_SALE_SIZ"]
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/x"  # migrate fails at once
    done = subprocess.run(
        [sys.executable, "-m", "notsale", "migrate"],
        env={**os.environ, "NOTSALE_SALE_SIZ": "5", "NOTSALE_DATABASE_URL": nowhere},
        capture_output=True,
        text=True,
        timeout=60,
    )
    [warning] = [line for line in done.stderr.splitlines() if "NOTSALE_SALE_SIZ" in line]
    assert '"level":"warning"' in warning
