"""What ``GET /api/usage/history/`` lists: a tenant's usage, one row per period, newest first.

Closed periods stay in the database as :class:`~usage_limits.models.UsageRecord` rows, so the
history of a metered feature is the list of its counters (``granularity=period``, the default).
``granularity=day`` lists the daily buckets the history chart draws
(:class:`~usage_limits.models.UsageDailyBucket`, kept while ``USAGE_LIMITS["HISTORY"]`` is on),
in the same item shape: a day's "period" is its date in the usage time zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import QuerySet

from usage_limits.conf import conf
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord
from usage_limits.periods import period_containing

PERIOD = "period"
DAY = "day"


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


def day_history(tenant: Tenant, feature: str | None) -> QuerySet[UsageDailyBucket]:
    rows = UsageDailyBucket.objects.filter(tenant=tenant)
    if feature is not None:
        rows = rows.filter(feature=feature)
    return rows.order_by("-day", "feature", "-pk")


def day_item(row: UsageDailyBucket, now: datetime) -> dict[str, Any]:
    # The day's bounds in UTC: midday of that date in the usage time zone lies inside it, also
    # on the 23- and 25-hour days around DST changes.
    zone = conf.TIME_ZONE
    day: date = row.day
    period = period_containing(
        "daily", datetime.combine(day, time(12), tzinfo=ZoneInfo(zone)), tz=zone
    )
    return {
        "feature": row.feature,
        "granularity": DAY,
        "period": day.isoformat(),
        "start": period.start.isoformat(),
        "end": None if period.end is None else period.end.isoformat(),
        "used": row.used,
        "current": period.contains(now),
    }


HistorySource = tuple[
    Callable[[Tenant, "str | None"], QuerySet[Any]],
    Callable[[Any, datetime], dict[str, Any]],
]

# granularity -> (rows of a tenant, optionally of one feature, newest first; one row as an item)
HISTORY_SOURCES: dict[str, HistorySource] = {
    PERIOD: (period_history, period_item),
    DAY: (day_history, day_item),
}
