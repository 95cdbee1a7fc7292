"""Billable usage is written to the ledger in the same transaction as the counter."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from pytest_django import DjangoAssertNumQueries

from usage_limits import consume, get_usage, increment_usage
from usage_limits.billing.ledger import event_identifier, hourly_identifier, keyless_identifier
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Tenant, UsageEvent

pytestmark = pytest.mark.django_db

PENDING = UsageEvent.ReportState.PENDING


class Boom(Exception):
    pass


def test_a_metered_feature_writes_a_pending_event_per_counted_use(
    billing: FakeStripe, customer: Tenant
) -> None:
    consume(customer, "api_calls", 3, metadata={"path": "/v1/search"})
    increment_usage(customer, "api_calls", 2)
    events = list(UsageEvent.objects.order_by("id"))
    assert [(e.quantity, e.report_state, e.accepted) for e in events] == [
        (3, PENDING, True),
        (2, PENDING, True),
    ]
    assert events[0].metadata == {"path": "/v1/search"}
    assert events[0].used_after == 3
    assert all(e.idempotency_key for e in events)  # generated: Stripe needs an identifier
    assert events[0].idempotency_key != events[1].idempotency_key


def test_a_denied_request_writes_nothing_to_bill(billing: FakeStripe, customer: Tenant) -> None:
    consume(customer, "api_calls", 100)
    assert not consume(customer, "api_calls").allowed
    assert not consume(customer, "api_calls", idempotency_key="req-denied").allowed
    assert UsageEvent.objects.filter(report_state=PENDING).count() == 1
    denied = UsageEvent.objects.get(idempotency_key="req-denied")
    assert denied.report_state == UsageEvent.ReportState.NOT_REPORTED


def test_a_replayed_key_is_billed_once(billing: FakeStripe, customer: Tenant) -> None:
    first = consume(customer, "api_calls", 5, idempotency_key="req-1")
    again = consume(customer, "api_calls", 5, idempotency_key="req-1")
    assert again.replayed
    assert again.used == first.used == 5
    assert list(UsageEvent.objects.values_list("quantity", "report_state")) == [(5, PENDING)]


def test_features_without_a_meter_write_no_event(billing: FakeStripe, customer: Tenant) -> None:
    increment_usage(customer, "projects")
    consume(customer, "seats")
    assert not UsageEvent.objects.exists()


def test_without_billing_settings_nothing_is_billed(customer: Tenant) -> None:
    consume(customer, "api_calls", idempotency_key="req-1")
    consume(customer, "api_calls")
    assert list(UsageEvent.objects.values_list("report_state", flat=True)) == [
        UsageEvent.ReportState.NOT_REPORTED
    ]


def test_the_event_and_the_counter_roll_back_together(
    billing: FakeStripe, customer: Tenant
) -> None:
    consume(customer, "api_calls")

    def count_then_fail() -> None:
        with transaction.atomic():
            consume(customer, "api_calls", 4)
            consume(customer, "api_calls", 1, idempotency_key="req-rolled-back")
            raise Boom

    with pytest.raises(Boom):
        count_then_fail()
    assert get_usage(customer).feature("api_calls").used == 1
    assert UsageEvent.objects.count() == 1


def test_unmetered_features_keep_their_one_query(
    billing: FakeStripe, customer: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    increment_usage(customer, "projects")  # warms the cache, creates the row
    with django_assert_num_queries(1):
        increment_usage(customer, "projects")


def test_a_metered_feature_adds_only_the_ledger_insert(
    billing: FakeStripe,
    customer: Tenant,
    vendor: str,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    consume(customer, "api_calls")
    # the counter's statement and the INSERT, plus the savepoint pair when the test's own
    # transaction wraps the call (in autocommit they are BEGIN and COMMIT); the day's history
    # bucket rides in the counter's statement on PostgreSQL and is one more elsewhere
    history = 0 if vendor == "postgresql" else 1
    with django_assert_num_queries(4 + history):
        consume(customer, "api_calls")


def test_identifiers_are_scoped_to_the_tenant_and_fit_stripe() -> None:
    assert event_identifier(7, "req-1") == "7-k-req-1"
    assert event_identifier(7, "req-1") != event_identifier(8, "req-1")
    long = event_identifier(7, "k" * 100)
    assert len(long) <= 100
    assert long == event_identifier(7, "k" * 100)  # stable: a re-send carries the same one
    assert long != event_identifier(7, "k" * 99 + "j")


def test_no_client_key_can_give_the_identifier_of_another_kind_of_event() -> None:
    hour = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    generated = {keyless_identifier(7, 5), hourly_identifier(7, "api_calls", hour, 5)}
    for key in ["event-5", "e-5", "5", "h-api_calls-2026112009-5", "-e-5"]:
        assert event_identifier(7, key) not in generated
    # Nor can a long key's digest stand for a short key, or the other way round.
    assert event_identifier(7, "x" * 100).startswith("7-K-")
    assert event_identifier(7, "K-" + "0" * 64).startswith("7-k-")
