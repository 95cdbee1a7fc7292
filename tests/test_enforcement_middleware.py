"""UsageLimitsMiddleware: request.tenant / request.usage, path rules, exemptions, request events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, RequestFactory

from tests.enforcement_app.support import (  # noqa: F401  (fixtures)
    BROWSER,
    limited_tenant,
    member,
    run_async,
)
from usage_limits import check_limit
from usage_limits.middleware import UsageLimitsMiddleware
from usage_limits.models import Tenant, UsageEvent
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

MIDDLEWARE = "usage_limits.middleware.UsageLimitsMiddleware"


@pytest.fixture(autouse=True)
def enforced_paths(settings: Any) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE]
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "PATH_RULES": {r"^/api/": "api_calls"},
        "EXEMPT_PATHS": [r"^/admin/", r"^/api/health/"],
    }


def used(tenant: Tenant) -> int:
    return check_limit(tenant, "api_calls").used


def test_paths_matching_a_rule_are_counted_and_refused(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    responses = [client.get("/api/plain/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0]["RateLimit"].startswith('"free-api_calls";r=2;')
    assert responses[3].json()["error"] == "Limit reached. Upgrade your plan."
    assert responses[3].has_header("Retry-After")
    assert used(limited_tenant) == 3


def test_the_middleware_adapts_to_the_chain_it_is_in() -> None:
    async def async_chain(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert iscoroutinefunction(UsageLimitsMiddleware(async_chain))
    assert not iscoroutinefunction(UsageLimitsMiddleware(lambda request: HttpResponse()))


@run_async
async def test_the_middleware_runs_async_under_the_async_client(
    async_client: AsyncClient, member: AbstractBaseUser
) -> None:
    await async_client.aforce_login(member)
    statuses = [(await async_client.get("/api/plain/")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_other_paths_exemptions_and_preflights_are_not_counted(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    for _ in range(5):
        assert client.get("/plain/").status_code == 200
        assert client.get("/api/health/").status_code == 200
        assert client.options("/api/plain/").status_code == 200
    assert not client.get("/plain/").has_header("RateLimit")
    assert used(limited_tenant) == 0


def test_anonymous_requests_to_enforced_paths_get_401_others_pass(
    client: Client, limited_tenant: Tenant
) -> None:
    assert client.get("/api/plain/").status_code == 401
    assert client.get("/plain/").status_code == 200


def test_middleware_rules_can_count_only_successes(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "PATH_RULES": {r"^/api/": {"feature": "api_calls", "quantity": 2, "count": "success"}},
    }
    client.force_login(member)
    assert client.get("/api/nowhere/").status_code == 404
    assert used(limited_tenant) == 0
    assert client.get("/api/plain/").status_code == 200
    assert used(limited_tenant) == 2


def _capture_view(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant  # type: ignore[attr-defined]
    usage = request.usage  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "tenant": tenant.slug if tenant else None,
            "plan": usage.plan if usage else None,
            "api_calls": usage.feature("api_calls").used if usage else None,
        }
    )


def test_request_tenant_and_usage_are_lazy(
    rf: RequestFactory,
    member: AbstractBaseUser,
    limited_tenant: Tenant,
    django_assert_num_queries: Any,
) -> None:
    middleware = UsageLimitsMiddleware(_capture_view)
    request = rf.get("/plain/")
    request.user = member
    with django_assert_num_queries(0):
        UsageLimitsMiddleware(lambda r: HttpResponse())(request)  # never read: never resolved
    request = rf.get("/plain/")
    request.user = member
    response = middleware(request)
    assert json.loads(response.content) == {"tenant": "acme", "plan": "FREE", "api_calls": 0}


def test_request_tenant_is_falsy_without_a_tenant(rf: RequestFactory, db: None) -> None:
    from django.contrib.auth.models import AnonymousUser

    request = rf.get("/plain/")
    request.user = AnonymousUser()
    response = UsageLimitsMiddleware(_capture_view)(request)
    assert json.loads(response.content) == {"tenant": None, "plan": None, "api_calls": None}


def test_async_code_reads_the_tenant_with_atenant(
    rf: RequestFactory, member: AbstractBaseUser
) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        tenant = await request.atenant()  # type: ignore[attr-defined]
        usage = await request.ausage()  # type: ignore[attr-defined]
        return JsonResponse({"tenant": tenant.slug, "plan": usage.plan})

    async def scenario() -> Any:
        request = rf.get("/plain/")
        request.user = member
        return await UsageLimitsMiddleware(view)(request)

    assert json.loads(run_async(scenario)().content) == {"tenant": "acme", "plan": "FREE"}


def test_a_user_in_several_tenants_picks_one_by_header(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    other = TenantFactory(plan=plan_with_limits("STARTER", api_calls=1000), slug="globex")
    MembershipFactory(user=member, tenant=other, is_default=False)
    client.force_login(member)
    for _ in range(3):
        client.get("/api/plain/")
    assert client.get("/api/plain/").status_code == 429
    switched = client.get("/api/plain/", HTTP_X_TENANT="globex")
    assert switched.status_code == 200
    assert switched["RateLimit-Policy"].startswith('"starter-api_calls";q=1000')
    assert client.get("/api/plain/", HTTP_X_TENANT=str(other.pk)).status_code == 200
    assert check_limit(other, "api_calls").used == 2


def test_a_spoofed_tenant_header_is_refused_and_counts_nowhere(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    victim = TenantFactory(plan=plan_with_limits("STARTER", api_calls=1000), slug="victim")
    client.force_login(member)
    for asked in ("victim", str(victim.pk), "9" * 40, "no-such-tenant"):
        response = client.get("/api/plain/", HTTP_X_TENANT=asked)
        assert response.status_code == 403, asked
        assert response.json()["code"] == "tenant_access_denied"
    page = client.get("/api/plain/", HTTP_X_TENANT="victim", **BROWSER)
    assert page.status_code == 403
    assert "not a member" in page.content.decode()
    assert check_limit(victim, "api_calls").used == 0
    assert used(limited_tenant) == 0


def test_reading_a_spoofed_tenant_in_a_view_is_a_403(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    TenantFactory(plan=limited_tenant.plan, slug="victim")
    client.force_login(member)
    assert client.get("/whoami/").json() == {"tenant": "acme"}
    # Not an enforced path: the lazy request.tenant refuses when the view reads it.
    assert client.get("/whoami/", HTTP_X_TENANT="victim").status_code == 403


def test_header_picking_can_be_turned_off(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "TENANT_HEADER": None}
    client.force_login(member)
    assert client.get("/api/plain/", HTTP_X_TENANT="anything").status_code == 200
    assert used(limited_tenant) == 1


def resolve_by_api_key(request: HttpRequest) -> Tenant | None:
    key = request.headers.get("X-Api-Key")
    return Tenant.objects.filter(slug=key).first() if key else None


def test_a_custom_resolver_by_dotted_path(
    client: Client, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "TENANT_RESOLVER": f"{__name__}.resolve_by_api_key",
    }
    assert client.get("/api/plain/", HTTP_X_API_KEY="acme").status_code == 200
    assert client.get("/api/plain/").status_code == 401
    assert used(limited_tenant) == 1


def test_request_events_record_path_method_status_and_duration(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "REQUEST_EVENTS": True}
    client.force_login(member)
    client.post("/api/plain/")
    for _ in range(3):
        client.get("/api/plain/")
    events = list(UsageEvent.objects.filter(tenant=limited_tenant).order_by("id"))
    assert [e.accepted for e in events] == [True, True, True, False]
    first = events[0].metadata
    assert {k: first[k] for k in ("path", "method", "status")} == {
        "path": "/api/plain/",
        "method": "POST",
        "status": 200,
    }
    assert isinstance(first["duration_ms"], float)
    assert first["duration_ms"] >= 0
    assert "duration_ms" not in events[3].metadata  # refused: the view never ran
    assert used(limited_tenant) == 3


def test_without_request_events_nothing_is_written_to_the_ledger(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant
) -> None:
    client.force_login(member)
    client.get("/api/plain/")
    assert not UsageEvent.objects.exists()


def test_the_subdomain_resolver_checks_membership(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "TENANT_RESOLVER": "usage_limits.tenancy.resolve_tenant_from_subdomain",
    }
    TenantFactory(plan=limited_tenant.plan, slug="victim")
    assert client.get("/api/plain/", HTTP_HOST="acme.example.com").status_code == 401
    client.force_login(member)
    assert client.get("/api/plain/", HTTP_HOST="acme.example.com").status_code == 200
    assert client.get("/api/plain/", HTTP_HOST="acme.example.com:8000").status_code == 200
    refused = client.get("/api/plain/", HTTP_HOST="victim.example.com")
    assert refused.status_code == 403
    assert refused.json()["code"] == "tenant_access_denied"
    assert client.get("/api/plain/", HTTP_HOST="example.com").json()["code"] == "no_tenant"
    assert used(limited_tenant) == 2


def test_a_refunded_request_event_is_not_accepted(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "REQUEST_EVENTS": True,
        "PATH_RULES": {r"^/api/": {"feature": "api_calls", "count": "success"}},
    }
    client.force_login(member)
    client.get("/api/plain/")
    client.get("/api/nowhere/")
    events = list(UsageEvent.objects.filter(tenant=limited_tenant).order_by("id"))
    assert [(e.metadata["status"], e.accepted) for e in events] == [(200, True), (404, False)]
    assert used(limited_tenant) == 1


def test_the_default_membership_wins_else_the_oldest(rf: RequestFactory, db: None) -> None:
    from usage_limits.tenancy import resolve_tenant_from_membership

    plan = plan_with_limits("STARTER", api_calls=1000)
    user = UserFactory()
    first, second = TenantFactory(plan=plan), TenantFactory(plan=plan)
    MembershipFactory(user=user, tenant=first, is_default=False)
    favourite = MembershipFactory(user=user, tenant=second, is_default=True)
    MembershipFactory(tenant=first)  # someone else's membership changes nothing
    request = rf.get("/")
    request.user = user
    assert resolve_tenant_from_membership(request) == second
    favourite.is_default = False
    favourite.save()
    assert resolve_tenant_from_membership(request) == first


def test_a_refunded_request_of_a_billed_feature_is_never_reported(
    client: Client, member: AbstractBaseUser, limited_tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "REQUEST_EVENTS": True,
        "PATH_RULES": {r"^/api/": {"feature": "api_calls", "count": "success"}},
        "BILLING": {"METERS": {"api_calls": "api_requests"}},
    }
    client.force_login(member)
    client.get("/api/plain/")
    client.get("/api/nowhere/")
    states = list(
        UsageEvent.objects.filter(tenant=limited_tenant)
        .order_by("id")
        .values_list("metadata__status", "report_state")
    )
    assert states == [
        (200, UsageEvent.ReportState.PENDING),
        (404, UsageEvent.ReportState.NOT_REPORTED),
    ]
