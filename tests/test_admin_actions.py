"""The tenant actions: "Reset current usage" (audited, permission-guarded) and "Change plan"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import time_machine
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from tests.admin_demo import NOW, Demo, build_demo
from usage_limits import check_limit, get_usage
from usage_limits.models import Tenant, UsageReset
from usage_limits.signals import usage_reset
from usage_limits.testing.factories import UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:usage_limits_tenant_changelist"


@pytest.fixture
def demo() -> Iterator[Demo]:
    with time_machine.travel(NOW, tick=False) as clock:
        yield build_demo(clock)


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    usage_reset.connect(receiver, dispatch_uid="test_admin_actions")
    yield calls
    usage_reset.disconnect(dispatch_uid="test_admin_actions")


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return get_usage(tenant).feature(feature).used


def act(client: Client, action: str, tenants: list[Tenant], **data: str) -> Any:
    payload: dict[str, Any] = {"action": action, "_selected_action": [t.pk for t in tenants]}
    payload.update(data)
    return client.post(reverse(CHANGELIST), payload)


def staff(*codenames: str) -> Client:
    user = UserFactory(username="staff-" + "-".join(codenames or ("none",)), is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def offered_actions(client: Client) -> set[str]:
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    form = response.context["action_form"]
    if form is None:  # no action left at all
        return set()
    return {name for name, _label in form.fields["action"].choices if name}


# --- reset current usage -----------------------------------------------------------------------


def test_the_reset_asks_for_confirmation_listing_what_will_be_reset(
    admin_client: Client, demo: Demo
) -> None:
    response = act(admin_client, "reset_current_usage", [demo.acme, demo.epsilon])
    assert response.status_code == 200
    assert response.templates[0].name == ("admin/usage_limits/tenant/reset_usage_confirmation.html")
    previews = {
        p.tenant.slug: [(f.feature, f.used, f.limit) for f in p.usage.features]
        for p in response.context["previews"]
    }
    # Metered counters only: projects and seats are levels, not reset here.
    assert previews == {"acme": [("api_calls", 95, 100)], "epsilon": [("api_calls", 60, 50)]}
    html = response.content.decode()
    assert 'name="reason"' in html
    assert 'value="reset_current_usage"' in html
    assert used(demo.acme) == 95
    assert not UsageReset.objects.filter(source="admin").exists()


def test_a_confirmed_reset_is_audited_logged_and_signalled_once(
    admin_client: Client,
    demo: Demo,
    received: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = act(
            admin_client,
            "reset_current_usage",
            [demo.acme],
            confirm="yes",
            reason="Runaway script, customer refunded",
        )
    assert response.status_code == 302
    assert used(demo.acme) == 0
    assert used(demo.acme, "projects") == 2

    audit = UsageReset.objects.get(source="admin")
    assert (audit.tenant, audit.feature, audit.period_key) == (demo.acme, "api_calls", "2026-03")
    assert (audit.value_before, audit.value_after) == (95, 0)
    assert audit.performed_by is not None
    assert (audit.performed_by.username, audit.performed_by_name) == ("admin", "admin")
    assert audit.reason == "Runaway script, customer refunded"
    assert audit.created_at == NOW

    entry = LogEntry.objects.get(object_id=str(demo.acme.pk))
    assert (entry.user.get_username(), entry.action_flag) == ("admin", CHANGE)
    assert entry.get_change_message() == (
        "Reset usage (api_calls 2026-03: 95 -> 0). Reason: Runaway script, customer refunded"
    )
    assert [(c["tenant_id"], c["feature"], c["value_before"]) for c in received] == [
        (demo.acme.pk, "api_calls", 95)
    ]
    assert received[0]["reset"] == audit

    messages = [str(m) for m in response.wsgi_request._messages]  # type: ignore[attr-defined]
    assert messages == ["Reset 1 counter of 1 tenant."]


def test_a_reset_of_one_feature_across_tenants(admin_client: Client, demo: Demo) -> None:
    act(
        admin_client,
        "reset_current_usage",
        [demo.beta, demo.gamma],
        confirm="yes",
        reason="Billing correction",
        feature="api_calls",
    )
    assert (used(demo.beta), used(demo.gamma)) == (0, 0)
    assert sorted(
        UsageReset.objects.filter(source="admin").values_list("value_before", flat=True)
    ) == [
        10,
        65,
    ]
    assert LogEntry.objects.count() == 2


def test_a_reset_without_a_reason_changes_nothing(admin_client: Client, demo: Demo) -> None:
    response = act(admin_client, "reset_current_usage", [demo.acme], confirm="yes", reason=" ")
    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert used(demo.acme) == 95
    assert not UsageReset.objects.filter(source="admin").exists()
    assert not LogEntry.objects.exists()


def test_staff_without_the_reset_permission_neither_see_nor_can_forge_it(demo: Demo) -> None:
    client = staff("view_tenant", "change_tenant")
    assert "reset_current_usage" not in offered_actions(client)
    assert "change_plan" in offered_actions(client)

    forged = act(client, "reset_current_usage", [demo.acme], confirm="yes", reason="sneaky")
    assert forged.status_code == 403
    assert act(client, "reset_current_usage", [demo.acme]).status_code == 403  # the confirm page
    assert used(demo.acme) == 95
    assert not UsageReset.objects.filter(source="admin").exists()
    assert not LogEntry.objects.exists()


def test_staff_with_the_reset_permission_can_reset(demo: Demo) -> None:
    client = staff("view_tenant", "reset_usage")
    assert offered_actions(client) >= {"reset_current_usage"}
    assert "change_plan" not in offered_actions(client)
    response = act(client, "reset_current_usage", [demo.beta], confirm="yes", reason="Goodwill")
    assert response.status_code == 302
    assert used(demo.beta) == 0
    assert UsageReset.objects.get(source="admin").performed_by_name.startswith("staff-")


# --- change plan -------------------------------------------------------------------------------


def test_change_plan_asks_for_a_plan_then_moves_tenants(admin_client: Client, demo: Demo) -> None:
    assert check_limit(demo.acme, "api_calls").limit == 100  # cache the FREE rules
    response = act(admin_client, "change_plan", [demo.acme, demo.delta])
    assert response.status_code == 200
    assert {str(p) for p in response.context["form"].fields["plan"].queryset} == {"Free", "Pro"}

    response = act(
        admin_client, "change_plan", [demo.acme, demo.delta], confirm="yes", plan=str(demo.pro.pk)
    )
    assert response.status_code == 302
    assert Tenant.objects.get(pk=demo.acme.pk).plan == demo.pro
    # The cached rules were dropped with the save: the very next check sees PRO's limit.
    assert check_limit(demo.acme, "api_calls").limit is None
    [entry] = LogEntry.objects.all()  # delta was already on PRO
    assert entry.object_id == str(demo.acme.pk)
    assert entry.get_change_message() == "Changed plan from Free to Pro."
    messages = [str(m) for m in response.wsgi_request._messages]  # type: ignore[attr-defined]
    assert messages == ["Moved 1 tenant to Pro. 1 already on it."]


def test_change_plan_needs_the_change_permission(demo: Demo) -> None:
    client = staff("view_tenant")
    assert offered_actions(client) == set()
    forged = act(client, "change_plan", [demo.acme], confirm="yes", plan=str(demo.pro.pk))
    assert forged.status_code == 403
    assert Tenant.objects.get(pk=demo.acme.pk).plan == demo.free


# --- from the tenant's page, and "select all" --------------------------------------------------


def test_a_reset_from_the_tenant_page_comes_back_to_it(admin_client: Client, demo: Demo) -> None:
    change = reverse("admin:usage_limits_tenant_change", args=[demo.acme.pk])
    page = reverse("admin:usage_limits_tenant_reset_usage", args=[demo.acme.pk])
    assert f'href="{page}"' in admin_client.get(change).content.decode()

    confirmation = admin_client.get(page)
    assert confirmation.status_code == 200
    html = confirmation.content.decode()
    assert f'action="{reverse(CHANGELIST)}"' in html
    assert f'name="back_to_tenant" value="{demo.acme.pk}"' in html

    response = act(
        admin_client,
        "reset_current_usage",
        [demo.acme],
        confirm="yes",
        reason="Asked by support",
        back_to_tenant=str(demo.acme.pk),
    )
    assert response.status_code == 302
    assert response["Location"] == change
    assert used(demo.acme) == 0


def test_the_tenant_page_offers_no_reset_without_the_permission(demo: Demo) -> None:
    client = staff("view_tenant", "change_tenant")
    change = client.get(reverse("admin:usage_limits_tenant_change", args=[demo.acme.pk]))
    assert "ul-reset-link" not in change.content.decode()
    page = reverse("admin:usage_limits_tenant_reset_usage", args=[demo.acme.pk])
    assert client.get(page).status_code == 403


def test_select_all_resets_the_filtered_tenants_only(admin_client: Client, demo: Demo) -> None:
    url = reverse(CHANGELIST) + "?subscription_status__exact=active"
    base = {"action": "reset_current_usage", "select_across": "1", "index": "0"}
    base["_selected_action"] = str(demo.acme.pk)
    confirmation = admin_client.post(url, base)
    assert confirmation.context["selected_count"] == 2  # acme and delta
    assert 'name="select_across" value="1"' in confirmation.content.decode()
    response = admin_client.post(url, {**base, "confirm": "yes", "reason": "Quarter closed"})
    assert response.status_code == 302
    assert (used(demo.acme), used(demo.delta), used(demo.beta)) == (0, 0, 65)
