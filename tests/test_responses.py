from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from usage_limits import RATELIMIT_HEADERS, consume
from usage_limits.models import SubscriptionStatus, Tenant
from usage_limits.responses import denial_payload, ratelimit_headers, status_code
from usage_limits.testing.factories import TenantFactory, plan_with_limits

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 17, 0, 0, tzinfo=dt.UTC)  # 14 days before December


@time_machine.travel(NOW, tick=False)
def test_headers_of_an_allowed_request(tenant: Tenant) -> None:
    decision = consume(tenant, "api_calls", 40)
    assert ratelimit_headers(decision) == {
        "RateLimit-Policy": '"free-api_calls";q=100;w=2592000',
        "RateLimit": '"free-api_calls";r=60;t=1209600',
    }


@time_machine.travel(NOW, tick=False)
def test_headers_and_body_of_a_denial(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 100)
    decision = consume(tenant, "api_calls")
    assert status_code(decision) == 429
    headers = ratelimit_headers(decision)
    assert tuple(headers) == RATELIMIT_HEADERS  # what a CORS setup is told to expose
    assert headers["Retry-After"] == "1209600"
    assert headers["RateLimit"] == '"free-api_calls";r=0;t=1209600'
    assert denial_payload(decision) == {
        "success": False,
        "error": "Limit reached. Upgrade your plan.",
        "code": "quota_exceeded",
        "feature": "api_calls",
        "plan": "FREE",
        "limit": 100,
        "used": 100,
        "requested": 1,
        "resets_at": "2026-12-01T00:00:00Z",
        "upgrade_url": None,
    }


def test_allocations_never_reset_so_they_have_no_window(tenant: Tenant) -> None:
    consume(tenant, "projects", 3)
    decision = consume(tenant, "projects")
    assert ratelimit_headers(decision) == {
        "RateLimit-Policy": '"free-projects";q=3',
        "RateLimit": '"free-projects";r=0',
    }


def test_unlimited_features_send_no_ratelimit_fields(pro_plan: object) -> None:
    tenant = TenantFactory(plan=pro_plan)
    assert ratelimit_headers(consume(tenant, "api_calls")) == {}


def test_canceled_subscription_is_402_without_retry_after(db: None) -> None:
    tenant = TenantFactory(
        plan=plan_with_limits("P", api_calls=5), subscription_status=SubscriptionStatus.CANCELED
    )
    decision = consume(tenant, "api_calls")
    assert status_code(decision) == 402
    assert "Retry-After" not in ratelimit_headers(decision)
    assert denial_payload(decision)["code"] == "subscription_inactive"
