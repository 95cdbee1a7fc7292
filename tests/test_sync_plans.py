from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from usage_limits import consume
from usage_limits.models import Plan, PlanLimit
from usage_limits.testing.factories import TenantFactory

pytestmark = pytest.mark.django_db


def sync(*args: str) -> str:
    out = StringIO()
    call_command("usage_limits_sync_plans", *args, stdout=out)
    return out.getvalue()


def test_sync_creates_the_seed_plans_from_settings() -> None:
    output = sync()
    assert "created plan FREE" in output
    assert list(Plan.objects.values_list("code", flat=True)) == [
        "FREE",
        "STARTER",
        "PRO",
        "ENTERPRISE",
    ]
    limits = {
        (pl.plan.code, pl.feature): (pl.kind, pl.limit, pl.period)
        for pl in PlanLimit.objects.select_related("plan")
    }
    assert limits[("FREE", "api_calls")] == ("metered", 100, "monthly")
    assert limits[("FREE", "projects")] == ("allocation", 3, "")
    assert limits[("STARTER", "api_calls")] == ("metered", 1000, "monthly")
    assert limits[("PRO", "api_calls")] == ("metered", None, "monthly")
    assert limits[("PRO", "advanced_analytics")] == ("boolean", 1, "")
    assert limits[("FREE", "advanced_analytics")] == ("boolean", 0, "")


def test_sync_is_idempotent() -> None:
    sync()
    second = sync()
    assert "0 created, 0 updated, 0 removed, 16 unchanged" in second
    assert PlanLimit.objects.count() == 16


def test_operators_edits_are_overwritten_only_by_a_sync() -> None:
    sync()
    tenant = TenantFactory(plan=Plan.objects.get(code="FREE"))
    PlanLimit.objects.filter(plan__code="FREE", feature="api_calls").update(limit=2)
    from usage_limits.rules import forget_plan

    forget_plan(tenant.plan_id)
    assert [consume(tenant, "api_calls").allowed for _ in range(3)] == [True, True, False]
    assert "updated FREE.api_calls" in sync()
    assert consume(tenant, "api_calls").allowed


def test_prune_removes_limits_no_longer_declared() -> None:
    sync()
    plans = {"FREE": {"name": "Free tier", "limits": {"api_calls": 50}}}
    with override_settings(USAGE_LIMITS={"PLANS": plans}):
        output = sync("--prune")
    assert "updated FREE.api_calls" in output
    assert "removed FREE.projects" in output
    assert list(PlanLimit.objects.filter(plan__code="FREE").values_list("feature", "limit")) == [
        ("api_calls", 50)
    ]
