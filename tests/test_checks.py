from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from usage_limits.checks import check_settings

VALID: dict[str, Any] = {
    "FEATURES": {"api_calls": {"kind": "metered"}, "seats": {"kind": "allocation"}},
    "PLANS": {"FREE": {"api_calls": 100, "seats": -1}},
}


def ids(setting: Any) -> list[str]:
    with override_settings(USAGE_LIMITS=setting):
        return [message.id for message in check_settings()]  # type: ignore[misc]


def test_valid_settings_pass() -> None:
    assert ids(VALID) == []


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ([1, 2], "usage_limits.E001"),
        ({"FEATURES": ["api_calls"]}, "usage_limits.E002"),
        ({"FEATURES": {"api calls": {}}}, "usage_limits.E002"),
        ({"FEATURES": {"api_calls": {"kind": "counter"}}}, "usage_limits.E003"),
        (
            {"FEATURES": {"api_calls": {"kind": "metered", "period": "fortnightly"}}},
            "usage_limits.E004",
        ),
        ({"FEATURES": {"seats": {"kind": "allocation", "period": "monthly"}}}, "usage_limits.E004"),
        ({"DEFAULT_PERIOD": "hourly"}, "usage_limits.E004"),
        ({"PLANS": ["FREE"]}, "usage_limits.E005"),
        ({"PLANS": {"FREE": 100}}, "usage_limits.E005"),
        ({**VALID, "PLANS": {"FREE": {"tokens": 5}}}, "usage_limits.E006"),
        ({**VALID, "PLANS": {"FREE": {"api_calls": -5}}}, "usage_limits.E007"),
        ({**VALID, "PLANS": {"FREE": {"api_calls": 1.5}}}, "usage_limits.E007"),
        ({**VALID, "PLANS": {"FREE": {"api_calls": "100"}}}, "usage_limits.E007"),
        ({"RESET_MODE": "hourly"}, "usage_limits.E008"),
        ({"TIME_ZONE": "Mars/Olympus"}, "usage_limits.E009"),
        ({"PAST_DUE_GRACE_DAYS": -1}, "usage_limits.E010"),
        ({"METER_THRESHOLDS": {"amber": 90, "red": 85}}, "usage_limits.E011"),
        ({"METER_THRESHOLDS": {"amber": 60, "red": 120}}, "usage_limits.E011"),
        ({"WARNING_THRESHOLDS": [80, 80]}, "usage_limits.E012"),
        ({"WARNING_THRESHOLDS": [0.8]}, "usage_limits.E012"),
        ({"TENANT_RESOLVER": "myapp.tenants.nowhere"}, "usage_limits.E013"),
        ({"STORE": "usage_limits.backends.nosuch.Store"}, "usage_limits.E013"),
        ({"DATABASE_ALIAS": "nowhere"}, "usage_limits.E014"),
        ({"CACHE_ALIAS": "nowhere"}, "usage_limits.E015"),
        # Settings of removed mechanisms are unknown keys now: a warning, not silence.
        ({"DRIVER_CURSOR": False}, "usage_limits.W001"),
        ({"GROUP_CONCURRENT_COUNTS": False}, "usage_limits.W001"),
        ({"OVERDUE_RETRY_AFTER": 0}, "usage_limits.E092"),
        ({"OVERDUE_RETRY_AFTER": "60"}, "usage_limits.E092"),
        ({"OVERDUE_RETRY_AFTER": True}, "usage_limits.E092"),
        ({"PLAN": {}}, "usage_limits.W001"),
    ],
)
def test_malformed_settings_are_reported(setting: Any, expected: str) -> None:
    assert expected in ids(setting)


def test_boolean_features_take_booleans() -> None:
    setting = {
        "FEATURES": {"sso": {"kind": "boolean"}},
        "PLANS": {"FREE": {"sso": 3}},
    }
    assert ids(setting) == ["usage_limits.E007"]


def test_every_error_has_a_hint() -> None:
    with override_settings(USAGE_LIMITS={"RESET_MODE": "x", "TIME_ZONE": "nowhere"}):
        messages = check_settings()
    assert messages
    assert all(message.hint for message in messages)


def test_manage_py_check_refuses_to_start() -> None:
    with (
        override_settings(USAGE_LIMITS={"FEATURES": {"api_calls": {"kind": "counter"}}}),
        pytest.raises(SystemCheckError, match=r"usage_limits\.E003"),
    ):
        # Only the compatibility checks: the model checks would ask each database its version.
        call_command("check", tags=["compatibility"])


def test_sqlite_without_immediate_transactions_is_warned(settings: Any) -> None:
    db = dict(settings.DATABASES["default"])
    if not db["ENGINE"].endswith("sqlite3"):
        pytest.skip("SQLite-only setting")
    db["OPTIONS"] = {}
    settings.DATABASES = {"default": db}
    assert "usage_limits.W002" in ids({})
