"""Overage estimates on known usage, in Decimal money."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.billing.conftest import with_billing
from usage_limits import increment_usage, set_usage
from usage_limits.billing.pricing import estimate_bill, to_money
from usage_limits.models import Plan, Tenant
from usage_limits.testing.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def priced(settings: Any) -> None:
    settings.USAGE_LIMITS = with_billing(
        PRICING={
            "api_calls": {"included": 10000, "unit_price": "0.001", "unit_name": "API calls"},
            "seats": {"included": {"FREE": 1, "PRO": 5}, "unit_price": "10"},
            "projects": {"unit_price": "2.50"},  # included: the plan's limit
        }
    )


def test_the_estimate_charges_only_usage_beyond_the_included_units(
    priced: None, pro_plan: Plan
) -> None:
    tenant = TenantFactory(plan=pro_plan)
    increment_usage(tenant, "api_calls", 12_345)
    set_usage(tenant, "seats", 7)
    set_usage(tenant, "projects", 40)  # unlimited on PRO: nothing is overage
    estimate = estimate_bill(tenant)

    calls = estimate.line("api_calls")
    assert (calls.used, calls.included, calls.overage) == (12_345, 10_000, 2_345)
    assert calls.unit_price == Decimal("0.001")
    assert calls.amount == Decimal("2.35")  # 2.345 rounded half-up to the cent
    assert calls.unit_name == "API calls"
    seats = estimate.line("seats")
    assert (seats.included, seats.overage, seats.amount) == (5, 2, Decimal("20.00"))
    projects = estimate.line("projects")
    assert (projects.included, projects.overage, projects.amount) == (None, 0, Decimal("0.00"))
    assert estimate.total == Decimal("22.35")
    assert estimate.currency == "usd"
    assert estimate.has_overage


def test_without_included_units_the_plan_limit_is_included(priced: None, tenant: Tenant) -> None:
    set_usage(tenant, "projects", 5)  # FREE includes 3
    set_usage(tenant, "seats", 1)
    increment_usage(tenant, "api_calls", 9_000)
    estimate = estimate_bill(tenant)
    assert estimate.line("projects").overage == 2
    assert estimate.line("projects").amount == Decimal("5.00")
    assert estimate.line("seats").amount == Decimal("0.00")
    assert estimate.total == Decimal("5.00")


def test_the_estimate_as_json_keeps_money_exact(priced: None, pro_plan: Plan) -> None:
    tenant = TenantFactory(plan=pro_plan)
    increment_usage(tenant, "api_calls", 10_001)
    data = estimate_bill(tenant).as_dict()
    assert data["total"] == "0.00"  # 0.001 rounds down
    line = next(x for x in data["lines"] if x["feature"] == "api_calls")
    assert line == {
        "feature": "api_calls",
        "unit_name": "API calls",
        "used": 10_001,
        "included": 10_000,
        "overage": 1,
        "unit_price": "0.001",
        "amount": "0.00",
        "currency": "usd",
        "period_end": line["period_end"],
    }
    assert line["period_end"] is not None


def test_zero_decimal_currencies_round_to_whole_units(settings: Any, pro_plan: Plan) -> None:
    settings.USAGE_LIMITS = with_billing(
        CURRENCY="jpy", PRICING={"api_calls": {"included": 0, "unit_price": "0.5"}}
    )
    tenant = TenantFactory(plan=pro_plan)
    increment_usage(tenant, "api_calls", 3)
    estimate = estimate_bill(tenant)
    assert (estimate.currency, estimate.total) == ("jpy", Decimal("2"))


def test_without_pricing_the_estimate_is_empty(tenant: Tenant) -> None:
    increment_usage(tenant, "api_calls", 500)
    estimate = estimate_bill(tenant)
    assert (estimate.lines, estimate.total, estimate.has_overage) == ((), Decimal("0.00"), False)


def test_prices_are_never_floats(settings: Any, tenant: Tenant) -> None:
    assert to_money("0.1") + to_money("0.2") == Decimal("0.3")
    with pytest.raises(TypeError, match="not floats"):
        to_money(0.1)
    settings.USAGE_LIMITS = with_billing(
        PRICING={
            "api_calls": {"unit_price": "1", "currency": "usd"},
            "seats": {"unit_price": "1", "currency": "eur"},
        }
    )
    with pytest.raises(ImproperlyConfigured, match="mixes currencies"):
        estimate_bill(tenant)
