"""HasQuota, HasFeature and QuotaThrottle on an APIView and a ViewSet, sync and async clients."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import AbstractBaseUser
from django.test import AsyncClient, Client

from tests.enforcement_app.support import (  # noqa: F401  (fixtures)
    BROWSER,
    limited_tenant,
    member,
    run_async,
)
from usage_limits import check_limit
from usage_limits.models import SubscriptionStatus, Tenant
from usage_limits.testing.factories import TenantFactory, UserFactory, plan_with_limits

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

NOW = dt.datetime(2026, 11, 17, 0, 0, tzinfo=dt.UTC)


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return check_limit(tenant, feature).used


@time_machine.travel(NOW, tick=False)
def test_has_quota_on_an_apiview(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    responses = [client.get("/drf/quota/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0]["RateLimit-Policy"] == '"free-api_calls";q=3;w=2592000'
    assert responses[0]["RateLimit"] == '"free-api_calls";r=2;t=1209600'
    denial = responses[3]
    assert denial.json() == {
        "success": False,
        "error": "Limit reached. Upgrade your plan.",
        "code": "quota_exceeded",
        "feature": "api_calls",
        "plan": "FREE",
        "limit": 3,
        "used": 3,
        "requested": 1,
        "resets_at": "2026-12-01T00:00:00Z",
        "upgrade_url": None,
    }
    assert denial["Retry-After"] == "1209600"
    assert denial["RateLimit"] == '"free-api_calls";r=0;t=1209600'
    assert set(denial["Cache-Control"].split(", ")) == {"private", "no-store"}
    assert not responses[0].has_header("Cache-Control")
    assert used(limited_tenant) == 3


@run_async
async def test_has_quota_through_the_async_client(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    statuses = [(await async_client.get("/drf/quota/")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_viewset_actions_count_their_own_feature(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    assert client.post("/drf/viewset/").status_code == 201
    denied = client.post("/drf/viewset/")
    assert denied.status_code == 429
    assert denied.json()["feature"] == "projects"
    assert "Retry-After" not in denied  # an allocation never resets by itself
    assert denied["RateLimit"] == '"free-projects";r=0'
    assert client.get("/drf/viewset/").status_code == 200
    assert client.get("/drf/viewset/1/").status_code == 200  # retrieve: not mapped, not counted
    assert used(limited_tenant, "projects") == 1
    assert used(limited_tenant) == 1


@run_async
async def test_viewset_through_the_async_client(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    assert (await async_client.post("/drf/viewset/")).status_code == 201
    assert (await async_client.post("/drf/viewset/")).status_code == 429


def test_count_on_success_refunds_drf_errors(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    assert client.get("/drf/success/?status=400").status_code == 400
    assert client.get("/drf/success/?status=503").status_code == 503
    with pytest.raises(RuntimeError):
        client.get("/drf/success/?fail=1")
    assert used(limited_tenant) == 0
    response = client.get("/drf/success/")
    assert response.status_code == 200
    assert response["RateLimit"].startswith('"free-api_calls";r=2;')
    assert used(limited_tenant) == 1


@pytest.mark.frozen_clock(NOW)
def test_quota_throttle_raises_drf_throttled(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    assert client.get("/drf/throttled/?n=3").status_code == 200
    response = client.get("/drf/throttled/")
    assert response.status_code == 429
    assert response["Retry-After"] == "1209600"
    assert response.json() == {
        "detail": "Request was throttled. Expected available in 1209600 seconds."
    }
    assert response["RateLimit"].startswith('"free-api_calls";r=0;')
    assert "no-store" in response["Cache-Control"]
    assert used(limited_tenant) == 3


@run_async
async def test_quota_throttle_through_the_async_client(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    assert (await async_client.get("/drf/throttled/?n=3")).status_code == 200
    assert (await async_client.get("/drf/throttled/")).status_code == 429


def test_a_canceled_subscription_is_402_in_drf(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    limited_tenant.subscription_status = SubscriptionStatus.CANCELED
    limited_tenant.save()
    client.force_login(member)
    for path in ("/drf/quota/", "/drf/throttled/", "/drf/viewset/"):
        response = client.get(path)
        assert response.status_code == 402, path
        assert response.json()["code"] == "subscription_inactive"


def test_has_feature(client: Client, member: AbstractBaseUser, limited_tenant: Tenant) -> None:
    client.force_login(member)
    response = client.get("/drf/feature/")
    assert response.status_code == 403
    assert "no-store" in response["Cache-Control"]
    assert response.json()["code"] == "feature_not_in_plan"
    assert response.json()["error"] == (
        "Your plan does not include Advanced analytics. Upgrade your plan."
    )
    limited_tenant.plan = plan_with_limits("PRO", advanced_analytics=True)
    limited_tenant.save()
    assert client.get("/drf/feature/").status_code == 200


@run_async
async def test_has_feature_through_the_async_client(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    assert (await async_client.get("/drf/feature/")).status_code == 403


def test_anonymous_is_401_and_user_without_tenant_403(
    client: Client, limited_tenant: Tenant
) -> None:
    response = client.get("/drf/quota/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"
    client.force_login(UserFactory())
    assert client.get("/drf/quota/").json()["code"] == "no_tenant"


def test_spoofed_tenant_header_is_refused_in_drf(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    victim = TenantFactory(plan=limited_tenant.plan, slug="victim")
    client.force_login(member)
    response = client.get("/drf/quota/", HTTP_X_TENANT="victim")
    assert response.status_code == 403
    assert response.json()["code"] == "tenant_access_denied"
    assert used(victim) == 0
    assert used(limited_tenant) == 0


def test_basic_auth_users_resolve_after_drf_authenticates(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    # The middleware sees an anonymous request (no session); DRF authenticates it later.
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "usage_limits.middleware.UsageLimitsMiddleware"]
    import base64

    token = base64.b64encode(b"ada:password").decode()
    response = client.get("/drf/quota/", HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code == 200
    assert used(limited_tenant) == 1


def test_store_unavailable_is_503_in_drf(
    client: Client, member: AbstractBaseUser, settings: Any
) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "STORE": "tests.enforcement_app.support.UnavailableStore",
    }
    client.force_login(member)
    for path in ("/drf/quota/", "/drf/throttled/"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.json()["code"] == "store_unavailable"
