"""Staff endpoints: POST /api/usage/reset/ and PATCH /api/usage/limits/."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from usage_limits import check_limit, consume, get_usage, set_usage
from usage_limits.api.permissions import LIMITS_PERMISSIONS, RESET_PERMISSIONS
from usage_limits.models import Tenant, TenantLimitOverride, UsageReset
from usage_limits.testing.factories import LimitOverrideFactory, TenantFactory

from .api_support import (
    ALL_ADMIN_PERMISSIONS,
    assert_matches_schema,
    member_client,
    staff_client,
)

pytestmark = pytest.mark.django_db

RESET = "/api/usage/reset/"
LIMITS = "/api/usage/limits/"


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return get_usage(tenant).feature(feature).used


def reset(client: APIClient, body: dict[str, Any]) -> Any:
    return client.post(RESET, body, format="json")


def patch(client: APIClient, body: dict[str, Any]) -> Any:
    return client.patch(LIMITS, body, format="json")


# --- reset -------------------------------------------------------------------------------------


def test_staff_reset_one_feature_and_leave_an_audit_row(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 60)
    client = staff_client(*RESET_PERMISSIONS)
    response = reset(client, {"tenant": tenant.slug, "feature": "api_calls", "reason": "goodwill"})
    assert response.status_code == 200
    data = assert_matches_schema(response, RESET, "post")["data"]
    assert data["tenant"]["slug"] == tenant.slug
    assert [(r["feature"], r["value_before"]) for r in data["resets"]] == [("api_calls", 60)]
    assert used(tenant) == 0
    audit = UsageReset.objects.get(pk=data["resets"][0]["reset_id"])
    assert (audit.source, audit.reason, audit.value_before) == ("api", "goodwill", 60)
    assert audit.performed_by is not None
    assert audit.performed_by.is_staff


def test_reset_without_a_feature_resets_every_metered_one_and_not_allocations(
    tenant: Tenant,
) -> None:
    consume(tenant, "api_calls", 5)
    set_usage(tenant, "projects", 2)
    response = reset(staff_client(*RESET_PERMISSIONS), {"tenant": str(tenant.pk), "reason": "x"})
    assert [r["feature"] for r in response.json()["data"]["resets"]] == ["api_calls"]
    assert (used(tenant), used(tenant, "projects")) == (0, 2)


@pytest.mark.parametrize(
    ("client_kind", "expected"),
    [("anonymous", 401), ("member", 403), ("staff_without_permission", 403), ("not_staff", 403)],
)
def test_reset_is_for_staff_with_the_permission(
    tenant: Tenant, client_kind: str, expected: int
) -> None:
    consume(tenant, "api_calls", 9)
    client = {
        "anonymous": lambda: APIClient(),
        "member": lambda: member_client(tenant),
        "staff_without_permission": lambda: staff_client(),
        "not_staff": lambda: staff_client(*RESET_PERMISSIONS, staff=False),
    }[client_kind]()
    response = reset(client, {"tenant": tenant.slug, "reason": "let me in"})
    assert response.status_code == expected
    assert assert_matches_schema(response, RESET, "post")["success"] is False
    assert used(tenant) == 9
    assert not UsageReset.objects.exists()


def test_an_unknown_tenant_is_404(tenant: Tenant) -> None:
    client = staff_client(*RESET_PERMISSIONS)
    for reference in ("no-such-tenant", "999999", "9" * 30):
        response = reset(client, {"tenant": reference, "reason": "x"})
        assert response.status_code == 404
        assert assert_matches_schema(response, RESET, "post")["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "x"}, "tenant"),
        ({"tenant": "{slug}"}, "reason"),
        ({"tenant": "{slug}", "reason": 5}, "reason"),
        ({"tenant": "{slug}", "reason": "x", "feature": "nope"}, "feature"),
        ({"tenant": "{slug}", "reason": "x", "feature": "advanced_analytics"}, "feature"),
        ({"tenant": "{slug}", "reason": "x", "feature": 3}, "feature"),
    ],
)
def test_malformed_resets_are_400_field_errors(
    tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    body = {k: (v.format(slug=tenant.slug) if isinstance(v, str) else v) for k, v in body.items()}
    response = reset(staff_client(*RESET_PERMISSIONS), body)
    assert response.status_code == 400
    assert field in assert_matches_schema(response, RESET, "post")["errors"]


# --- limits ------------------------------------------------------------------------------------


def test_staff_override_a_limit_and_the_next_check_sees_it(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 100)
    assert not check_limit(tenant, "api_calls").allowed
    client = staff_client(*LIMITS_PERMISSIONS)
    response = patch(
        client, {"tenant": tenant.slug, "limits": {"api_calls": 10000}, "reason": "deal"}
    )
    assert response.status_code == 200
    data = assert_matches_schema(response, LIMITS, "patch")["data"]
    api_calls = next(f for f in data["features"] if f["feature"] == "api_calls")
    assert (api_calls["limit"], api_calls["current"]) == (10000, 100)
    assert check_limit(tenant, "api_calls").allowed
    override = TenantLimitOverride.objects.get(tenant=tenant, feature="api_calls")
    assert (override.limit, override.reason) == (10000, "deal")


def test_minus_one_is_unlimited_and_null_removes_the_override(tenant: Tenant) -> None:
    LimitOverrideFactory(tenant=tenant, feature="projects", limit=50)
    client = staff_client(*LIMITS_PERMISSIONS)
    data = patch(
        client, {"tenant": tenant.slug, "limits": {"api_calls": -1, "projects": None}}
    ).json()["data"]
    features = {f["feature"]: f for f in data["features"]}
    assert features["api_calls"]["unlimited"] is True
    assert features["projects"]["limit"] == 3  # the plan's again
    assert not TenantLimitOverride.objects.filter(tenant=tenant, feature="projects").exists()


def test_reset_mode_and_period_change_how_the_tenant_counts(tenant: Tenant) -> None:
    client = staff_client(*LIMITS_PERMISSIONS)
    response = patch(
        client, {"tenant": tenant.slug, "reset_mode": "scheduled", "reset_period": "daily"}
    )
    assert response.status_code == 200
    tenant.refresh_from_db()
    assert (tenant.reset_mode, tenant.reset_period) == ("scheduled", "daily")
    period = consume(tenant, "api_calls").period
    assert period.name == "daily"
    patch(client, {"tenant": tenant.slug, "reset_mode": "", "reset_period": ""})
    assert consume(tenant, "api_calls").period.name == "monthly"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limits": {"api_calls": "many"}}, "limits"),
        ({"limits": {"api_calls": -2}}, "limits"),
        ({"limits": {"api_calls": 1.5}}, "limits"),
        ({"limits": {"nope": 5}}, "limits"),
        ({"limits": {"advanced_analytics": 5}}, "limits"),
        ({"limits": ["api_calls"]}, "limits"),
        ({"reset_mode": "hourly"}, "reset_mode"),
        ({"reset_period": "fortnightly"}, "reset_period"),
        ({}, "non_field_errors"),
    ],
)
def test_malformed_limit_changes_are_400_and_change_nothing(
    tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = patch(staff_client(*LIMITS_PERMISSIONS), {"tenant": tenant.slug, **body})
    assert response.status_code == 400
    assert field in assert_matches_schema(response, LIMITS, "patch")["errors"]
    assert not TenantLimitOverride.objects.exists()


def test_a_boolean_feature_can_be_switched_on(tenant: Tenant) -> None:
    client = staff_client(*LIMITS_PERMISSIONS)
    data = patch(client, {"tenant": tenant.slug, "limits": {"advanced_analytics": 1}}).json()
    analytics = next(f for f in data["data"]["features"] if f["feature"] == "advanced_analytics")
    assert analytics["included"] is True


@pytest.mark.parametrize(
    ("client_kind", "expected"),
    [("anonymous", 401), ("member", 403), ("reset_only", 403), ("not_staff", 403)],
)
def test_limits_are_for_staff_with_the_change_permissions(
    tenant: Tenant, client_kind: str, expected: int
) -> None:
    client = {
        "anonymous": lambda: APIClient(),
        "member": lambda: member_client(tenant),
        "reset_only": lambda: staff_client(*RESET_PERMISSIONS),
        "not_staff": lambda: staff_client(*LIMITS_PERMISSIONS, staff=False),
    }[client_kind]()
    response = patch(client, {"tenant": tenant.slug, "limits": {"api_calls": 10**6}})
    assert response.status_code == expected
    assert not TenantLimitOverride.objects.exists()


def test_limits_of_an_unknown_tenant_are_404() -> None:
    response = patch(staff_client(*ALL_ADMIN_PERMISSIONS), {"tenant": "ghost", "reset_mode": ""})
    assert response.status_code == 404


def test_a_superuser_needs_no_explicit_permissions(tenant: Tenant) -> None:
    from usage_limits.testing.factories import UserFactory

    from .api_support import token_client

    client = token_client(UserFactory(is_staff=True, is_superuser=True))
    assert patch(client, {"tenant": tenant.slug, "limits": {"api_calls": 5}}).status_code == 200
    assert reset(client, {"tenant": tenant.slug, "reason": "r"}).status_code == 200


def test_other_tenants_are_untouched(tenant: Tenant) -> None:
    other = TenantFactory(plan=tenant.plan)
    consume(other, "api_calls", 4)
    consume(tenant, "api_calls", 4)
    client = staff_client(*ALL_ADMIN_PERMISSIONS)
    reset(client, {"tenant": tenant.slug, "reason": "r"})
    patch(client, {"tenant": tenant.slug, "limits": {"api_calls": 1}})
    assert used(other) == 4
    assert get_usage(other).feature("api_calls").limit == 100
