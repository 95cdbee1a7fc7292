"""The store contract, run against every store: the database store and the Redis store.

One suite, parametrised: whatever a store keeps its counters in, the engine (and so every edge)
must see the same answers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from usage_limits import consume, get_usage, reset_usage, signals
from usage_limits.backends import CounterKey, UsageStore, get_store
from usage_limits.models import Tenant, UsageRecord, UsageReset
from usage_limits.periods import ALL_TIME, period_containing
from usage_limits.testing.factories import TenantFactory, UserFactory, plan_with_limits

from .concurrency import run_in_threads
from .stores import flush_if_write_behind, redis_prefix, store_name  # noqa: F401  (fixtures)

MARCH = period_containing("monthly", dt.datetime(2026, 3, 10, tzinfo=dt.UTC))
APRIL = period_containing("monthly", dt.datetime(2026, 4, 10, tzinfo=dt.UTC))


@pytest.fixture
def store(store_name: str) -> UsageStore:
    return get_store()


@pytest.fixture
def key(tenant: Tenant) -> CounterKey:
    return CounterKey(tenant.pk, "api_calls", MARCH)


def record(key: CounterKey) -> int | None:
    """The database row's value, after the Redis store's changes reached it."""
    flush_if_write_behind()
    row = UsageRecord.objects.filter(
        tenant_id=key.tenant_id, feature=key.feature, period_start=key.period.start
    ).first()
    return None if row is None else row.used


pytestmark = pytest.mark.django_db


def test_the_configured_store_is_the_one_under_test(store: UsageStore, store_name: str) -> None:
    assert type(store).__name__ == {"database": "DatabaseStore", "redis": "RedisStore"}[store_name]


def test_a_counter_never_written_reads_zero(store: UsageStore, key: CounterKey) -> None:
    assert store.get(key) == 0
    assert store.get_many([key]) == {key: 0}


def test_consume_admits_up_to_the_limit_and_returns_before_and_after(
    store: UsageStore, key: CounterKey
) -> None:
    changes = [store.consume(key, 2, 5) for _ in range(3)]
    assert [(c.applied, c.before, c.after) for c in changes] == [
        (True, 0, 2),
        (True, 2, 4),
        (False, 4, 4),
    ]
    assert store.get(key) == 4
    last = store.consume(key, 1, 5)
    assert (last.applied, last.before, last.after) == (True, 4, 5)
    assert record(key) == 5


def test_a_denial_counts_nothing(store: UsageStore, key: CounterKey) -> None:
    store.consume(key, 3, 3)
    denied = store.consume(key, 1, 3)
    assert (denied.applied, denied.before, denied.after) == (False, 3, 3)
    assert store.get(key) == 3


def test_consume_without_a_limit_always_counts(store: UsageStore, key: CounterKey) -> None:
    change = store.consume(key, 10**9, None)
    assert (change.applied, change.before, change.after) == (True, 0, 10**9)


def test_a_limit_of_zero_admits_nothing(store: UsageStore, key: CounterKey) -> None:
    assert not store.consume(key, 1, 0).applied
    assert store.get(key) == 0


def test_increment_may_run_over_the_limit(store: UsageStore, key: CounterKey) -> None:
    store.consume(key, 5, 5)
    change = store.increment(key, 3)
    assert (change.applied, change.before, change.after) == (True, 5, 8)
    assert record(key) == 8


def test_refund_gives_back_but_never_below_zero(store: UsageStore, key: CounterKey) -> None:
    store.increment(key, 5)
    first = store.refund(key, 2)
    assert (first.before, first.after) == (5, 3)
    second = store.refund(key, 10)
    assert (second.before, second.after) == (3, 0)
    assert store.get(key) == 0
    assert record(key) == 0


def test_refunding_a_counter_never_written_leaves_zero(store: UsageStore, key: CounterKey) -> None:
    change = store.refund(key, 3)
    assert (change.before, change.after) == (0, 0)
    assert store.get(key) == 0


def test_set_replaces_the_value_and_returns_the_old_one(store: UsageStore, tenant: Tenant) -> None:
    seats = CounterKey(tenant.pk, "seats", ALL_TIME)
    first = store.set(seats, 4)
    assert (first.applied, first.before, first.after) == (True, 0, 4)
    second = store.set(seats, 2)
    assert (second.before, second.after) == (4, 2)
    assert store.get(seats) == 2
    # set writes the record at once: no flush needed to see it in the database
    assert UsageRecord.objects.get(tenant=tenant, feature="seats").used == 2


def test_reset_returns_the_value_before_and_zeroes_the_record_at_once(
    store: UsageStore, key: CounterKey
) -> None:
    store.increment(key, 7)
    change = store.reset(key)
    assert (change.applied, change.before, change.after) == (True, 7, 0)
    assert store.get(key) == 0
    assert UsageRecord.objects.get(tenant_id=key.tenant_id, feature="api_calls").used == 0
    assert store.consume(key, 1, 1).applied


def test_reset_of_a_counter_never_written_changes_nothing(
    store: UsageStore, key: CounterKey
) -> None:
    change = store.reset(key)
    assert (change.applied, change.before, change.after) == (False, 0, 0)


def test_periods_and_features_are_separate_counters(store: UsageStore, tenant: Tenant) -> None:
    other = TenantFactory(plan=tenant.plan)
    keys = [
        CounterKey(tenant.pk, "api_calls", MARCH),
        CounterKey(tenant.pk, "api_calls", APRIL),
        CounterKey(tenant.pk, "projects", ALL_TIME),
        CounterKey(other.pk, "api_calls", MARCH),
    ]
    for quantity, key in enumerate(keys, start=1):
        store.increment(key, quantity)
    never = CounterKey(other.pk, "projects", ALL_TIME)
    assert store.get_many([*keys, never]) == {**{k: i for i, k in enumerate(keys, 1)}, never: 0}
    assert store.get_many([]) == {}


def test_large_values_stay_exact(store: UsageStore, key: CounterKey) -> None:
    big = 2**53 + 1
    store.increment(key, big)
    change = store.increment(key, 2)
    assert (change.before, change.after) == (big, big + 2)
    assert store.get(key) == big + 2


# --- through the engine: what users of either store notice ------------------------------------


def test_thresholds_fire_once_from_the_before_and_after_values(
    store_name: str, django_capture_on_commit_callbacks: Any
) -> None:
    tenant = TenantFactory(plan=plan_with_limits("TEN", api_calls=10))
    fired: list[int] = []

    def on_threshold(sender: object, threshold: int, **kwargs: Any) -> None:
        fired.append(threshold)

    signals.threshold_crossed.connect(on_threshold)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            decisions = [consume(tenant, "api_calls", 3) for _ in range(5)]
    finally:
        signals.threshold_crossed.disconnect(on_threshold)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert fired == [80]  # 6 -> 9 of 10 crossed 80 % once; 100 % was never reached


def test_an_operator_reset_is_audited_with_the_value_the_store_held(store_name: str) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FIVE", api_calls=5))
    for _ in range(4):
        consume(tenant, "api_calls")
    operator = UserFactory()
    reset_usage(tenant, "api_calls", by=operator, reason="goodwill")
    audit = UsageReset.objects.get(tenant=tenant)
    assert (audit.value_before, audit.value_after, audit.performed_by) == (4, 0, operator)
    assert get_usage(tenant).feature("api_calls").used == 0
    assert UsageRecord.objects.get(tenant=tenant, feature="api_calls").used == 0
    assert all(consume(tenant, "api_calls").allowed for _ in range(5))


def test_a_plan_change_applies_to_the_next_request(store_name: str) -> None:
    tenant = TenantFactory(plan=plan_with_limits("TWO", api_calls=2))
    assert [consume(tenant, "api_calls").allowed for _ in range(3)] == [True, True, False]
    tenant.plan = plan_with_limits("THREE", api_calls=3)
    tenant.save()
    assert consume(tenant, "api_calls").allowed
    assert not consume(tenant, "api_calls").allowed


@pytest.mark.django_db(transaction=True)
def test_threads_against_one_counter_admit_exactly_the_limit(store_name: str) -> None:
    tenant = TenantFactory(plan=plan_with_limits("TWENTY", api_calls=20))
    decisions = run_in_threads(16, lambda _: [consume(tenant.pk, "api_calls") for _ in range(4)])
    allowed = [d for batch in decisions for d in batch if d.allowed]
    assert len(allowed) == 20
    assert sorted(d.used for d in allowed) == list(range(1, 21))
    assert get_usage(tenant).feature("api_calls").used == 20
