"""Reading history back: running totals per period, ranges, and the chart drawn from them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from pytest_django import DjangoAssertNumQueries

from usage_limits import consume
from usage_limits.charts import history_chart, nice_ceiling
from usage_limits.exceptions import WrongFeatureKind
from usage_limits.history import clamp_days, usage_history
from usage_limits.levels import Level
from usage_limits.models import Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits
from usage_limits.testing.history import plausible_history, record_history

pytestmark = pytest.mark.django_db

MARCH_3 = dt.date(2026, 3, 3)


def test_running_totals_start_again_with_each_period(tenant: Tenant) -> None:
    record_history(
        tenant,
        "api_calls",
        {
            dt.date(2026, 2, 20): 50,  # before the range, same period as its first day
            dt.date(2026, 2, 27): 10,
            dt.date(2026, 2, 28): 20,
            dt.date(2026, 3, 1): 5,  # a new monthly period
            dt.date(2026, 3, 3): 7,
        },
    )
    history = usage_history(tenant, "api_calls", 5, today=MARCH_3)
    assert [(d.day.day, d.used, d.period_used) for d in history.days] == [
        (27, 10, 60),
        (28, 20, 80),
        (1, 5, 5),
        (2, 0, 5),
        (3, 7, 12),
    ]
    assert [d.level for d in history.days] == [
        Level.AMBER,
        Level.AMBER,
        Level.OK,
        Level.OK,
        Level.OK,
    ]
    assert history.total == 42
    assert history.peak is not None
    assert history.peak.day == dt.date(2026, 2, 28)


def test_history_reads_what_consume_wrote(tenant: Tenant) -> None:
    with time_machine.travel(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC), tick=False):
        consume(tenant, "api_calls", 4)
    with time_machine.travel(dt.datetime(2026, 3, 3, 9, tzinfo=dt.UTC), tick=False):
        consume(tenant, "api_calls", 6)
        history = usage_history(tenant, "api_calls", 3)
    assert [(d.used, d.period_used) for d in history.days] == [(0, 0), (4, 4), (6, 10)]


def test_an_allocation_shows_daily_additions_without_levels(tenant: Tenant) -> None:
    record_history(tenant, "projects", {dt.date(2026, 3, 2): 2, dt.date(2026, 3, 3): 1})
    history = usage_history(tenant, "projects", 3, today=MARCH_3)
    assert not history.cumulative
    assert [(d.used, d.period_used, d.level) for d in history.days] == [
        (0, 0, Level.OK),
        (2, 2, Level.OK),
        (1, 1, Level.OK),
    ]
    chart = history_chart(history)
    assert chart.limit_y is None
    assert chart.limit_label == ""
    assert "added each day" in chart.description


def test_booleans_have_no_history(tenant: Tenant) -> None:
    with pytest.raises(WrongFeatureKind):
        usage_history(tenant, "advanced_analytics")


@pytest.mark.parametrize("days", [7, 90])
def test_reading_history_costs_two_queries(
    tenant: Tenant, days: int, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    usage_history(tenant, "api_calls", days, today=MARCH_3)  # warm the rules
    # the tenant's rules version (what this process remembers must be current), the buckets
    with django_assert_num_queries(2):
        history = usage_history(tenant, "api_calls", days, today=MARCH_3)
    assert len(history.days) == days


@pytest.mark.parametrize(
    ("asked", "expected"), [(7, 7), ("90", 90), ("0", 30), ("367", 30), ("x", 30), (None, 30)]
)
def test_clamp_days(asked: Any, expected: int) -> None:
    assert clamp_days(asked) == expected


def test_unlimited_features_chart_without_a_limit_line(db: None) -> None:
    tenant = TenantFactory(plan=plan_with_limits("PRO", api_calls=None))
    record_history(tenant, "api_calls", {MARCH_3: 12_345})
    chart = history_chart(usage_history(tenant, "api_calls", 7, today=MARCH_3))
    assert chart.limit_y is None
    assert "No limit" in chart.description
    assert chart.scale_top == "15K"
    assert [b.level for b in chart.bars] == [Level.OK]


def test_a_zero_limit_line_stays_on_the_axis(db: None) -> None:
    tenant = TenantFactory(plan=plan_with_limits("NONE", api_calls=0))
    chart = history_chart(usage_history(tenant, "api_calls", 7, today=MARCH_3))
    assert chart.limit_y == "199"  # 1 unit above the baseline, where a reader can see it
    assert chart.bars == []
    assert "Nothing was used in this range." in chart.description


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (7, 8), (11, 12), (110, 120), (1100, 1200), (1210, 1500)]
)
def test_nice_ceiling(value: float, top: int) -> None:
    assert nice_ceiling(value) == top


def test_plausible_history_adds_up() -> None:
    daily = plausible_history(700, dt.date(2026, 3, 1), dt.date(2026, 3, 21), seed="x")
    assert sum(daily.values()) == 700
    assert len(daily) == 21
    assert daily == plausible_history(700, dt.date(2026, 3, 1), dt.date(2026, 3, 21), seed="x")


def test_pruning_keeps_the_last_days_and_deletes_in_batches(tenant: Tenant) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    from usage_limits.models import UsageDailyBucket

    record_history(tenant, "api_calls", {MARCH_3 - dt.timedelta(days=n): 1 for n in range(10)})
    with time_machine.travel(dt.datetime(2026, 3, 3, 12, tzinfo=dt.UTC), tick=False):
        out = StringIO()
        call_command("usage_limits_prune_history", keep_days=4, batch_size=2, stdout=out)
    assert "Deleted 6 daily usage rows older than 4 days." in out.getvalue()
    days = sorted(UsageDailyBucket.objects.values_list("day", flat=True))
    assert days == [MARCH_3 - dt.timedelta(days=n) for n in (3, 2, 1, 0)]
    with pytest.raises(CommandError):
        call_command("usage_limits_prune_history", keep_days=0)
