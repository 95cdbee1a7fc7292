"""Demo-like data for the admin tests, built with the factories and the engine.

``NOW`` is mid-March 2026; February is a closed period. API calls are monthly, limit 100 on FREE,
unlimited on PRO:

=========  =====  ==========  ===============  ========================
tenant     plan   status      api_calls (Mar)  level
=========  =====  ==========  ===============  ========================
acme       FREE   active      95               red
beta       FREE   trialing    65               amber
gamma      FREE   past_due    10               ok (and 70 in February)
delta      PRO    active      5000             unlimited
epsilon    FREE   canceled    60 of 50         over (override: 50)
=========  =====  ==========  ===============  ========================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import time_machine
from django.utils import timezone

from usage_limits import increment_usage, reset_usage, set_usage
from usage_limits.models import (
    Plan,
    StripeWebhookEvent,
    SubscriptionStatus,
    Tenant,
    UsageEvent,
)
from usage_limits.testing.factories import (
    LimitOverrideFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
FEBRUARY = dt.datetime(2026, 2, 10, 12, 0, tzinfo=dt.UTC)


@dataclass
class Demo:
    free: Plan
    pro: Plan
    acme: Tenant
    beta: Tenant
    gamma: Tenant
    delta: Tenant
    epsilon: Tenant

    @property
    def tenants(self) -> list[Tenant]:
        return [self.acme, self.beta, self.gamma, self.delta, self.epsilon]


def build_demo(clock: time_machine.Coordinates) -> Demo:
    free = plan_with_limits("FREE", api_calls=100, projects=3, seats=1, advanced_analytics=False)
    free.name = "Free"
    free.save()
    pro = plan_with_limits("PRO", api_calls=None, projects=None, seats=20, advanced_analytics=True)
    pro.name = "Pro"
    pro.save()
    clock.move_to(FEBRUARY)
    statuses = {
        "acme": SubscriptionStatus.ACTIVE,
        "beta": SubscriptionStatus.TRIALING,
        "gamma": SubscriptionStatus.PAST_DUE,
        "delta": SubscriptionStatus.ACTIVE,
        "epsilon": SubscriptionStatus.CANCELED,
    }
    tenants = {
        slug: TenantFactory(
            slug=slug,
            name=slug.capitalize(),
            plan=pro if slug == "delta" else free,
            subscription_status=status,
        )
        for slug, status in statuses.items()
    }
    increment_usage(tenants["gamma"], "api_calls", 70)
    clock.move_to(NOW)
    for slug, calls in (("acme", 95), ("beta", 65), ("gamma", 10), ("delta", 5000)):
        increment_usage(tenants[slug], "api_calls", calls)
    LimitOverrideFactory(tenant=tenants["epsilon"], feature="api_calls", limit=50, reason="Pilot")
    increment_usage(tenants["epsilon"], "api_calls", 60)
    set_usage(tenants["acme"], "projects", 2)
    set_usage(tenants["acme"], "seats", 1)
    owner = UserFactory(username="alice")
    MembershipFactory(tenant=tenants["acme"], user=owner, role="owner")
    MembershipFactory(tenant=tenants["beta"], user=UserFactory(username="bob"))
    # An earlier operator reset, so the audit list has a row.
    increment_usage(tenants["gamma"], "projects", 1)
    reset_usage(tenants["gamma"], "projects", by=owner, reason="Cleanup after import")
    # The billing ledger and the webhook log, so their admin pages have rows too.
    UsageEvent.objects.create(
        tenant=tenants["beta"],
        feature="api_calls",
        quantity=3,
        idempotency_key="import-2026-03-14",
        timestamp=timezone.now(),
        period_key="2026-03",
        report_state=UsageEvent.ReportState.FAILED,
        last_error="tenant has no Stripe customer",
    )
    StripeWebhookEvent.objects.create(
        event_id="evt_demo_1",
        type="customer.subscription.updated",
        customer_id="cus_demo",
        tenant=tenants["beta"],
        created=timezone.now(),
        outcome=StripeWebhookEvent.Outcome.APPLIED,
    )
    return Demo(free=free, pro=pro, **{slug: t for slug, t in tenants.items()})
