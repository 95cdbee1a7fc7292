"""The dashboard page: who sees it, what it shows, and what it costs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoAssertNumQueries

from usage_limits import consume, set_usage
from usage_limits.models import Tenant
from usage_limits.rules import forget_all
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)
from usage_limits.testing.history import record_history

from .html import assert_contains_html

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.dashboard_urls")]


@pytest.fixture(autouse=True)
def _march_22() -> Iterator[None]:
    with time_machine.travel(dt.datetime(2026, 3, 22, 12, tzinfo=dt.UTC), tick=False):
        yield


def signed_in(tenant: Tenant) -> Client:
    client = Client()
    client.force_login(MembershipFactory(tenant=tenant).user)
    return client


def test_the_url_is_named_in_the_apps_namespace() -> None:
    assert reverse("usage_limits:dashboard") == "/usage/"


def test_anonymous_visitors_are_sent_to_sign_in(client: Client) -> None:
    response = client.get("/usage/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/usage/")


def test_a_user_without_a_tenant_is_told_so(client: Client) -> None:
    client.force_login(UserFactory())
    response = client.get("/usage/")
    assert response.status_code == 404
    assert b"not a member of any workspace" in response.content


def test_the_page_shows_plan_meters_reset_flags_and_the_upgrade_call(
    tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "UPGRADE_URL": "/pricing/"}
    consume(tenant, "api_calls", 70)
    set_usage(tenant, "projects", 1)
    response = signed_in(tenant).get("/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Usage · Free plan</title>" in html
    assert_contains_html(
        html, '<link rel="stylesheet" href="/static/usage_limits/usage_limits.css">'
    )
    assert "Usage resets in 10 days" in html
    assert 'data-feature="api_calls" data-level="amber"' in html
    assert 'data-feature="projects" data-level="ok"' in html
    assert 'data-feature="seats" data-level="ok"' in html
    assert "API calls: 70% of your plan&#x27;s limit used." in html
    assert '<a class="ul-button" href="/pricing/">' in html
    assert 'class="ul-flag ul-flag--excluded" data-feature="advanced_analytics"' in html
    assert "API calls, last 30 days" in html
    assert 'style="' not in html  # no inline styles: everything is in the stylesheet


def test_no_call_to_action_while_every_meter_is_ok(tenant: Tenant, settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "UPGRADE_URL": "/pricing/"}
    consume(tenant, "api_calls", 59)
    html = signed_in(tenant).get("/usage/").content.decode()
    assert "ul-callout" not in html
    assert "Compare plans" in html


def test_the_query_string_picks_the_history_shown(tenant: Tenant) -> None:
    record_history(tenant, "api_calls", {dt.date(2026, 3, 20): 9})
    client = signed_in(tenant)
    html = client.get("/usage/", {"days": "7"}).content.decode()
    assert "API calls, last 7 days" in html
    assert_contains_html(
        html, '<a class="ul-chart__range" href="?days=7" aria-current="page">7 days</a>'
    )
    # unknown features and silly ranges fall back quietly
    html = client.get("/usage/", {"feature": "nope", "days": "-3"}).content.decode()
    assert "API calls, last 30 days" in html


def test_a_plan_with_no_metered_feature_has_no_history_section(db: None) -> None:
    tenant = TenantFactory(plan=plan_with_limits("SEATS", seats=3))
    html = signed_in(tenant).get("/usage/").content.decode()
    assert "ul-history" not in html
    assert 'data-feature="seats"' in html


@pytest.mark.parametrize("feature_count", [3, 20])
def test_the_page_costs_the_same_queries_whatever_the_number_of_features(
    db: None, settings: Any, feature_count: int, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    features = {
        f"feature_{i}": {"kind": "metered", "period": "monthly"} for i in range(feature_count)
    }
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "FEATURES": {**settings.USAGE_LIMITS["FEATURES"], **features},
    }
    tenant = TenantFactory(plan=plan_with_limits("MANY", **{name: 100 for name in features}))
    for i in range(feature_count):
        consume(tenant, f"feature_{i}", (i * 7) % 100 + 1)
    client = signed_in(tenant)
    # session, user, membership (with tenant and plan), the rules version and the counters, the
    # rules version and the history
    with django_assert_num_queries(7):
        response = client.get("/usage/")
    assert response.content.decode().count('role="progressbar"') == feature_count
    # with nothing cached (as in a new process): + the tenant, its overrides, the plan and its
    # limits, and the membership again
    forget_all()
    with django_assert_num_queries(9):
        response = client.get("/usage/")
    assert response.content.decode().count('role="progressbar"') == feature_count


def test_with_history_off_the_page_shows_no_stale_chart(tenant: Tenant, settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": False}
    html = signed_in(tenant).get("/usage/").content.decode()
    assert "ul-history" not in html
    assert 'data-feature="api_calls"' in html


def test_the_page_shows_the_overage_estimate_when_features_are_priced(
    tenant: Tenant, settings: Any
) -> None:
    consume(tenant, "api_calls", 100)
    page = signed_in(tenant).get(reverse("usage_limits:dashboard")).content.decode()
    assert "Estimated overage" not in page
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "BILLING": {"PRICING": {"api_calls": {"included": 80, "unit_price": "0.10"}}},
    }
    page = signed_in(tenant).get(reverse("usage_limits:dashboard")).content.decode()
    assert "Estimated overage this period" in page
    assert_contains_html(
        page,
        '<tfoot><tr><th scope="row" colspan="4">Total so far</th>'
        '<td class="ul-estimate__total">2.00 USD</td></tr></tfoot>',
    )
