"""Read-only queries over the stored counters, for operators: the admin, the overview, exports.

Enforcement never goes through here (it reads one counter through the engine). These queries
answer questions across many tenants at once ("who is closest to their limit?"), so they compute
the effective limit and the level in SQL, with a fixed number of queries whatever the number of
tenants. The effective limit follows :mod:`usage_limits.rules`: a tenant's override wins over its
plan's limit, and -1 (or NULL on an override) means unlimited. Levels use the same integer
comparison as :func:`usage_limits.levels.usage_level` (``used * 100 >= amber * limit``).

With the Redis store these read the database copy of the counters, which trails Redis by the
store's flush interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, RowNumber
from django.utils import timezone

from usage_limits.conf import conf
from usage_limits.levels import Level, percent_used, usage_level
from usage_limits.models import (
    UNLIMITED,
    PlanLimit,
    SubscriptionStatus,
    Tenant,
    TenantLimitOverride,
    UsageRecord,
)

__all__ = [
    "CounterRow",
    "LevelFilter",
    "at_level",
    "closest_to_limits",
    "current_counters",
    "over_limit",
    "status_counts",
    "with_effective_limits",
]


class LevelFilter(StrEnum):
    AMBER = "amber"  # amber and above
    RED = "red"
    OVER = "over"  # at or over the limit: further use is refused


def with_effective_limits(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
    """Annotate ``effective_limit`` (NULL: unlimited), ``in_plan`` and ``percent`` on counters."""
    override = TenantLimitOverride.objects.filter(
        tenant_id=OuterRef("tenant_id"), feature=OuterRef("feature")
    )
    plan_limit = PlanLimit.objects.filter(
        plan_id=OuterRef("tenant__plan_id"), feature=OuterRef("feature")
    )
    raw_limit = Case(
        When(Exists(override), then=Subquery(override.values("limit")[:1])),
        default=Subquery(plan_limit.values("limit")[:1]),
        output_field=BigIntegerField(),
    )
    records = records.alias(raw_limit_value=raw_limit).annotate(
        in_plan=Exists(override) | Exists(plan_limit),
        effective_limit=Case(
            When(raw_limit_value=UNLIMITED, then=Value(None, output_field=BigIntegerField())),
            default=F("raw_limit_value"),
            output_field=BigIntegerField(),
        ),
    )
    # Float division for ordering only; levels are decided in integers (see at_level).
    return records.annotate(
        percent=Case(
            When(
                effective_limit__gt=0,
                then=Cast("used", FloatField()) * 100.0 / Cast("effective_limit", FloatField()),
            ),
            default=Value(None, output_field=FloatField()),
            output_field=FloatField(),
        )
    )


def current_counters(
    records: QuerySet[UsageRecord], now: datetime | None = None
) -> QuerySet[UsageRecord]:
    """Counters of the period running now: the latest started one, if it has not ended.

    Open-ended counters (allocations, the manual reset mode) never end. A tenant in the scheduled
    mode whose period ended but was not yet moved on by the reset job is left out until it is.
    """
    now = now or timezone.now()
    newer = UsageRecord.objects.filter(
        tenant_id=OuterRef("tenant_id"),
        feature=OuterRef("feature"),
        period_start__gt=OuterRef("period_start"),
        period_start__lte=now,
    )
    return records.filter(
        Q(period_end__isnull=True) | Q(period_end__gt=now), period_start__lte=now
    ).exclude(Exists(newer))


def at_level(records: QuerySet[UsageRecord], level: LevelFilter | str) -> QuerySet[UsageRecord]:
    """Counters (annotated by :func:`with_effective_limits`) at ``level`` or above, in SQL."""
    level = LevelFilter(level)
    if level == LevelFilter.OVER:
        return records.filter(
            Q(effective_limit=0) | Q(effective_limit__gt=0, used__gte=F("effective_limit"))
        )
    percent = conf.AMBER_PERCENT if level == LevelFilter.AMBER else conf.RED_PERCENT
    threshold = int(percent) if float(percent).is_integer() else percent
    # used * 100 >= percent * limit, in integers when the threshold is whole (no float edges).
    return records.alias(
        used_scaled=F("used") * 100, limit_scaled=F("effective_limit") * threshold
    ).filter(Q(effective_limit=0) | Q(effective_limit__gt=0, used_scaled__gte=F("limit_scaled")))


@dataclass(frozen=True, slots=True)
class CounterRow:
    """One tenant's counter as the overview shows it."""

    record_id: int
    tenant_id: int
    tenant_name: str
    tenant_slug: str
    plan: str
    feature: str
    period_key: str
    used: int
    limit: int

    @property
    def percent(self) -> float:
        return percent_used(self.used, self.limit)

    @property
    def level(self) -> Level:
        return usage_level(self.used, self.limit)

    @property
    def over_by(self) -> int:
        return max(self.used - self.limit, 0)


