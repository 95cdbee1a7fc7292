"""System checks of the dashboard's settings (usage_limits.E050-E052)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from usage_limits.checks import check_settings

FEATURES = {"api_calls": {"kind": "metered"}, "storage": {"kind": "allocation", "unit": "bytes"}}


def ids(setting: Any) -> list[str]:
    with override_settings(USAGE_LIMITS=setting):
        return [message.id for message in check_settings()]  # type: ignore[misc]


def test_valid_dashboard_settings_pass() -> None:
    assert ids({"FEATURES": FEATURES, "HISTORY": False, "UPGRADE_URL": "/billing/"}) == []


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"HISTORY": "yes"}, "usage_limits.E050"),
        ({"HISTORY": 1}, "usage_limits.E050"),
        ({"FEATURES": {"storage": {"kind": "allocation", "unit": "GB"}}}, "usage_limits.E051"),
        ({"UPGRADE_URL": ""}, "usage_limits.E052"),
        ({"UPGRADE_URL": 42}, "usage_limits.E052"),
    ],
)
def test_malformed_dashboard_settings_are_reported(setting: Any, expected: str) -> None:
    assert ids(setting) == [expected]
