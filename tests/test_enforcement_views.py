"""QuotaRequiredMixin / FeatureRequiredMixin on class-based views, sync and async handlers."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, RequestFactory
from django.views import View

from tests.enforcement_app import views
from tests.enforcement_app.support import (  # noqa: F401  (fixtures)
    BROWSER,
    limited_tenant,
    member,
    run_async,
)
from usage_limits import check_limit
from usage_limits.mixins import FeatureRequiredMixin, QuotaRequiredMixin
from usage_limits.models import Tenant
from usage_limits.testing.factories import plan_with_limits

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]


def test_quota_mixin_counts_and_refuses(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    responses = [client.get("/cbv/quota/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0]["RateLimit"].startswith('"free-api_calls";r=2;')
    assert responses[3]["RateLimit"].startswith('"free-api_calls";r=0;')
    assert responses[3].json()["code"] == "quota_exceeded"
    assert check_limit(limited_tenant, "api_calls").used == 3


@run_async
async def test_quota_mixin_on_an_async_view(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    assert views.AsyncQuotaView.view_is_async
    await async_client.aforce_login(member)
    responses = [await async_client.get("/cbv/async-quota/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].json() == {"success": True, "in_loop": True}
    assert responses[0].has_header("RateLimit-Policy")


def test_sync_class_views_through_the_async_client(
    member: AbstractBaseUser, async_client: AsyncClient
) -> None:
    async def scenario() -> list[int]:
        await async_client.aforce_login(member)
        return [(await async_client.get("/cbv/quota/")).status_code for _ in range(4)]

    assert run_async(scenario)() == [200, 200, 200, 429]


def test_quantity_hook_and_count_on_success(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    assert client.get("/cbv/success/?n=2&status=500").status_code == 500
    assert check_limit(limited_tenant, "api_calls").used == 0
    assert client.get("/cbv/success/?n=2").status_code == 200
    assert client.get("/cbv/success/?n=2").status_code == 429
    assert check_limit(limited_tenant, "api_calls").used == 2


@pytest.mark.parametrize("path", ["/cbv/feature/", "/cbv/async-feature/"])
def test_feature_mixin(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, path: str
) -> None:
    client.force_login(member)
    denied = client.get(path, **BROWSER)
    assert denied.status_code == 403
    assert "does not include Advanced analytics" in denied.content.decode()
    limited_tenant.plan = plan_with_limits("PRO", advanced_analytics=True)
    limited_tenant.save()
    assert client.get(path).status_code == 200


@run_async
async def test_feature_mixin_async_client(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    assert (await async_client.get("/cbv/async-feature/")).status_code == 403
    assert (await async_client.get("/cbv/feature/")).status_code == 403


def test_a_mixin_without_a_feature_is_a_configuration_error(
    rf: RequestFactory, member: AbstractBaseUser
) -> None:
    class Forgotten(QuotaRequiredMixin, View):
        pass

    class AlsoForgotten(FeatureRequiredMixin, View):
        pass

    request = rf.get("/")
    request.user = member
    with pytest.raises(ImproperlyConfigured, match="quota_feature"):
        Forgotten.as_view()(request)
    with pytest.raises(ImproperlyConfigured, match="required_feature"):
        AlsoForgotten.as_view()(request)