_ROW_FIELDS = (
    "pk",
    "tenant_id",
    "tenant__name",
    "tenant__slug",
    "tenant__plan__code",
    "feature",
    "period_key",
    "used",
    "effective_limit",
)


def _rows(values: Iterable[tuple[Any, ...]]) -> list[CounterRow]:
    return [CounterRow(*row) for row in values]


def _limited_current(now: datetime | None) -> QuerySet[UsageRecord]:
    records = current_counters(UsageRecord.objects.all(), now)
    limited = with_effective_limits(records)
    return limited.filter(effective_limit__gt=0)  # type: ignore[misc]  # an annotation


def feature_order(features: Iterable[str]) -> list[str]:
    declared = {name: index for index, name in enumerate(conf.FEATURES)}
    return sorted(set(features), key=lambda f: (declared.get(f, len(declared)), f))


def closest_to_limits(
    per_feature: int = 20, now: datetime | None = None
) -> dict[str, list[CounterRow]]:
    """For each feature, the ``per_feature`` tenants using the largest share of their limit.

    One query: a window numbers each feature's counters by percentage, and only the first
    ``per_feature`` of each come back.
    """
    ranked = (
        _limited_current(now)
        .filter(used__gt=0)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("feature")],
                order_by=[F("percent").desc(), F("used").desc(), F("pk").asc()],
            )
        )
        .filter(rank__lte=per_feature)
        .order_by("feature", "rank")
    )
    by_feature: dict[str, list[CounterRow]] = {}
    for row in _rows(ranked.values_list(*_ROW_FIELDS)):
        by_feature.setdefault(row.feature, []).append(row)
    return {feature: by_feature[feature] for feature in feature_order(by_feature)}


def over_limit(limit: int = 100, now: datetime | None = None) -> tuple[list[CounterRow], int]:
    """Counters at or over their limit now, most over first (at most ``limit``), and their total."""
    records = at_level(_limited_current(now), LevelFilter.OVER)
    total = records.count()
    ordered = records.order_by(F("percent").desc(), "feature", "tenant__name")[:limit]
    return _rows(ordered.values_list(*_ROW_FIELDS)), total


@dataclass(frozen=True, slots=True)
class StatusCounts:
    statuses: list[tuple[str, str]]  # (value, label), in the model's order
    rows: list[tuple[int, str, str, list[int], int]]  # (plan id, code, name, counts, total)
    totals: list[int]
    total: int


def status_counts() -> StatusCounts:
    """Tenants per plan and subscription status, in one query."""
    statuses = [(str(value), str(label)) for value, label in SubscriptionStatus.choices]
    counts: dict[tuple[int, str, str], dict[str, int]] = {}
    grouped = (
        Tenant.objects.values(
            "plan_id", "plan__sort_order", "plan__code", "plan__name", "subscription_status"
        )
        .annotate(count=Count("pk"))
        .order_by("plan__sort_order", "plan__code")
    )
    for entry in grouped:
        key = (entry["plan_id"], entry["plan__code"], entry["plan__name"])
        counts.setdefault(key, {})[entry["subscription_status"]] = entry["count"]
    rows = []
    for (plan_id, code, name), per_status in counts.items():
        values = [per_status.get(value, 0) for value, _label in statuses]
        rows.append((plan_id, code, name, values, sum(values)))
    totals = [sum(row[3][index] for row in rows) for index in range(len(statuses))]
    return StatusCounts(statuses=statuses, rows=rows, totals=totals, total=sum(totals))
