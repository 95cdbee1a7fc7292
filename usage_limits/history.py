"""A tenant's usage of one feature, day by day, read from the daily buckets.

Each day carries what was used on it and, for metered features, the running total within its
period: the number the period's limit applies to. The chart draws that running total against the
limit, because a day's share of a monthly limit means little to a reader, while "how close to the
limit was I on the 12th" is the question a usage page answers.

Reading history costs one query (through the store's ``daily_usage``), whatever the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from usage_limits.backends import get_store
from usage_limits.backends.base import usage_day
from usage_limits.conf import conf
from usage_limits.engine import TenantRef
from usage_limits.exceptions import WrongFeatureKind
from usage_limits.levels import Level, usage_level
from usage_limits.models import FeatureKind, UsageDailyBucket
from usage_limits.periods import Period, period_containing
from usage_limits.rules import tenant_rules
from usage_limits.units import feature_unit

RANGES: tuple[int, ...] = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: date
    used: int  # counted on this day
    period_used: int  # running total within the day's period (the day's own usage if none)
    level: Level  # of ``period_used`` against the limit


@dataclass(frozen=True, slots=True)
class UsageHistory:
    tenant_id: int
    feature: str
    label: str
    kind: str
    unit: str
    limit: int | None
    period: str | None  # "monthly", ...; None for allocations
    days: list[DayUsage]

    @property
    def first(self) -> date:
        return self.days[0].day

    @property
    def last(self) -> date:
        return self.days[-1].day

    @property
    def total(self) -> int:
        return sum(d.used for d in self.days)

    @property
    def cumulative(self) -> bool:
        """Whether the days carry running totals that the period's limit applies to."""
        return self.period is not None

    @property
    def peak(self) -> DayUsage | None:
        """The day with the highest plotted value (the latest of equals), or ``None`` if idle."""
        best = max(reversed(self.days), key=lambda d: d.period_used, default=None)
        return best if best is not None and best.period_used > 0 else None


def clamp_days(days: object, default: int = DEFAULT_DAYS) -> int:
    """A range asked for in a query string or a template, made safe (1..366 days)."""
    try:
        value = int(str(days))
    except (TypeError, ValueError):
        return default
    return value if 1 <= value <= MAX_DAYS else default


def usage_history(
    tenant: TenantRef, feature: str, days: int = DEFAULT_DAYS, *, today: date | None = None
) -> UsageHistory:
    """The last ``days`` days of a feature's usage, ending today (in the usage time zone)."""
    rules = tenant_rules(tenant)
    rule = rules.rule(feature)
    if rule.kind == FeatureKind.BOOLEAN:
        raise WrongFeatureKind(f"{feature!r} is a boolean feature: it has no usage history.")
    last = today or usage_day()
    first = last - timedelta(days=clamp_days(days) - 1)
    zone = ZoneInfo(conf.TIME_ZONE)

    known: list[Period] = []  # the last period found: consecutive days mostly share it

    def period_start(day: date) -> date | None:
        if rule.period is None:
            return None
        # A day belongs to the period its first instant falls in (billing-anchored periods may
        # start mid-day; the day goes to the period that was running when it began).
        moment = datetime.combine(day, time.min, tzinfo=zone)
        if not (known and known[0].contains(moment)):
            known[:] = [
                period_containing(rule.period, moment, tz=zone, anchor=rules.billing_anchor)
            ]
        return max(known[0].start.astimezone(zone).date(), day - timedelta(days=MAX_DAYS))

    # Read from the start of the first day's period, so its running total is right.
    read_from = min(first, period_start(first) or first)
    counted = get_store().daily_usage(rules.tenant_id, rule.feature, read_from, last)

    result: list[DayUsage] = []
    running = 0
    current_start: date | None = None
    day = read_from
    while day <= last:
        start = period_start(day)
        if start != current_start:
            running, current_start = 0, start
        used = counted.get(day, 0)
        running += used
        if day >= first:
            if rule.period is not None:
                result.append(DayUsage(day, used, running, usage_level(running, rule.limit)))
            else:  # an allocation's limit is a level, not a sum of days: no level per day
                result.append(DayUsage(day, used, used, Level.OK))
        day += timedelta(days=1)
    return UsageHistory(
        tenant_id=rules.tenant_id,
        feature=rule.feature,
        label=rule.label,
        kind=rule.kind,
        unit=feature_unit(rule.feature),
        limit=rule.limit,
        period=rule.period,
        days=result,
    )


def prune_history(keep_days: int, *, today: date | None = None, batch_size: int = 5_000) -> int:
    """Delete daily buckets older than ``keep_days`` days; return how many were deleted.

    In batches, each its own short transaction, so pruning a large table never holds locks for
    long or builds one huge transaction.
    """
    if keep_days < 1:
        raise ValueError("keep_days must be at least 1.")
    cutoff = (today or usage_day()) - timedelta(days=keep_days - 1)
    old = UsageDailyBucket.objects.using(conf.DATABASE_ALIAS).filter(day__lt=cutoff)
    deleted = 0
    while True:
        ids = list(old.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = UsageDailyBucket.objects.using(conf.DATABASE_ALIAS).filter(id__in=ids).delete()
        deleted += count
