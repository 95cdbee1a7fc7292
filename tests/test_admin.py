"""Every admin page, its filters and search, the usage panel and the overview page."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import time_machine
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.admin_demo import NOW, Demo, build_demo
from usage_limits import increment_usage
from usage_limits.backends import CounterKey
from usage_limits.backends.database import DatabaseStore
from usage_limits.exceptions import StoreUnavailable
from usage_limits.models import (
    Tenant,
    TenantLimitOverride,
    UsageAlert,
    UsageOverview,
    UsageRecord,
    UsageReset,
)
from usage_limits.rules import forget_tenant
from usage_limits.testing.factories import TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo() -> Iterator[Demo]:
    with time_machine.travel(NOW, tick=False) as clock:
        yield build_demo(clock)


def changelist(model: type[Any]) -> str:
    return reverse(f"admin:usage_limits_{model._meta.model_name}_changelist")


def listed(client: Client, model: type[Any], **params: str) -> list[Any]:
    response = client.get(changelist(model), params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def records(client: Client, **params: str) -> set[tuple[str, str, str]]:
    return {(r.tenant.slug, r.feature, r.period_key) for r in listed(client, UsageRecord, **params)}


# --- every page --------------------------------------------------------------------------------


def our_models() -> list[type[Any]]:
    return [m for m in admin.site._registry if m._meta.app_label == "usage_limits"]


def test_every_model_operators_look_at_is_registered() -> None:
    names = {m.__name__ for m in our_models()}
    assert names == {
        "Plan",
        "Tenant",
        "TenantLimitOverride",
        "UsageRecord",
        "UsageReset",
        "UsageAlert",
        "UsageEvent",
        "StripeWebhookEvent",
        "UsageOverview",
    }


def test_every_admin_page_answers_200_for_a_superuser(admin_client: Client, demo: Demo) -> None:
    pages = [
        reverse("admin:index"),
        reverse("admin:app_list", args=["usage_limits"]),
        reverse("admin:usage_limits_tenant_overview"),
        reverse("admin:usage_limits_tenant_history", args=[demo.acme.pk]),
    ]
    for model in our_models():
        if model is UsageOverview:  # an entry on the index, not a list: see the test below
            continue
        name = model._meta.model_name
        pages.append(reverse(f"admin:usage_limits_{name}_changelist"))
        first = model._default_manager.order_by("pk").first()
        assert first is not None, f"the demo data has no {name}"
        pages.append(reverse(f"admin:usage_limits_{name}_change", args=[first.pk]))
        if admin.site._registry[model].has_add_permission(_request_for(admin_client)):
            pages.append(reverse(f"admin:usage_limits_{name}_add"))
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page


def _request_for(client: Client) -> Any:
    request = client.get(reverse("admin:index")).wsgi_request
    return request


def test_counters_and_the_audit_trail_are_read_only_even_for_superusers(
    admin_client: Client, demo: Demo
) -> None:
    record = UsageRecord.objects.filter(tenant=demo.acme, feature="api_calls").get()
    assert admin_client.get(reverse("admin:usage_limits_usagerecord_add")).status_code == 403
    url = reverse("admin:usage_limits_usagerecord_change", args=[record.pk])
    admin_client.post(url, {"used": 0})
    assert UsageRecord.objects.get(pk=record.pk).used == 95
    delete = reverse("admin:usage_limits_usagereset_delete", args=[UsageReset.objects.get().pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert UsageReset.objects.count() == 1


def test_the_app_index_and_the_tenant_list_link_to_the_overview(
    admin_client: Client, demo: Demo
) -> None:
    overview = reverse("admin:usage_limits_tenant_overview")
    for page in (reverse("admin:app_list", args=["usage_limits"]), changelist(Tenant)):
        assert f'href="{overview}"' in admin_client.get(page).content.decode()


# --- tenants -----------------------------------------------------------------------------------


def test_tenant_filters_and_search(admin_client: Client, demo: Demo) -> None:
    def slugs(**params: str) -> set[str]:
        return {t.slug for t in listed(admin_client, Tenant, **params)}

    assert slugs(plan__id__exact=str(demo.pro.pk)) == {"delta"}
    assert slugs(subscription_status__exact="past_due") == {"gamma"}
    assert slugs(q="eps") == {"epsilon"}
    assert slugs(q="alice") == {"acme"}  # a member's username
    Tenant.objects.filter(slug="beta").update(reset_mode="scheduled")
    Tenant.objects.filter(slug="gamma").update(reset_mode="lazy")
    assert slugs(reset_mode="scheduled") == {"beta"}
    # lazy is the setting's default: tenants without a mode of their own use it
    assert slugs(reset_mode="lazy") == {"acme", "gamma", "delta", "epsilon"}


def test_the_tenant_page_shows_its_meters_with_levels(admin_client: Client, demo: Demo) -> None:
    page = admin_client.get(reverse("admin:usage_limits_tenant_change", args=[demo.acme.pk]))
    html = page.content.decode()
    assert 'class="ul-feature ul-feature-api_calls"' in html
    api_calls = html.split("ul-feature-api_calls", 1)[1].split("</tr>", 1)[0]
    assert "<td>95</td>" in api_calls
    assert "<td>100</td>" in api_calls
    assert 'class="ul-level ul-level-red">red<' in api_calls
    assert "2026-03" in api_calls
    projects = html.split("ul-feature-projects", 1)[1].split("</tr>", 1)[0]
    assert 'class="ul-level ul-level-amber">amber<' in projects  # 2 of 3
    analytics = html.split("ul-feature-advanced_analytics", 1)[1].split("</tr>", 1)[0]
    assert "not included" in analytics
    assert "usage_limits/admin/usage_limits.css" in html
    # Its links lead to this tenant's counters and reset history.
    counters = admin_client.get(f"{changelist(UsageRecord)}?tenant__id__exact={demo.acme.pk}")
    assert {r.tenant for r in counters.context["cl"].result_list} == {demo.acme}
    resets = admin_client.get(f"{changelist(UsageReset)}?tenant__id__exact={demo.gamma.pk}")
    assert len(resets.context["cl"].result_list) == 1

    other = admin_client.get(reverse("admin:usage_limits_tenant_change", args=[demo.epsilon.pk]))
    epsilon = other.content.decode().split("ul-feature-api_calls", 1)[1].split("</tr>", 1)[0]
    assert "(override)" in epsilon
    assert "<td>60</td>" in epsilon
    assert "<td>50</td>" in epsilon


def test_an_override_added_inline_records_who_granted_it(admin_client: Client, demo: Demo) -> None:
    url = reverse("admin:usage_limits_tenant_change", args=[demo.beta.pk])
    data = {
        "name": "Beta",
        "slug": "beta",
        "plan": str(demo.free.pk),
        "subscription_status": "trialing",
        "reset_mode": "",
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "1",
        "memberships-0-id": str(demo.beta.memberships.get().pk),
        "memberships-0-tenant": str(demo.beta.pk),
        "memberships-0-user": str(demo.beta.memberships.get().user_id),
        "memberships-0-role": "member",
        "memberships-0-is_default": "on",
        "limit_overrides-TOTAL_FORMS": "1",
        "limit_overrides-INITIAL_FORMS": "0",
        "limit_overrides-0-feature": "api_calls",
        "limit_overrides-0-limit": "500",
        "limit_overrides-0-reason": "Launch week",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    override = TenantLimitOverride.objects.get(tenant=demo.beta)
    assert (override.limit, override.reason, override.created_by.username) == (
        500,
        "Launch week",
        "admin",
    )
    # The cached rules were dropped: the new limit applies at once.
    assert increment_usage(demo.beta, "api_calls").limit == 500


def test_an_override_for_an_unknown_feature_is_refused(admin_client: Client, demo: Demo) -> None:
    response = admin_client.post(
        reverse("admin:usage_limits_tenantlimitoverride_add"),
        {"tenant": str(demo.acme.pk), "feature": "api_cals", "limit": "5"},
    )
    assert response.status_code == 200
    assert "feature" in response.context["adminform"].form.errors
    assert not TenantLimitOverride.objects.filter(tenant=demo.acme).exists()


def test_switching_a_tenant_to_manual_resets_counts_from_now(
    admin_client: Client, demo: Demo
) -> None:
    url = reverse("admin:usage_limits_tenant_change", args=[demo.delta.pk])
    data = {
        "name": "Delta",
        "slug": "delta",
        "plan": str(demo.pro.pk),
        "subscription_status": "active",
        "reset_mode": "manual",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "limit_overrides-TOTAL_FORMS": "0",
        "limit_overrides-INITIAL_FORMS": "0",
    }
    assert admin_client.post(url, data).status_code == 302
    assert Tenant.objects.get(pk=demo.delta.pk).counting_since == NOW


# --- counters ----------------------------------------------------------------------------------


def test_usage_records_filter_by_level_in_the_database(admin_client: Client, demo: Demo) -> None:
    march = "2026-03"
    assert records(admin_client, level="amber", feature="api_calls") == {
        ("acme", "api_calls", march),
        ("beta", "api_calls", march),
        ("epsilon", "api_calls", march),
        ("gamma", "api_calls", "2026-02"),  # 70 of 100 in the closed February period
    }
    assert records(admin_client, level="red") == {
        ("acme", "api_calls", march),
        ("epsilon", "api_calls", march),
        ("acme", "seats", "all"),  # 1 of 1
    }
    assert records(admin_client, level="over") == {
        ("epsilon", "api_calls", march),
        ("acme", "seats", "all"),
    }


def test_the_level_filter_follows_the_configured_thresholds(
    admin_client: Client, demo: Demo, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "METER_THRESHOLDS": {"amber": 9, "red": 96}}
    assert records(admin_client, level="red", feature="api_calls", period="current") == {
        ("epsilon", "api_calls", "2026-03")
    }
    assert ("gamma", "api_calls", "2026-03") in records(admin_client, level="amber")


def test_usage_records_filter_by_feature_period_and_plan(admin_client: Client, demo: Demo) -> None:
    assert records(admin_client, feature="projects") == {
        ("acme", "projects", "all"),
        ("gamma", "projects", "all"),
    }
    assert records(admin_client, period="2026-02") == {("gamma", "api_calls", "2026-02")}
    assert records(admin_client, period="closed") == {("gamma", "api_calls", "2026-02")}
    current = records(admin_client, period="current")
    assert ("gamma", "api_calls", "2026-02") not in current
    assert ("gamma", "api_calls", "2026-03") in current
    assert records(admin_client, **{"tenant__plan__id__exact": str(demo.pro.pk)}) == {
        ("delta", "api_calls", "2026-03")
    }


def test_usage_records_search_by_tenant(admin_client: Client, demo: Demo) -> None:
    assert {slug for slug, _f, _p in records(admin_client, q="gam")} == {"gamma"}
    assert records(admin_client, q="nobody") == set()


def test_usage_record_list_shows_limits_percent_and_levels(
    admin_client: Client, demo: Demo
) -> None:
    html = admin_client.get(changelist(UsageRecord), {"q": "epsilon"}).content.decode()
    assert "120.0 %" in html
    assert '<span class="ul-level ul-level-red">red</span>' in html
    html = admin_client.get(changelist(UsageRecord), {"q": "delta"}).content.decode()
    assert "unlimited" in html


def test_the_audit_list_filters_and_searches(admin_client: Client, demo: Demo) -> None:
    [reset] = listed(admin_client, UsageReset, q="cleanup")
    assert (reset.tenant, reset.feature, reset.performed_by_name) == (
        demo.gamma,
        "projects",
        "alice",
    )
    assert listed(admin_client, UsageReset, source__exact="scheduled") == []
    assert len(listed(admin_client, UsageAlert)) == UsageAlert.objects.count() > 0


# --- the overview ------------------------------------------------------------------------------


def test_the_overview_ranks_tenants_by_share_of_their_limit(
    admin_client: Client, demo: Demo
) -> None:
    response = admin_client.get(reverse("admin:usage_limits_tenant_overview"))
    closest = response.context["closest"]
    assert list(closest) == ["api_calls", "projects", "seats"]
    assert [(r.tenant_slug, r.used, r.limit) for r in closest["api_calls"]] == [
        ("epsilon", 60, 50),
        ("acme", 95, 100),
        ("beta", 65, 100),
        ("gamma", 10, 100),
    ]
    assert [r.level for r in closest["api_calls"]] == ["red", "red", "amber", "ok"]
    over = [(r.tenant_slug, r.feature, r.over_by) for r in response.context["over"]]
    assert over == [("epsilon", "api_calls", 10), ("acme", "seats", 0)]
    assert response.context["over_total"] == 2
    counts = response.context["counts"]
    assert [(code, total) for _id, code, _name, _values, total in counts.rows] == [
        ("FREE", 4),
        ("PRO", 1),
    ]
    statuses = [value for value, _label in counts.statuses]
    free_row = counts.rows[0][3]
    assert free_row[statuses.index("canceled")] == 1
    assert counts.total == 5
    assert "Epsilon" in response.content.decode()


def test_the_overview_keeps_only_the_top_twenty_per_feature(
    admin_client: Client, demo: Demo
) -> None:
    with time_machine.travel(NOW, tick=False):
        for index in range(25):
            increment_usage(TenantFactory(plan=demo.free), "api_calls", 20 + index)
        response = admin_client.get(reverse("admin:usage_limits_tenant_overview"))
    rows = response.context["closest"]["api_calls"]
    assert len(rows) == 20
    assert [r.percent for r in rows] == sorted((r.percent for r in rows), reverse=True)


def test_the_overview_costs_the_same_queries_whatever_the_number_of_tenants(
    admin_client: Client, demo: Demo
) -> None:
    url = reverse("admin:usage_limits_tenant_overview")
    admin_client.get(url)  # warm the session and permission caches
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    with time_machine.travel(NOW, tick=False):
        for index in range(30):
            tenant = TenantFactory(plan=demo.free if index % 2 else demo.pro)
            increment_usage(tenant, "api_calls", 50 + index)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(url)
    assert len(many) == len(few) <= 8


def test_staff_without_the_view_permission_cannot_open_the_overview(demo: Demo) -> None:
    client = Client()
    client.force_login(UserFactory(username="intern", is_staff=True))
    assert client.get(reverse("admin:usage_limits_tenant_overview")).status_code == 403
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    client.force_login(viewer)
    assert client.get(reverse("admin:usage_limits_tenant_overview")).status_code == 200


def test_the_panel_says_when_a_scheduled_period_waits_for_the_job(
    admin_client: Client, demo: Demo
) -> None:
    Tenant.objects.filter(pk=demo.beta.pk).update(
        reset_mode="scheduled", counting_since=NOW.replace(day=1, hour=0)
    )
    forget_tenant(demo.beta.pk)  # update() sends no signal (docs/architecture.md)
    url = reverse("admin:usage_limits_tenant_change", args=[demo.beta.pk])
    with time_machine.travel(NOW.replace(month=4, day=3), tick=False):
        html = admin_client.get(url).content.decode()
    row = html.split("ul-feature-api_calls", 1)[1].split("</tr>", 1)[0]
    assert "2026-03" in row
    assert "waiting for the scheduled reset" in row


def test_the_admin_passes_djangos_system_checks() -> None:
    from django.core.management import call_command

    call_command("check", "--fail-level", "WARNING", "--tag", "admin")


class DownStore(DatabaseStore):
    """A store whose reads fail, as Redis does when it is unreachable."""

    def get_many(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        raise StoreUnavailable("the counter store is unreachable")


def test_the_tenant_page_opens_while_the_store_is_down(
    admin_client: Client, demo: Demo, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "STORE": "tests.test_admin.DownStore"}
    page = admin_client.get(reverse("admin:usage_limits_tenant_change", args=[demo.acme.pk]))
    assert page.status_code == 200
    assert "Usage unavailable: the counter store is unreachable" in page.content.decode()


def test_the_overview_is_listed_on_the_admin_index(admin_client: Client, demo: Demo) -> None:
    index = admin_client.get(reverse("admin:index"))
    entry = reverse("admin:usage_limits_usageoverview_changelist")
    assert f'href="{entry}"' in index.content.decode()
    response = admin_client.get(entry, follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:usage_limits_tenant_overview")
    assert response.status_code == 200
    assert "Usage overview" in response.content.decode()
