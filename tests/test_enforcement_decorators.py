"""@require_quota / @require_feature on function views, through the sync and the async client."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import time_machine
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import AbstractBaseUser
from django.test import AsyncClient, Client
from django.test.utils import override_settings
from django.utils import timezone

from tests.enforcement_app import views
from tests.enforcement_app.support import (  # noqa: F401  (fixtures)
    BROWSER,
    JSON,
    limited_tenant,
    member,
    run_async,
)
from usage_limits import check_limit
from usage_limits.models import SubscriptionStatus, Tenant
from usage_limits.testing.factories import UserFactory, plan_with_limits

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

NOW = dt.datetime(2026, 11, 17, 0, 0, tzinfo=dt.UTC)  # 14 days before December
UNAVAILABLE = "tests.enforcement_app.support.UnavailableStore"


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return check_limit(tenant, feature).used


def limits(**extra: Any) -> Any:
    from django.conf import settings

    return override_settings(USAGE_LIMITS={**settings.USAGE_LIMITS, **extra})


# --- the seeds' verification scenario -----------------------------------------------------------


def test_fourth_request_is_429_and_an_upgrade_lets_the_next_one_through(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    statuses = [client.get("/fn/quota/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    denial = client.get("/fn/quota/")
    assert "Limit reached" in denial.json()["error"]

    limited_tenant.plan = plan_with_limits("PRO", api_calls=None, advanced_analytics=True)
    limited_tenant.save()

    assert client.get("/fn/quota/").status_code == 200
    assert used(limited_tenant) == 4  # unlimited still counts, for the usage page


@pytest.mark.parametrize("sent", ["0.0", "false", "null", "-1", "1.5", "true"])
def test_a_quantity_that_is_not_a_whole_number_is_refused_and_counts_nothing(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, sent: str
) -> None:
    client.force_login(member)
    response = client.get("/fn/unvalidated-quantity/", {"n": sent})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_quantity"
    assert used(limited_tenant) == 0
    # Only the integer 0 means "nothing to count" and lets the request through.
    assert client.get("/fn/unvalidated-quantity/", {"n": "0"}).status_code == 200
    assert used(limited_tenant) == 0


@run_async
async def test_seeds_scenario_on_an_async_view(
    async_client: AsyncClient, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    await async_client.aforce_login(member)
    statuses = [(await async_client.get("/fn/async-quota/")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited_tenant.plan = await _pro_plan()
    await limited_tenant.asave()
    assert (await async_client.get("/fn/async-quota/")).status_code == 200


@run_async
async def test_concurrent_async_requests_admit_exactly_the_limit(
    async_client: AsyncClient, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    await async_client.aforce_login(member)
    responses = await asyncio.gather(*(async_client.get("/fn/async-quota/") for _ in range(12)))
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 9
    assert await _used(limited_tenant) == 3


async def _pro_plan() -> Any:
    from asgiref.sync import sync_to_async

    return await sync_to_async(plan_with_limits)("PRO", api_calls=None)


# --- denial bodies and headers -----------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_a_denial_is_json_with_ratelimit_fields_and_retry_after(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    for _ in range(3):
        client.get("/fn/quota/")
    response = client.get("/fn/quota/", **JSON)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
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
    assert response["Retry-After"] == "1209600"
    assert response["RateLimit-Policy"] == '"free-api_calls";q=3;w=2592000'
    assert response["RateLimit"] == '"free-api_calls";r=0;t=1209600'
    assert {"Accept", "X-Requested-With"} <= set(response["Vary"].split(", "))
    assert set(response["Cache-Control"].split(", ")) == {"private", "no-store"}
    assert used(limited_tenant) == 3  # the denied request counted nothing


@time_machine.travel(NOW, tick=False)
def test_allowed_answers_carry_ratelimit_fields_without_retry_after(
    client: Client, member: AbstractBaseUser
) -> None:
    client.force_login(member)
    response = client.get("/fn/quota/")
    assert response.status_code == 200
    assert response.json() == {"success": True, "tenant": "acme"}
    assert response["RateLimit-Policy"] == '"free-api_calls";q=3;w=2592000'
    assert response["RateLimit"] == '"free-api_calls";r=2;t=1209600'
    assert not response.has_header("Retry-After")


def test_browsers_get_the_html_page_with_the_upgrade_link(
    client: Client, member: AbstractBaseUser
) -> None:
    client.force_login(member)
    with limits(UPGRADE_URL="/billing/upgrade/"):
        for _ in range(3):
            client.get("/fn/quota/", **BROWSER)
        response = client.get("/fn/quota/", **BROWSER)
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Limit reached. Upgrade your plan." in html
    assert 'href="/billing/upgrade/"' in html
    assert response.context["decision"].feature == "api_calls"  # the page's contract
    assert response.has_header("Retry-After")


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", **BROWSER},
        {"HTTP_ACCEPT": "application/json, text/html;q=0.5"},
        {"HTTP_ACCEPT": "*/*"},
        {},
    ],
    ids=["xhr", "json-preferred", "any", "no-accept"],
)
def test_api_clients_get_json(
    client: Client, member: AbstractBaseUser, headers: dict[str, str]
) -> None:
    client.force_login(member)
    for _ in range(3):
        client.get("/fn/quota/")
    response = client.get("/fn/quota/", **headers)
    assert response.status_code == 429
    assert response.json()["code"] == "quota_exceeded"


@pytest.mark.frozen_clock(NOW)
def test_the_page_template_can_be_overridden(
    client: Client, member: AbstractBaseUser, tmp_path: Any, settings: Any
) -> None:
    (tmp_path / "usage_limits").mkdir()
    (tmp_path / "usage_limits" / "limit_reached.html").write_text(
        "<p>Custom: {{ error }} ({{ status }}, retry in {{ retry_after }}s)</p>"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    client.force_login(member)
    for _ in range(3):
        client.get("/fn/quota/")
    response = client.get("/fn/quota/", **BROWSER)
    assert response.content.decode() == (
        "<p>Custom: Limit reached. Upgrade your plan. (429, retry in 1209600s)</p>"
    )


def test_canceled_subscription_is_402(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    limited_tenant.subscription_status = SubscriptionStatus.CANCELED
    limited_tenant.save()
    client.force_login(member)
    with time_machine.travel(NOW, tick=False):
        response = client.get("/fn/quota/")
        page = client.get("/fn/quota/", **BROWSER)
    assert response.status_code == 402
    assert response.json() == {
        "success": False,
        "error": "Your subscription is not active. Update your billing details.",
        "code": "subscription_inactive",
        "feature": "api_calls",
        "plan": "FREE",
        "limit": 3,
        "used": 0,
        "requested": 1,
        "resets_at": "2026-12-01T00:00:00Z",
        "upgrade_url": None,
    }
    assert not response.has_header("Retry-After")
    assert response["RateLimit"] == '"free-api_calls";r=3;t=1209600'
    assert page.status_code == 402
    assert "Your subscription is not active" in page.content.decode()


def test_past_due_passes_within_grace_then_402(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    limited_tenant.subscription_status = SubscriptionStatus.PAST_DUE
    limited_tenant.past_due_since = timezone.now() - dt.timedelta(days=2)
    limited_tenant.save()
    client.force_login(member)
    assert client.get("/fn/quota/").status_code == 200
    limited_tenant.past_due_since = timezone.now() - dt.timedelta(days=8)
    limited_tenant.save()
    assert client.get("/fn/quota/").status_code == 402


# --- quantities ----------------------------------------------------------------------------------


def test_quantity_from_the_request_is_counted_atomically(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    assert client.get("/fn/quantity/?n=2").status_code == 200
    response = client.get("/fn/quantity/?n=2")
    assert response.status_code == 429
    assert response.json()["requested"] == 2
    assert used(limited_tenant) == 2  # 2 + 2 > 3: nothing of the second request counted
    assert client.get("/fn/quantity/?n=1").status_code == 200
    assert client.get("/fn/quantity/?n=0").status_code == 200  # nothing to count
    assert used(limited_tenant) == 3


@run_async
async def test_async_views_stay_async_and_never_touch_the_store_from_the_loop(
    async_client: AsyncClient, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    assert iscoroutinefunction(views.async_quota_view)
    assert not iscoroutinefunction(views.quota_view)
    await async_client.aforce_login(member)
    views.LOOP_SEEN.clear()
    response = await async_client.get("/fn/async-quantity/?n=2")
    assert response.status_code == 200
    assert views.LOOP_SEEN == [False]  # the quantity (and consume) ran in a worker thread
    assert (await async_client.get("/fn/async-quota/")).json()["in_loop"] is True
    assert (await async_client.get("/fn/async-quantity/?n=2")).status_code == 429


# --- count="success" ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fn/success/", "/cbv/success/"])
@pytest.mark.parametrize(
    ("query", "status", "counted"),
    [("", 200, 1), ("?status=201", 201, 1), ("?status=404", 404, 0), ("?status=502", 502, 0)],
)
def test_count_on_success_refunds_answers_that_are_not_billable(
    client: Client,
    member: AbstractBaseUser,
    limited_tenant: Tenant,
    path: str,
    query: str,
    status: int,
    counted: int,
) -> None:
    client.force_login(member)
    response = client.get(path + query)
    assert response.status_code == status
    assert used(limited_tenant) == counted
    # The headers tell what remains after the refund.
    assert response["RateLimit"].startswith(f'"free-api_calls";r={3 - counted};')


def test_count_on_success_refunds_a_view_that_raises(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    with pytest.raises(RuntimeError, match="the view failed"):
        client.get("/fn/success/?fail=1")
    assert used(limited_tenant) == 0


def test_not_billable_statuses_are_configurable(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    with limits(NOT_BILLABLE_STATUSES=["5xx", 409]):
        client.get("/fn/success/?status=404")
        client.get("/fn/success/?status=409")
        client.get("/fn/success/?status=500")
    assert used(limited_tenant) == 1  # only the 404 is billable now


def test_count_on_success_still_refuses_before_the_view(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    statuses = [client.get("/fn/success/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


@run_async
async def test_async_count_on_success(
    async_client: AsyncClient, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    await async_client.aforce_login(member)
    assert (await async_client.get("/fn/async-success/?status=500")).status_code == 500
    assert (await async_client.get("/fn/async-success/")).status_code == 200
    with pytest.raises(RuntimeError):
        await async_client.get("/fn/async-success/?fail=1")
    assert await _used(limited_tenant) == 1


async def _used(tenant: Tenant) -> int:
    from asgiref.sync import sync_to_async

    return await sync_to_async(used)(tenant)


# --- who is asking ------------------------------------------------------------------------------


def test_anonymous_requests_get_401(client: Client, limited_tenant: Tenant) -> None:
    response = client.get("/fn/quota/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"
    page = client.get("/fn/quota/?q=1", **BROWSER)
    assert page.status_code == 401
    assert 'href="/accounts/login/?next=%2Ffn%2Fquota%2F%3Fq%3D1"' in page.content.decode()


def test_anonymous_requests_pass_through_when_allowed(
    client: Client, limited_tenant: Tenant
) -> None:
    with limits(ANONYMOUS_REQUESTS="allow"):
        response = client.get("/fn/quota/")
    assert response.status_code == 200
    assert response.json() == {"success": True, "tenant": None}
    assert not response.has_header("RateLimit")
    assert used(limited_tenant) == 0


def test_signed_in_user_without_tenant_gets_403(client: Client, db: None) -> None:
    client.force_login(UserFactory())
    response = client.get("/fn/quota/")
    assert response.status_code == 403
    assert response.json()["code"] == "no_tenant"


def test_a_feature_the_plan_lacks_is_403_on_a_quota_view(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    limited_tenant.plan = plan_with_limits("TINY", api_calls=5)  # no projects at all
    limited_tenant.save()
    client.force_login(member)
    response = client.get("/fn/project/")
    assert response.status_code == 403
    assert response.json()["code"] == "feature_not_in_plan"


def test_store_unavailable_is_503_never_500(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    with limits(STORE=UNAVAILABLE):
        response = client.get("/fn/quota/")
        page = client.get("/fn/quota/", **BROWSER)
    assert response.status_code == 503
    assert response.json() == {
        "success": False,
        "error": "Usage limits cannot be checked right now. Try again in a moment.",
        "code": "store_unavailable",
        "upgrade_url": None,
    }
    assert page.status_code == 503
    assert "Try again in a moment" in page.content.decode()


@run_async
async def test_store_unavailable_is_503_on_async_views(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    with limits(STORE=UNAVAILABLE):
        response = await async_client.get("/fn/async-quota/")
    assert response.status_code == 503


# --- @require_feature ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fn/feature/", "/fn/async-feature/"])
def test_a_missing_boolean_feature_is_403_with_an_upgrade_message(
    client: Client, member: AbstractBaseUser, path: str
) -> None:
    client.force_login(member)
    with limits(UPGRADE_URL="https://example.com/pricing"):
        response = client.get(path)
        page = client.get(path, **BROWSER)
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": "Your plan does not include Advanced analytics. Upgrade your plan.",
        "code": "feature_not_in_plan",
        "feature": "advanced_analytics",
        "plan": "FREE",
        "upgrade_url": "https://example.com/pricing",
    }
    assert page.status_code == 403
    assert 'href="https://example.com/pricing"' in page.content.decode()


@run_async
async def test_an_included_feature_passes_on_async_views(
    async_client: AsyncClient, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    await async_client.aforce_login(member)
    assert (await async_client.get("/fn/async-feature/")).status_code == 403
    limited_tenant.plan = await _pro_plan_with_analytics()
    await limited_tenant.asave()
    assert (await async_client.get("/fn/async-feature/")).status_code == 200


async def _pro_plan_with_analytics() -> Any:
    from asgiref.sync import sync_to_async

    return await sync_to_async(plan_with_limits)("PRO", api_calls=None, advanced_analytics=True)


def test_feature_of_a_canceled_subscription_is_402(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    limited_tenant.plan = plan_with_limits("PRO", advanced_analytics=True)
    limited_tenant.subscription_status = SubscriptionStatus.CANCELED
    limited_tenant.save()
    client.force_login(member)
    assert client.get("/fn/feature/").status_code == 402


def test_decorator_arguments_are_checked_when_decorating() -> None:
    from usage_limits.decorators import require_feature, require_quota

    with pytest.raises(ValueError, match="count"):
        require_quota("api_calls", count="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantity"):
        require_quota("api_calls", quantity=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantity"):
        require_quota("api_calls", quantity=0)
    with pytest.raises(ValueError, match="feature"):
        require_feature("")


@pytest.mark.parametrize("digits", ["\u00b2", "\u2460", "\u0663"])
def test_a_tenant_header_of_unicode_digits_is_refused_not_a_500(
    client: Client, member: AbstractBaseUser, digits: str
) -> None:
    client.force_login(member)
    response = client.get("/fn/quota/", HTTP_X_TENANT=digits)
    assert response.status_code == 403
    assert response.json()["code"] == "tenant_access_denied"


@pytest.fixture
def while_in_the_view() -> Any:
    from tests.enforcement_app.views import WHILE_IN_THE_VIEW

    yield WHILE_IN_THE_VIEW
    WHILE_IN_THE_VIEW.clear()


def test_a_failed_request_gives_nothing_back_to_a_count_reset_while_it_ran(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, while_in_the_view: Any
) -> None:
    """Seen before: the unit came off the new count, which then admitted one over its limit."""
    from usage_limits import consume, reset_usage

    def reset_and_fill() -> None:
        reset_usage(limited_tenant, "api_calls", reason="support")
        assert consume(limited_tenant, "api_calls", 3).allowed  # the new count is full (3)

    while_in_the_view.append(reset_and_fill)
    client.force_login(member)
    assert client.get("/fn/success/?status=500").status_code == 500
    assert used(limited_tenant) == 3
    assert not check_limit(limited_tenant, "api_calls").allowed


def test_a_failed_request_gives_back_to_the_period_it_was_counted_in(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, while_in_the_view: Any
) -> None:
    from usage_limits import consume, get_usage
    from usage_limits.periods import period_containing

    last_second = dt.datetime(2026, 11, 30, 23, 59, 59, tzinfo=dt.UTC)
    with time_machine.travel(last_second, tick=False) as clock:

        def december_comes_and_fills() -> None:
            clock.move_to(last_second + dt.timedelta(seconds=2))
            assert consume(limited_tenant, "api_calls", 3).allowed  # December's count is full

        while_in_the_view.append(december_comes_and_fills)
        client.force_login(member)
        assert client.get("/fn/success/?status=500").status_code == 500
        assert get_usage(limited_tenant).feature("api_calls").used == 3  # December's
    november = period_containing("monthly", last_second)
    from usage_limits.backends import CounterKey, get_store

    assert get_store().get(CounterKey(limited_tenant.pk, "api_calls", november)) == 0
