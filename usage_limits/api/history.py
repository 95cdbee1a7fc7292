"""What ``GET /api/usage/history/`` lists: a tenant's usage, one row per period, newest first.

Closed periods stay in the database as :class:`~usage_limits.models.UsageRecord` rows, so the
history of a metered feature is the list of its counters. ``granularity`` names where rows come
from; ``"period"`` is the only source today. Finer buckets (a row per day, for charts) plug in
here as another entry of :data:`HISTORY_SOURCES` with the same item shape, and the view, its
pagination and its schema stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from usage_limits.models import Tenant, UsageRecord

PERIOD = "period"


def period_history(tenant: Tenant, feature: str | None) -> QuerySet[UsageRecord]:
    rows = UsageRecord.objects.filter(tenant=tenant)
    if feature is not None:
        rows = rows.filter(feature=feature)
    return rows.order_by("-period_start", "feature", "-pk")


def period_item(row: UsageRecord, now: datetime) -> dict[str, Any]:
    return {
        "feature": row.feature,
        "granularity": PERIOD,
        "period": row.period_key,
        "start": row.period_start.isoformat(),
        "end": None if row.period_end is None else row.period_end.isoformat(),
        "used": row.used,
        "current": row.period_start <= now and (row.period_end is None or now < row.period_end),
    }


HistorySource = tuple[
    Callable[[Tenant, "str | None"], QuerySet[Any]],
    Callable[[Any, datetime], dict[str, Any]],
]

# granularity -> (rows of a tenant, optionally of one feature, newest first; one row as an item)
HISTORY_SOURCES: dict[str, HistorySource] = {PERIOD: (period_history, period_item)}
