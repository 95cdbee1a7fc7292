"""GET /api/usage/ and GET /api/usage/history/: shapes, pagination, who sees what."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from usage_limits import consume, increment_usage, set_usage
from usage_limits.models import Tenant, UsageRecord
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

from .api_support import assert_matches_schema, member_client, staff_client, token_client

pytestmark = pytest.mark.django_db

USAGE = "/api/usage/"
HISTORY = "/api/usage/history/"


def test_usage_in_the_seeds_shape_with_the_meter_fields(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 47)
    set_usage(tenant, "projects", 2)
    response = member_client(tenant).get(USAGE)
    assert response.status_code == 200
    body = assert_matches_schema(response, USAGE, "get")
    assert body["success"] is True
    data = body["data"]
    assert data["plan"] == "FREE"
    assert data["tenant"] == {"id": tenant.pk, "name": tenant.name, "slug": tenant.slug}
    features = {f["feature"]: f for f in data["features"]}
    api_calls = features["api_calls"]
    assert {k: api_calls[k] for k in ("current", "limit", "remaining", "level", "unlimited")} == {
        "current": 47,
        "limit": 100,
        "remaining": 53,
        "level": "ok",
        "unlimited": False,
    }
    assert api_calls["kind"] == "metered"
    assert api_calls["resets_at"] is not None
    assert features["projects"]["current"] == 2
    assert features["projects"]["resets_at"] is None
    assert features["advanced_analytics"]["included"] is False
    # Not included is not "used up": no percentage, no red level for a boolean feature.
    assert features["advanced_analytics"]["percent"] == 0
    assert features["advanced_analytics"]["level"] == "ok"


def test_unlimited_features_say_so(pro_plan: object) -> None:
    tenant = TenantFactory(plan=pro_plan)
    increment_usage(tenant, "api_calls", 5)
    body = member_client(tenant).get(USAGE).json()
    api_calls = next(f for f in body["data"]["features"] if f["feature"] == "api_calls")
    assert (api_calls["limit"], api_calls["unlimited"], api_calls["remaining"]) == (-1, True, None)


def test_session_authentication_works_too(tenant: Tenant) -> None:
    membership = MembershipFactory(tenant=tenant)
    client = APIClient()
    client.force_login(membership.user)
    assert client.get(USAGE).status_code == 200


def test_anonymous_callers_get_401_with_the_error_body() -> None:
    response = APIClient().get(USAGE)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    body = assert_matches_schema(response, USAGE, "get")
    assert body["success"] is False
    assert body["code"] == "not_authenticated"


def test_a_bad_token_is_401(tenant: Tenant) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get(USAGE).status_code == 401


def test_a_user_without_a_tenant_gets_403() -> None:
    response = token_client(UserFactory()).get(USAGE)
    assert response.status_code == 403
    assert assert_matches_schema(response, USAGE, "get")["code"] == "no_tenant"


def test_asking_for_another_tenant_tells_nothing_about_it(tenant: Tenant) -> None:
    other = TenantFactory(plan=tenant.plan, name="Rival Inc")
    consume(other, "api_calls", 99)
    client = member_client(tenant)
    for path in (USAGE, HISTORY):
        foreign = client.get(path, HTTP_X_TENANT=other.slug)
        by_id = client.get(path, HTTP_X_TENANT=str(other.pk))
        missing = client.get(path, HTTP_X_TENANT="no-such-tenant")
        assert foreign.status_code == by_id.status_code == missing.status_code == 403
        for digits in ("\u00b2", "\u2460", "\u0663"):  # superscript two, circled one, Arabic three
            assert client.get(path, HTTP_X_TENANT=digits).content == missing.content
        assert foreign.content == by_id.content == missing.content
        assert b"Rival" not in foreign.content
        assert b"99" not in foreign.content


def test_a_member_of_two_tenants_picks_one_with_the_header(tenant: Tenant) -> None:
    second = TenantFactory(plan=tenant.plan)
    user = UserFactory()
    MembershipFactory(tenant=tenant, user=user, is_default=True)
    MembershipFactory(tenant=second, user=user, is_default=False)
    increment_usage(second, "api_calls", 7)
    client = token_client(user)
    assert client.get(USAGE).json()["data"]["tenant"]["id"] == tenant.pk
    picked = client.get(USAGE, HTTP_X_TENANT=second.slug).json()["data"]
    assert picked["tenant"]["id"] == second.pk
    assert picked["features"][0]["current"] == 7


def test_staff_without_a_tenant_get_no_usage_endpoint_access() -> None:
    assert staff_client(staff=True).get(USAGE).status_code == 403


# --- history -----------------------------------------------------------------------------------


def _past_periods(tenant: Tenant, feature: str, months: int) -> None:
    now = timezone.now()
    for back in range(1, months + 1):
        start = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)) - dt.timedelta(
            days=31 * back
        )
        start = start.replace(day=1)
        UsageRecord.objects.create(
            tenant=tenant,
            feature=feature,
            period_key=f"{start:%Y-%m}",
            period_start=start,
            period_end=start + dt.timedelta(days=28),
            used=back * 10,
            created_at=start,
            updated_at=start,
        )


def test_history_lists_periods_newest_first_with_the_current_one_marked(tenant: Tenant) -> None:
    _past_periods(tenant, "api_calls", 3)
    consume(tenant, "api_calls", 5)
    response = member_client(tenant).get(HISTORY, {"feature": "api_calls"})
    assert response.status_code == 200
    body = assert_matches_schema(response, HISTORY, "get")
    results = body["data"]["results"]
    assert [r["used"] for r in results] == [5, 10, 20, 30]
    assert [r["current"] for r in results] == [True, False, False, False]
    starts = [r["start"] for r in results]
    assert starts == sorted(starts, reverse=True)
    assert {r["granularity"] for r in results} == {"period"}
    assert body["data"]["count"] == 4


def test_history_pages_with_limit_and_offset(tenant: Tenant) -> None:
    _past_periods(tenant, "api_calls", 5)
    client = member_client(tenant)
    first = client.get(HISTORY, {"feature": "api_calls", "limit": 2}).json()["data"]
    assert first["count"] == 5
    assert [r["used"] for r in first["results"]] == [10, 20]
    assert first["previous"] is None
    assert "offset=2" in first["next"]
    second = client.get(first["next"]).json()["data"]
    assert [r["used"] for r in second["results"]] == [30, 40]
    last = client.get(second["next"]).json()["data"]
    assert [r["used"] for r in last["results"]] == [50]
    assert last["next"] is None


def test_history_without_a_feature_lists_every_feature(tenant: Tenant) -> None:
    consume(tenant, "api_calls")
    set_usage(tenant, "projects", 1)
    results = member_client(tenant).get(HISTORY).json()["data"]["results"]
    assert {r["feature"] for r in results} == {"api_calls", "projects"}


def test_history_never_shows_another_tenants_rows(tenant: Tenant) -> None:
    other = TenantFactory(plan=tenant.plan)
    _past_periods(other, "api_calls", 2)
    consume(other, "api_calls", 3)
    consume(tenant, "api_calls", 1)
    results = member_client(tenant).get(HISTORY).json()["data"]["results"]
    assert [r["used"] for r in results] == [1]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"feature": "nope"}, "feature"),
        ({"feature": "api_calls", "limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "9" * 25}, "offset"),
        ({"limit": "9" * 25}, "limit"),
        # Digits to str.isdigit() that int() refuses or misreads: 400, never 500.
        ({"limit": "\u00b2"}, "limit"),
        ({"offset": "\u2460"}, "offset"),
        ({"offset": "\u0663"}, "offset"),
        ({"granularity": "hour"}, "granularity"),
    ],
)
def test_bad_history_parameters_are_400_field_errors(
    tenant: Tenant, params: dict[str, str], field: str
) -> None:
    response = member_client(tenant).get(HISTORY, params)
    assert response.status_code == 400
    body = assert_matches_schema(response, HISTORY, "get")
    assert field in body["errors"]


def test_usage_costs_a_fixed_number_of_queries(
    tenant: Tenant, django_assert_num_queries: Any
) -> None:
    client = member_client(tenant)
    consume(tenant, "api_calls")
    client.get(USAGE)  # warms the rules cache
    # token, membership (the resolver), the tenant's rules version, every counter in one query
    with django_assert_num_queries(4):
        assert client.get(USAGE).status_code == 200


def test_history_of_a_feature_the_plan_no_longer_has(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 2)
    tenant.plan = plan_with_limits("TINY", projects=1)
    tenant.save()
    results = member_client(tenant).get(HISTORY, {"feature": "api_calls"}).json()["data"]["results"]
    assert [r["used"] for r in results] == [2]


def test_usage_carries_the_overage_estimate_when_features_are_priced(
    tenant: Tenant, settings: Any
) -> None:
    assert member_client(tenant).get(USAGE).json()["data"]["estimate"] is None
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "BILLING": {"PRICING": {"api_calls": {"included": 100, "unit_price": "0.25"}}},
    }
    increment_usage(tenant, "api_calls", 130)
    response = member_client(tenant).get(USAGE)
    body = assert_matches_schema(response, USAGE, "get")
    estimate = body["data"]["estimate"]
    assert (estimate["total"], estimate["currency"]) == ("7.50", "usd")
    [line] = estimate["lines"]
    assert (line["feature"], line["used"], line["included"], line["overage"], line["amount"]) == (
        "api_calls",
        130,
        100,
        30,
        "7.50",
    )


def test_history_per_day_lists_the_daily_buckets_newest_first(tenant: Tenant) -> None:
    for day, calls in [(3, 4), (4, 6), (5, 1)]:
        with time_machine.travel(dt.datetime(2026, 3, day, 15, tzinfo=dt.UTC), tick=False):
            consume(tenant, "api_calls", calls)
    with time_machine.travel(dt.datetime(2026, 3, 5, 18, tzinfo=dt.UTC), tick=False):
        response = member_client(tenant).get(
            HISTORY, {"feature": "api_calls", "granularity": "day"}
        )
        body = assert_matches_schema(response, HISTORY, "get")
    results = body["data"]["results"]
    assert [(r["period"], r["used"], r["current"]) for r in results] == [
        ("2026-03-05", 1, True),
        ("2026-03-04", 6, False),
        ("2026-03-03", 4, False),
    ]
    assert (results[0]["start"], results[0]["end"]) == (
        "2026-03-05T00:00:00+00:00",
        "2026-03-06T00:00:00+00:00",
    )
    assert {r["granularity"] for r in results} == {"day"}
