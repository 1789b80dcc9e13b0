"""Settings come from NOTSALE_* variables and fail at start-up with a clear message."""

from __future__ import annotations

import pytest

from notsale.config import Settings, SettingsError


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


def test_values_are_read_from_the_environment() -> None:
    s = Settings.from_env({"NOTSALE_PORT": "9000", "NOTSALE_SALE_SIZE": "5"})
    assert (s.port, s.sale_size) == (9000, 5)


@pytest.mark.parametrize(
    "env",
    [
        {"NOTSALE_PORT": "http"},
        {"NOTSALE_PORT": "70000"},
        {"NOTSALE_USER_LIMIT": "0"},
        {"NOTSALE_REDIS_URL": "localhost:6379"},
        {"NOTSALE_DATABASE_URL": "mysql://x"},
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="NOTSALE_"):
        Settings.from_env(env)
