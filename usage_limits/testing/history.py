"""Daily usage history for tests and demo data, written straight into the bucket table.

The store writes buckets as usage happens; these helpers make the history a test or a demo needs
without replaying every call::

    from usage_limits.testing.history import record_history
    record_history(tenant, "api_calls", {date(2026, 3, 1): 40, date(2026, 3, 2): 15})
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import date, timedelta

from django.db import transaction

from usage_limits.backends.base import usage_day
from usage_limits.models import Tenant, UsageDailyBucket


def record_history(tenant: Tenant | int, feature: str, daily: Mapping[date, int]) -> None:
    """Set each day's bucket of ``feature`` to the given amount (replacing what was there)."""
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    with transaction.atomic():
        for day, used in daily.items():
            UsageDailyBucket.objects.update_or_create(
                tenant_id=tenant_id, feature=feature, day=day, defaults={"used": used}
            )


def plausible_history(
    total: int, first: date, last: date, *, seed: str = "", weekend_share: float = 0.35
) -> dict[date, int]:
    """``total`` spread over the days from ``first`` to ``last``, busier on weekdays.

    Deterministic for a given ``seed``, and adds up to exactly ``total``.
    """
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if not days or total <= 0:
        return {}
    rng = random.Random(seed)
    weights = [
        (weekend_share if day.weekday() >= 5 else 1.0) * rng.uniform(0.5, 1.5) for day in days
    ]
    scale = total / sum(weights)
    amounts = [int(w * scale) for w in weights]
    amounts[-1] += total - sum(amounts)  # what rounding down left over goes to today
    return dict(zip(days, amounts, strict=True))


def demo_history(
    tenant: Tenant | int,
    feature: str,
    used_this_period: int,
    period_start: date,
    *,
    limit: int | None = None,
    days: int = 90,
    today: date | None = None,
) -> None:
    """History that matches a counter: ``used_this_period`` since ``period_start``, and earlier
    periods (back to ``days`` ago) at 55-90 % of ``limit`` (or a similar amount if unlimited)."""
    last = today or usage_day()
    seed = f"{tenant.pk if isinstance(tenant, Tenant) else tenant}:{feature}"
    daily = plausible_history(used_this_period, period_start, last, seed=seed)
    rng = random.Random(seed)
    first = last - timedelta(days=days - 1)
    end = period_start - timedelta(days=1)
    while end >= first:
        start = max(end.replace(day=1), first)
        full = limit if limit is not None else max(used_this_period, 100)
        daily.update(
            plausible_history(int(full * rng.uniform(0.55, 0.9)), start, end, seed=f"{seed}:{end}")
        )
        end = start - timedelta(days=1)
    record_history(tenant, feature, daily)
