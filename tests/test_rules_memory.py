"""What each process remembers of plans and tenants, and when it lets go.

Rules are kept in memory per process, behind a generation token. With a shared cache the token
lives there; with a process-local cache (``LocMemCache``, the default, or ``DummyCache``) it lives
in the process, changes on every local invalidation, and turns over every ``CACHE_TIMEOUT``
seconds, which bounds how long changes made by other processes go unseen.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import caches
from django.db import transaction

from usage_limits import check_limit, consume
from usage_limits import rules as rules_module
from usage_limits.models import Plan, PlanLimit, Tenant, TenantLimitOverride
from usage_limits.rules import forget_all
from usage_limits.testing.factories import TenantFactory, plan_with_limits

pytestmark = pytest.mark.django_db


def test_a_change_made_elsewhere_is_seen_after_cache_timeout(
    tenant: Tenant, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "CACHE_TIMEOUT": 300}
    assert check_limit(tenant, "api_calls").limit == 100
    # Another process edits the limit: this process gets no signal.
    PlanLimit.objects.filter(plan=tenant.plan, feature="api_calls").update(limit=7)
    clock = rules_module.time.monotonic()
    monkeypatch.setattr(rules_module.time, "monotonic", lambda: clock + 10)
    assert check_limit(tenant, "api_calls").limit == 100  # still within CACHE_TIMEOUT
    monkeypatch.setattr(rules_module.time, "monotonic", lambda: clock + 301)
    caches["default"].clear()  # the cache's own entries have expired by then too
    assert check_limit(tenant, "api_calls").limit == 7


def test_a_dummy_cache_still_sees_plan_changes_made_in_this_process(
    tenant: Tenant, settings: Any
) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "none": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "CACHE_ALIAS": "none"}
    assert check_limit(tenant, "api_calls").limit == 100
    limit = PlanLimit.objects.get(plan=tenant.plan, feature="api_calls")
    limit.limit = 5
    limit.save()
    assert check_limit(tenant, "api_calls").limit == 5


def test_forget_all_rereads_bulk_changes(tenant: Tenant) -> None:
    assert check_limit(tenant, "api_calls").limit == 100
    PlanLimit.objects.filter(plan=tenant.plan, feature="api_calls").update(limit=3)
    Tenant.objects.filter(pk=tenant.pk).update(subscription_status="canceled")
    assert check_limit(tenant, "api_calls").limit == 100  # no signal: still the old rules
    forget_all()
    decision = check_limit(tenant, "api_calls")
    assert decision.limit == 3
    assert not decision.allowed


class _ActionFailed(Exception):
    pass


@transaction.atomic
def _change_then_fail(tenant: Tenant, change: str, other_plan: Plan) -> None:
    """An operator's action that changes the rules, reads them, then fails and rolls back."""
    if change == "limit":
        limit = PlanLimit.objects.get(plan=tenant.plan, feature="api_calls")
        limit.limit = 1000
        limit.save()
    elif change == "override":
        TenantLimitOverride.objects.create(tenant=tenant, feature="api_calls", limit=1000)
    else:
        tenant.plan = other_plan
        tenant.save()
    # Read inside the transaction (an admin page rendering the new usage, say): the uncommitted
    # change is visible here, as it should be.
    assert check_limit(tenant, "api_calls", 100).allowed
    raise _ActionFailed  # ...and then the action fails: all of it rolls back


@pytest.mark.parametrize("change", ["limit", "override", "tenant plan"])
@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_is_never_enforced(change: str) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=5))
    other_plan = plan_with_limits("BIG", api_calls=1000)
    assert not check_limit(tenant, "api_calls", 100).allowed  # the rules are cached from here on
    with pytest.raises(_ActionFailed):
        _change_then_fail(tenant, change, other_plan)
    # What the database holds is what is enforced, now and in later checks.
    assert not check_limit(tenant, "api_calls", 100).allowed
    assert not consume(tenant, "api_calls", 100).allowed
    assert check_limit(tenant, "api_calls").limit == 5
