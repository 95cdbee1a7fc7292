"""Real threads against the real database of this run (SQLite file in WAL, PostgreSQL, MariaDB)."""

from __future__ import annotations

import pytest

from usage_limits import consume, get_usage, increment_usage, refund, signals
from usage_limits.models import UsageRecord
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .concurrency import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_fifty_threads_against_a_limit_of_ten_admit_exactly_ten() -> None:
    tenant = TenantFactory(plan=plan_with_limits("TEN", api_calls=10))
    decisions = run_in_threads(50, lambda _: consume(tenant.pk, "api_calls"))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.used for d in decisions if d.allowed) == list(range(1, 11))
    assert UsageRecord.objects.get(tenant=tenant).used == 10


def test_threads_refunding_one_key_give_its_units_back_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("BIG", api_calls=1000))
    consume(tenant.pk, "api_calls", 5, idempotency_key="job-1")
    consume(tenant.pk, "api_calls", 2)
    decisions = run_in_threads(8, lambda _: refund(tenant.pk, "api_calls", idempotency_key="job-1"))
    assert [d.replayed for d in decisions].count(False) == 1
    assert UsageRecord.objects.get(tenant=tenant).used == 2


def test_concurrent_first_use_creates_one_period_row() -> None:
    tenant = TenantFactory(plan=plan_with_limits("BIG", api_calls=1000))
    run_in_threads(16, lambda _: consume(tenant.pk, "api_calls", 3))
    assert UsageRecord.objects.filter(tenant=tenant).count() == 1
    assert get_usage(tenant).feature("api_calls").used == 48


def test_eight_threads_times_five_hundred_increments_lose_nothing() -> None:
    tenant = TenantFactory(plan=plan_with_limits("SMALL", api_calls=10))

    def work(_: int) -> None:
        for _ in range(500):
            increment_usage(tenant.pk, "api_calls")

    run_in_threads(8, work)
    assert UsageRecord.objects.get(tenant=tenant).used == 4000


def test_thresholds_fire_once_when_many_threads_cross_them_together() -> None:
    tenant = TenantFactory(plan=plan_with_limits("WARN", api_calls=40))
    received: list[int] = []

    def on_threshold(sender: object, threshold: int, **kwargs: object) -> None:
        received.append(threshold)

    signals.threshold_crossed.connect(on_threshold)
    try:
        run_in_threads(32, lambda _: consume(tenant.pk, "api_calls", 2))
    finally:
        signals.threshold_crossed.disconnect(on_threshold)
    assert sorted(received) == [80, 100]
