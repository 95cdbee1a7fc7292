"""Daily usage buckets, written by the store in the same unit of work as the counter.

Run against both stores. With the Redis store a bucket lives in Redis until the flush copies it:
``buckets`` checks that the store's own reading (``daily_usage``, which adds what Redis holds)
already agrees before the flush, then flushes and reads the table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from pytest_django import DjangoAssertNumQueries

from usage_limits import consume, increment_usage, refund, reset_usage, set_usage
from usage_limits.backends import get_store
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .concurrency import run_in_threads
from .stores import flush_if_write_behind, redis_prefix, store_name  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("store_name")]

TODAY = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)


def buckets(tenant: Tenant, feature: str = "api_calls") -> dict[dt.date, int]:
    """The buckets in the database once the store's changes reached it (days at zero too)."""
    seen = get_store().daily_usage(tenant.pk, feature, dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    flush_if_write_behind()
    rows = UsageDailyBucket.objects.filter(tenant=tenant, feature=feature)
    recorded = dict(rows.values_list("day", "used"))
    assert seen == {day: used for day, used in recorded.items() if used}
    return recorded


@time_machine.travel(TODAY, tick=False)
def test_consume_and_increment_add_to_todays_bucket(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 3)
    increment_usage(tenant, "api_calls", 4)
    assert buckets(tenant) == {dt.date(2026, 3, 14): 7}


def test_each_day_has_its_own_bucket(tenant: Tenant) -> None:
    with time_machine.travel(TODAY, tick=False):
        consume(tenant, "api_calls", 2)
    with time_machine.travel(TODAY + dt.timedelta(days=1), tick=False):
        consume(tenant, "api_calls", 5)
        assert buckets(tenant) == {dt.date(2026, 3, 14): 2, dt.date(2026, 3, 15): 5}
    assert UsageRecord.objects.get(tenant=tenant).used == 7


@time_machine.travel(TODAY, tick=False)
def test_a_denied_consume_writes_no_history(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 100)
    assert not consume(tenant, "api_calls", 1).allowed
    assert not consume(tenant, "api_calls", 50).allowed
    assert buckets(tenant) == {dt.date(2026, 3, 14): 100}


@time_machine.travel(TODAY, tick=False)
def test_refund_takes_back_from_today_but_never_below_zero(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 5)
    refund(tenant, "api_calls", 2)
    assert buckets(tenant) == {dt.date(2026, 3, 14): 3}
    refund(tenant, "api_calls", 10)  # the counter gives back 3, so does the bucket
    assert buckets(tenant) == {dt.date(2026, 3, 14): 0}
    assert UsageRecord.objects.get(tenant=tenant).used == 0


def test_refund_of_yesterdays_usage_leaves_yesterday_alone(tenant: Tenant) -> None:
    with time_machine.travel(TODAY, tick=False):
        consume(tenant, "api_calls", 5)
    with time_machine.travel(TODAY + dt.timedelta(days=1), tick=False):
        refund(tenant, "api_calls", 2)
        assert buckets(tenant) == {dt.date(2026, 3, 14): 5}
    assert UsageRecord.objects.get(tenant=tenant).used == 3


@time_machine.travel(TODAY, tick=False)
def test_resets_and_levels_do_not_touch_history(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 40)
    reset_usage(tenant, "api_calls", reason="goodwill")
    set_usage(tenant, "projects", 2)
    assert buckets(tenant) == {dt.date(2026, 3, 14): 40}
    assert buckets(tenant, "projects") == {}
    assert UsageRecord.objects.get(tenant=tenant, feature="api_calls").used == 0


def test_the_day_is_a_date_in_the_usage_time_zone(tenant: Tenant, settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "TIME_ZONE": "Asia/Tokyo"}
    # 23:30 UTC on the 14th is 08:30 on the 15th in Tokyo.
    with time_machine.travel(dt.datetime(2026, 3, 14, 23, 30, tzinfo=dt.UTC), tick=False):
        consume(tenant, "api_calls")
        assert buckets(tenant) == {dt.date(2026, 3, 15): 1}


@time_machine.travel(TODAY, tick=False)
def test_history_can_be_switched_off(tenant: Tenant, settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": False}
    consume(tenant, "api_calls", 3)
    increment_usage(tenant, "api_calls", 1)
    refund(tenant, "api_calls", 1)
    assert buckets(tenant) == {}
    assert UsageRecord.objects.get(tenant=tenant).used == 3


@pytest.mark.parametrize("history", [True, False])
def test_what_history_costs_in_queries(
    tenant: Tenant,
    vendor: str,
    store_name: str,
    settings: Any,
    history: bool,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": history}
    consume(tenant, "api_calls")  # warms the rules cache, creates the period's row
    # PostgreSQL folds the bucket into the counter's statement; elsewhere it is a second one.
    # Redis keeps the bucket in the counter's script call: no query at all.
    expected = 2 if history and vendor != "postgresql" else 1
    if store_name == "redis":
        expected = 0
    with django_assert_num_queries(expected):
        assert consume(tenant, "api_calls").allowed
    with django_assert_num_queries(expected):
        increment_usage(tenant, "api_calls")


@pytest.mark.django_db(transaction=True)
@pytest.mark.frozen_clock(TODAY)
def test_concurrent_consumers_leave_history_equal_to_the_counter() -> None:
    tenant = TenantFactory(plan=plan_with_limits("TWENTY", api_calls=20))
    decisions = run_in_threads(24, lambda _: consume(tenant.pk, "api_calls", 1))
    allowed = sum(d.allowed for d in decisions)
    assert allowed == 20
    assert sum(buckets(tenant).values()) == UsageRecord.objects.get(tenant=tenant).used == 20


@time_machine.travel(TODAY, tick=False)
def test_allocations_keep_no_history(tenant: Tenant) -> None:
    set_usage(tenant, "projects", 2)
    increment_usage(tenant, "projects", 3)
    refund(tenant, "projects", 1)
    assert buckets(tenant, "projects") == {}
    flush_if_write_behind()
    assert UsageRecord.objects.get(tenant=tenant, feature="projects").used == 4
