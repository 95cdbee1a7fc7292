from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from tests.billing.conftest import with_billing
from usage_limits.billing.checks import check_billing

VALID: dict[str, Any] = {
    "STRIPE_API_KEY_ENV": "STRIPE_API_KEY",
    "METERS": {"api_calls": "api_requests"},
    "PRICING": {
        "api_calls": {"included": 10000, "unit_price": "0.001", "currency": "usd"},
        "seats": {"included": {"FREE": 1, "PRO": 5}, "unit_price": Decimal("10")},
        "projects": {"unit_price": 2},
    },
    "PRICE_PLANS": {"price_123": "PRO"},
    "AGGREGATE": "hour",
}


def ids(**billing: Any) -> list[str]:
    with override_settings(USAGE_LIMITS=with_billing(**billing)):
        return [m.id for m in check_billing()]  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")


def test_valid_billing_settings_pass() -> None:
    assert ids(**VALID) == []


def test_no_billing_settings_at_all_pass() -> None:
    with override_settings(USAGE_LIMITS={"FEATURES": {}}):
        assert check_billing() == []


@pytest.mark.parametrize(
    ("billing", "expected"),
    [
        ({"METERS": ["api_calls"]}, "usage_limits.E071"),
        ({"METERS": {"api_calls": ""}}, "usage_limits.E071"),
        ({"METERS": {"unknown_feature": "x"}}, "usage_limits.E071"),
        ({"METERS": {"advanced_analytics": "x"}}, "usage_limits.E071"),
        ({"PRICING": {"api_calls": {"unit_price": 0.001}}}, "usage_limits.E072"),
        ({"PRICING": {"api_calls": {"unit_price": "abc"}}}, "usage_limits.E072"),
        ({"PRICING": {"api_calls": {"unit_price": "-1"}}}, "usage_limits.E072"),
        ({"PRICING": {"api_calls": {"unit_price": "1", "included": 1.5}}}, "usage_limits.E072"),
        (
            {"PRICING": {"api_calls": {"unit_price": "1", "currency": "dollars"}}},
            "usage_limits.E072",
        ),
        (
            {
                "PRICING": {
                    "api_calls": {"unit_price": "1", "currency": "usd"},
                    "seats": {"unit_price": "1", "currency": "eur"},
                }
            },
            "usage_limits.E073",
        ),
        ({"AGGREGATE": "day"}, "usage_limits.E074"),
        ({"BATCH_SIZE": 0}, "usage_limits.E075"),
        ({"MAX_ATTEMPTS": "5"}, "usage_limits.E075"),
        ({"PRICE_PLANS": {"price_1": 3}}, "usage_limits.E076"),
        ({"STRIPE_API_KEY_ENV": "sk_live_abc123"}, "usage_limits.E077"),
        ({"WEBHOOK_SECRET_ENV": "whsec_abc"}, "usage_limits.E077"),
        ({"LEASE_SECONDS": 15, "REQUEST_TIMEOUT": 10}, "usage_limits.W072"),
        ({"RETRIES": 3}, "usage_limits.W071"),
    ],
)
def test_malformed_billing_settings_are_reported(billing: dict[str, Any], expected: str) -> None:
    assert expected in ids(**billing)


def test_a_meter_without_an_api_key_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_API_KEY")
    assert ids(**VALID) == ["usage_limits.W070"]
    assert ids(PRICING=VALID["PRICING"]) == []  # estimates alone need no key


def test_billing_is_a_known_key_and_bad_billing_stops_start_up() -> None:
    with (
        override_settings(USAGE_LIMITS=with_billing(AGGREGATE="week")),
        pytest.raises(SystemCheckError, match=r"usage_limits\.E074"),
    ):
        call_command("check", tags=["compatibility"])
    with override_settings(USAGE_LIMITS=with_billing(**VALID)):
        call_command("check", tags=["compatibility"])  # no W001 for the BILLING key itself


def test_every_billing_error_has_a_hint() -> None:
    with override_settings(
        USAGE_LIMITS=with_billing(METERS={"x": ""}, PRICING={"a": 1}, AGGREGATE="day")
    ):
        for message in check_billing():
            assert message.hint, message
