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

from usage_limits import check_limit
from usage_limits import rules as rules_module
from usage_limits.models import PlanLimit, Tenant
from usage_limits.rules import forget_all

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
