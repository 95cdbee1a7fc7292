"""The engine's batch path: ``record_events`` (what the events API calls)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from usage_limits import (
    DenialReason,
    UsageEventInput,
    consume,
    get_usage,
    record_events,
    signals,
)
from usage_limits.exceptions import InvalidEvents
from usage_limits.models import SubscriptionStatus, Tenant, UsageEvent, UsageRecord
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .concurrency import run_in_threads


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return get_usage(tenant).feature(feature).used


def calls(*quantities: int, prefix: str = "k", **extra: Any) -> list[UsageEventInput]:
    return [
        UsageEventInput("api_calls", q, idempotency_key=f"{prefix}{i}", **extra)
        for i, q in enumerate(quantities)
    ]


@pytest.mark.django_db
def test_a_batch_counts_every_event_and_gives_each_its_own_slice(tenant: Tenant) -> None:
    decisions = record_events(tenant, calls(2, 3, 5))
    assert [(d.used_before, d.used) for d in decisions] == [(0, 2), (2, 5), (5, 10)]
    assert all(d.allowed and not d.replayed for d in decisions)
    assert used(tenant) == 10
    ledger = UsageEvent.objects.filter(tenant=tenant).order_by("idempotency_key")
    assert [(e.quantity, e.used_after, e.accepted) for e in ledger] == [
        (2, 2, True),
        (3, 5, True),
        (5, 10, True),
    ]


@pytest.mark.django_db
def test_features_are_counted_apart_and_the_order_of_results_is_the_batch_order(
    tenant: Tenant,
) -> None:
    events = [
        UsageEventInput("projects", 1, idempotency_key="p1"),
        UsageEventInput("api_calls", 4, idempotency_key="a1"),
        UsageEventInput("projects", 1),
    ]
    decisions = record_events(tenant, events)
    assert [(d.feature, d.used) for d in decisions] == [
        ("projects", 1),
        ("api_calls", 4),
        ("projects", 2),
    ]
    assert used(tenant, "projects") == 2
    assert used(tenant) == 4


@pytest.mark.django_db
def test_a_key_repeated_within_a_batch_counts_once(tenant: Tenant) -> None:
    events = [UsageEventInput("api_calls", 7, idempotency_key="same") for _ in range(3)]
    decisions = record_events(tenant, events)
    assert used(tenant) == 7
    assert [d.replayed for d in decisions] == [False, True, True]
    assert {d.used for d in decisions} == {7}
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db
def test_a_key_seen_before_answers_with_the_original_outcome(tenant: Tenant) -> None:
    first = consume(tenant, "api_calls", 4, idempotency_key="order-1")
    record_events(tenant, calls(1, prefix="other"))
    again = record_events(tenant, [UsageEventInput("api_calls", 4, idempotency_key="order-1")])[0]
    assert again.replayed
    assert again.allowed
    assert again.used == first.used == 4
    assert used(tenant) == 5


@pytest.mark.django_db
def test_enforced_events_admit_what_fits_and_deny_the_rest(tenant: Tenant) -> None:
    plan_with_limits("FREE", api_calls=10)
    decisions = record_events(tenant, calls(4, 4, 4, 2, enforce=True))
    assert [d.allowed for d in decisions] == [True, True, False, True]
    assert decisions[2].reason == DenialReason.QUOTA_EXCEEDED
    assert used(tenant) == 10
    denied = UsageEvent.objects.get(tenant=tenant, idempotency_key="k2")
    assert not denied.accepted
    replay = record_events(tenant, [UsageEventInput("api_calls", 4, idempotency_key="k2")])[0]
    assert replay.replayed
    assert not replay.allowed
    assert replay.reason == DenialReason.QUOTA_EXCEEDED


@pytest.mark.django_db
def test_recorded_events_run_over_the_limit(tenant: Tenant) -> None:
    plan_with_limits("FREE", api_calls=10)
    decisions = record_events(tenant, calls(8, 8))
    assert all(d.allowed for d in decisions)
    assert used(tenant) == 16
    assert decisions[-1].remaining == 0


@pytest.mark.django_db
def test_a_canceled_subscription_denies_enforced_events_and_records_nothing(
    tenant: Tenant,
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(subscription_status=SubscriptionStatus.CANCELED)
    tenant.refresh_from_db()
    tenant.save()  # invalidates the cached rules
    decision = record_events(tenant, calls(1, enforce=True))[0]
    assert decision.reason == DenialReason.SUBSCRIPTION_INACTIVE
    assert used(tenant) == 0
    assert not UsageEvent.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_an_invalid_batch_says_what_is_wrong_with_each_event_and_counts_nothing(
    tenant: Tenant,
) -> None:
    now = timezone.now()
    events = [
        UsageEventInput("api_calls", 1, idempotency_key="fine"),
        UsageEventInput("nope", 1),
        UsageEventInput("advanced_analytics", 1),
        UsageEventInput("api_calls", 0),
        UsageEventInput("api_calls", 1, timestamp=now + dt.timedelta(hours=1)),
        UsageEventInput("api_calls", 1, timestamp=now - dt.timedelta(days=40)),
        UsageEventInput("api_calls", 1, idempotency_key="x" * 101),
        UsageEventInput("api_calls", 1, timestamp=dt.datetime(2026, 1, 1)),
    ]
    with pytest.raises(InvalidEvents) as caught:
        record_events(tenant, events)
    errors = caught.value.errors
    assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7]
    assert "Unknown feature" in errors[1]["feature"]
    assert "boolean" in errors[2]["feature"]
    assert "at least 1" in errors[3]["quantity"]
    assert "future" in errors[4]["timestamp"]
    assert "older than the current period" in errors[5]["timestamp"]
    assert "1 to 100" in errors[6]["idempotency_key"]
    assert "time zone" in errors[7]["timestamp"]
    assert used(tenant) == 0
    assert not UsageEvent.objects.exists()


@pytest.mark.django_db
def test_an_event_from_earlier_in_the_current_period_is_counted_with_its_timestamp(
    tenant: Tenant,
) -> None:
    now = timezone.now()
    start = get_usage(tenant).feature("api_calls").period
    assert start is not None
    moment = max(start.start, now - dt.timedelta(seconds=30))
    record_events(tenant, [UsageEventInput("api_calls", 1, idempotency_key="t", timestamp=moment)])
    assert UsageEvent.objects.get(idempotency_key="t").timestamp == moment


@pytest.mark.django_db
def test_a_batch_crossing_the_warning_levels_announces_each_once(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    received: list[int] = []

    def on_threshold(sender: object, threshold: int, **kwargs: object) -> None:
        received.append(threshold)

    signals.threshold_crossed.connect(on_threshold)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            record_events(tenant, calls(50, 45, 10))
    finally:
        signals.threshold_crossed.disconnect(on_threshold)
    assert sorted(received) == [80, 100]


@pytest.mark.django_db
def test_a_batch_of_a_hundred_costs_a_fixed_number_of_queries(
    django_assert_max_num_queries: DjangoAssertNumQueries, vendor: str
) -> None:
    tenant = TenantFactory(plan=plan_with_limits("ROOMY", api_calls=100_000))
    record_events(tenant, calls(1, prefix="warm"))
    # the tenant's rules version, savepoint, known keys, one counter statement, the insert,
    # release; SQLite splits the insert in two (999 parameters a statement); the day's history
    # bucket is one more statement except on PostgreSQL, where it rides in the counter's (the
    # database store counts in the batch's transaction: no key is claimed before the count)
    history = 0 if vendor == "postgresql" else 1
    with django_assert_max_num_queries(7 + history):
        record_events(tenant, calls(*([1] * 100)))
    assert used(tenant) == 101


@pytest.mark.django_db(transaction=True)
def test_eight_threads_sending_the_same_batch_count_it_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("BATCH", api_calls=None))
    batch = calls(*([1] * 100), prefix="dup-")

    results = run_in_threads(8, lambda _: record_events(tenant.pk, batch))
    assert UsageRecord.objects.get(tenant=tenant, feature="api_calls").used == 100
    assert UsageEvent.objects.filter(tenant=tenant).count() == 100
    fresh = [sum(not d.replayed for d in decisions) for decisions in results]
    assert sum(fresh) == 100
    # every thread got the same numbers for every key, whoever counted it
    assert len({tuple(d.used for d in decisions) for decisions in results}) == 1


@pytest.mark.django_db(transaction=True)
def test_overlapping_batches_in_opposite_orders_neither_deadlock_nor_double_count() -> None:
    tenant = TenantFactory(plan=plan_with_limits("OVERLAP", api_calls=None, projects=None))
    forward = [
        UsageEventInput("api_calls" if i % 2 else "projects", 1, idempotency_key=f"o{i:03d}")
        for i in range(60)
    ]

    def work(index: int) -> list[Any]:
        return record_events(tenant.pk, forward if index % 2 else forward[::-1])

    run_in_threads(6, work)
    assert UsageRecord.objects.get(tenant=tenant, feature="api_calls").used == 30
    assert UsageRecord.objects.get(tenant=tenant, feature="projects").used == 30


@pytest.mark.parametrize(("skew", "expected"), [(60, []), (0, []), (-1, ["E060"]), ("1", ["E060"])])
def test_the_clock_skew_setting_is_checked_at_start_up(skew: Any, expected: list[str]) -> None:
    from django.test import override_settings

    from usage_limits.checks import check_event_settings

    with override_settings(USAGE_LIMITS={"EVENT_CLOCK_SKEW_SECONDS": skew}):
        found = [m.id for m in check_event_settings()]  # type: ignore[misc]
    assert found == [f"usage_limits.{e}" for e in expected]


@pytest.mark.django_db
def test_the_clock_skew_setting_widens_what_counts_as_the_future(tenant: Tenant) -> None:
    from django.test import override_settings

    ahead = timezone.now() + dt.timedelta(seconds=30)
    event = UsageEventInput("api_calls", 1, timestamp=ahead)
    with (
        override_settings(USAGE_LIMITS={"EVENT_CLOCK_SKEW_SECONDS": 0}),
        pytest.raises(InvalidEvents),
    ):
        record_events(tenant, [event])
    assert record_events(tenant, [event])[0].allowed


@pytest.mark.django_db
def test_invalid_events_tells_without_recording(tenant: Tenant) -> None:
    from usage_limits import invalid_events

    events = [UsageEventInput("api_calls", 1), UsageEventInput("nope", 1)]
    assert list(invalid_events(tenant, events)) == [1]
    assert invalid_events(tenant, events[:1]) == {}
    assert used(tenant) == 0
