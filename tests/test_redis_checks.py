"""System checks of the Redis store's settings (E080-E088, W080-W081)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from tests.conftest import require_module
from usage_limits.checks import check_settings

# Without the package, E013 (the store cannot be imported) is the one answer to every setting.
require_module("redis", 'pip install -e ".[redis]"')

REDIS = "usage_limits.backends.redis.RedisStore"
VALID: dict[str, Any] = {
    "FEATURES": {"api_calls": {"kind": "metered"}},
    "PLANS": {"FREE": {"api_calls": 100}},
    "STORE": REDIS,
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def ids(setting: dict[str, Any]) -> list[str]:
    with override_settings(USAGE_LIMITS={**VALID, **setting}):
        return [message.id for message in check_settings()]  # type: ignore[misc]


def test_a_complete_redis_configuration_passes() -> None:
    assert ids({}) == []
    assert ids({"REDIS_FAIL_MODE": "closed", "REDIS_CLUSTER": True, "REDIS_RETRIES": 0}) == []


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"REDIS_URL": "http://cache:6379"}, "usage_limits.E080"),
        ({"REDIS_FAIL_MODE": "allow"}, "usage_limits.E081"),
        ({"REDIS_SOCKET_TIMEOUT": 0}, "usage_limits.E082"),
        ({"REDIS_CONNECT_TIMEOUT": "0.1"}, "usage_limits.E082"),
        ({"REDIS_RETRIES": 3}, "usage_limits.E083"),
        ({"REDIS_RETRIES": True}, "usage_limits.E083"),
        ({"REDIS_BREAKER_FAILURES": 0}, "usage_limits.E084"),
        ({"REDIS_BREAKER_SECONDS": -1}, "usage_limits.E084"),
        ({"REDIS_FAIL_LOG_INTERVAL": "often"}, "usage_limits.E084"),
        ({"REDIS_KEY_PREFIX": "quota{x}"}, "usage_limits.E085"),
        ({"REDIS_KEY_PREFIX": ""}, "usage_limits.E085"),
        ({"REDIS_EXPIRE_AFTER_PERIOD": -5}, "usage_limits.E086"),
        ({"REDIS_CLUSTER": "yes"}, "usage_limits.E088"),
        ({"REDIS_SOCKET_TIMEOUT": 5}, "usage_limits.W080"),
        ({"REDIS_EXPIRE_AFTER_PERIOD": 60}, "usage_limits.W081"),
    ],
)
def test_malformed_redis_settings_are_reported(setting: dict[str, Any], expected: str) -> None:
    assert ids(setting) == [expected]


def test_the_url_is_required_only_for_the_redis_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert ids({"REDIS_URL": None}) == ["usage_limits.E080"]
    database = "usage_limits.backends.database.DatabaseStore"
    assert ids({"REDIS_URL": None, "STORE": database}) == []
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    assert ids({"REDIS_URL": None}) == []


def test_the_check_command_stops_on_a_redis_error() -> None:
    with (
        override_settings(USAGE_LIMITS={**VALID, "REDIS_FAIL_MODE": "sometimes"}),
        pytest.raises(SystemCheckError, match=r"usage_limits.E081"),
    ):
        call_command("check", tags=["compatibility"])
