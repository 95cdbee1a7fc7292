"""Running a test against every counter store: the database store and the Redis store."""

from __future__ import annotations

import pytest

from usage_limits.backends import get_store

from .redis_service import redis_prefix  # noqa: F401  (fixture, used by store_name)

STORE_NAMES = ("database", "redis")


@pytest.fixture(params=STORE_NAMES)
def store_name(request: pytest.FixtureRequest) -> str:
    """The store under test; ``"redis"`` switches the settings to Redis under a private prefix."""
    if request.param == "redis":
        request.getfixturevalue("redis_prefix")
    name: str = request.param
    return name


def flush_if_write_behind() -> None:
    """Let the Redis store's changes reach the database (a no-op with the database store)."""
    if get_store().__class__.__name__ == "RedisStore":
        from usage_limits.backends.redis_flush import flush_counters

        flush_counters()
