"""factory-boy factories for the app's models, reusable in your own tests::

from usage_limits.testing.factories import TenantFactory, plan_with_limits

plan = plan_with_limits("FREE", api_calls=3, projects=1, advanced_analytics=False)
tenant = TenantFactory(plan=plan)
"""

from __future__ import annotations

from typing import Any, cast

import factory
from django.contrib.auth import get_user_model

from usage_limits.conf import conf
from usage_limits.models import (
    UNLIMITED,
    FeatureKind,
    Plan,
    PlanLimit,
    Tenant,
    TenantLimitOverride,
    TenantMembership,
)
from usage_limits.plans import declared_kind


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("password")


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"PLAN{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())


class PlanLimitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanLimit

    plan = factory.SubFactory(PlanFactory)
    feature = "api_calls"
    kind = FeatureKind.METERED
    limit = 100
    period = factory.LazyAttribute(lambda o: "monthly" if o.kind == FeatureKind.METERED else "")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    plan = factory.SubFactory(PlanFactory)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantMembership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    is_default = True


class LimitOverrideFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantLimitOverride

    tenant = factory.SubFactory(TenantFactory)
    feature = "api_calls"
    limit = 1000


def plan_with_limits(code: str, *, period: str | None = None, **limits: Any) -> Plan:
    """A plan with the given limits: ``plan_with_limits("FREE", api_calls=3, seats=1)``.

    Kinds come from ``USAGE_LIMITS["FEATURES"]`` (a bool value means a boolean feature);
    ``None`` or -1 means unlimited.
    """
    plan = cast(Plan, PlanFactory(code=code))
    for feature, value in limits.items():
        kind = declared_kind(feature, value)
        if kind == FeatureKind.BOOLEAN:
            limit: int | None = 1 if value else 0
        else:
            limit = UNLIMITED if value is None else int(value)
        feature_period = ""
        if kind == FeatureKind.METERED:
            feature_period = period or str(
                conf.FEATURES.get(feature, {}).get("period") or conf.DEFAULT_PERIOD
            )
        PlanLimit.objects.update_or_create(
            plan=plan,
            feature=feature,
            defaults={"kind": kind, "limit": limit, "period": feature_period},
        )
    return plan
