"""Plans declared in ``USAGE_LIMITS["PLANS"]`` and their idempotent sync into the database.

Settings hold the plans as code (reviewed, versioned); the database is the source of truth at run
time, so operators can change a limit in the admin without a deploy. ``usage_limits_sync_plans``
copies settings into the database and reports what it changed; run twice, it changes nothing.

Two shapes are accepted for each plan::

    "FREE": {"api_calls": 100, "projects": 3}                       # the seeds' shape
    "FREE": {"name": "Free", "limits": {"api_calls": 100}, "stripe_price_id": "price_..."}

A limit is an int (-1 or None: unlimited), or a bool for boolean features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from usage_limits.conf import conf
from usage_limits.models import UNLIMITED, FeatureKind, Plan, PlanLimit


@dataclass(frozen=True, slots=True)
class DeclaredLimit:
    feature: str
    kind: str
    limit: int | None
    period: str


@dataclass(frozen=True, slots=True)
class DeclaredPlan:
    code: str
    name: str
    sort_order: int
    stripe_price_id: str
    limits: tuple[DeclaredLimit, ...]


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def plan_limits_mapping(value: Any) -> Mapping[str, Any]:
    """The ``{feature: limit}`` part of a declared plan, in either accepted shape."""
    if isinstance(value, Mapping) and isinstance(value.get("limits"), Mapping):
        limits: Mapping[str, Any] = value["limits"]
        return limits
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k not in ("name", "stripe_price_id", "limits")}
    return {}


def declared_kind(feature: str, limit: Any) -> str:
    declared = conf.FEATURES.get(feature, {})
    if "kind" in declared:
        return str(declared["kind"])
    return FeatureKind.BOOLEAN if isinstance(limit, bool) else FeatureKind.METERED


def declared_plans() -> list[DeclaredPlan]:
    plans = []
    for index, (code, value) in enumerate(conf.PLANS.items()):
        limits = []
        for feature, raw in plan_limits_mapping(value).items():
            kind = declared_kind(feature, raw)
            if kind == FeatureKind.BOOLEAN:
                limit: int | None = 1 if raw else 0
            else:
                limit = None if raw is None or raw == UNLIMITED else int(raw)
            period = ""
            if kind == FeatureKind.METERED:
                period = str(conf.FEATURES.get(feature, {}).get("period") or conf.DEFAULT_PERIOD)
            limits.append(DeclaredLimit(feature, kind, limit, period))
        name = str(value.get("name")) if isinstance(value, Mapping) and "name" in value else ""
        price = value.get("stripe_price_id", "") if isinstance(value, Mapping) else ""
        plans.append(
            DeclaredPlan(
                code=code,
                name=name or code.replace("_", " ").title(),
                sort_order=index,
                stripe_price_id=str(price or ""),
                limits=tuple(limits),
            )
        )
    return plans


@transaction.atomic
def sync_plans(*, prune: bool = False) -> SyncReport:
    """Create or update the declared plans and limits; with ``prune``, delete undeclared limits."""
    report = SyncReport()
    for declared in declared_plans():
        plan, created = Plan.objects.get_or_create(
            code=declared.code,
            defaults={
                "name": declared.name,
                "sort_order": declared.sort_order,
                "stripe_price_id": declared.stripe_price_id,
            },
        )
        if created:
            report.created.append(f"plan {plan.code}")
        elif declared.stripe_price_id and plan.stripe_price_id != declared.stripe_price_id:
            plan.stripe_price_id = declared.stripe_price_id
            plan.save(update_fields=["stripe_price_id", "updated_at"])
            report.updated.append(f"plan {plan.code}: stripe_price_id")
        existing = {limit.feature: limit for limit in plan.limits.all()}
        for wanted in declared.limits:
            label = f"{plan.code}.{wanted.feature}"
            current = existing.pop(wanted.feature, None)
            if current is None:
                PlanLimit.objects.create(
                    plan=plan,
                    feature=wanted.feature,
                    kind=wanted.kind,
                    limit=wanted.limit,
                    period=wanted.period,
                )
                report.created.append(label)
                continue
            stored_limit = None if current.limit == UNLIMITED else current.limit
            if (current.kind, stored_limit, current.period) == (
                wanted.kind,
                wanted.limit,
                wanted.period,
            ):
                report.unchanged.append(label)
                continue
            current.kind, current.limit, current.period = wanted.kind, wanted.limit, wanted.period
            current.save()
            report.updated.append(label)
        if prune:
            for leftover in existing.values():
                leftover.delete()
                report.removed.append(f"{plan.code}.{leftover.feature}")
    return report
