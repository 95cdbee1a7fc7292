"""The reporter sends every billable event to Stripe exactly once, whatever fails on the way.

The real ``stripe`` SDK talks to :class:`FakeStripe`, a local HTTP server: no network.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from tests.billing.conftest import report_then_crash, with_billing
from usage_limits import consume, increment_usage
from usage_limits.billing import reporter
from usage_limits.billing.reporter import ReportSummary, backoff, report_pending
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Plan, Tenant, UsageEvent
from usage_limits.testing.factories import TenantFactory

pytestmark = pytest.mark.django_db

State = UsageEvent.ReportState


def report_until_done(rounds: int = 200) -> list[ReportSummary]:
    runs = []
    for _ in range(rounds):
        if not UsageEvent.objects.filter(report_state=State.PENDING).exists():
            return runs
        runs.append(report_pending())
    raise AssertionError("events still pending after many runs")


def billing_with(settings: Any, fake: FakeStripe, **extra: Any) -> None:
    defaults: dict[str, Any] = {
        "METERS": {"api_calls": "api_requests"},
        "API_BASE": fake.url,
        "RETRY_BASE_SECONDS": 0,
        "REQUEST_TIMEOUT": 5,
    }
    settings.USAGE_LIMITS = with_billing(**{**defaults, **extra})


def test_every_event_reaches_stripe_once_despite_random_failures(
    settings: Any, billing: FakeStripe, free_plan: Plan
) -> None:
    billing.failure_rate = 0.3  # 500 or 429 at random
    billing.lost_response_rate = 0.3  # some 500s come after Stripe stored the event
    tenants = [TenantFactory(plan=free_plan, stripe_customer_id=f"cus_{i}") for i in range(3)]
    for i in range(120):
        increment_usage(tenants[i % 3], "api_calls", i % 5 + 1)
    events = list(UsageEvent.objects.all())

    runs = report_until_done()

    identifiers = {e.report_identifier for e in UsageEvent.objects.all()}
    assert len(identifiers) == len(events)
    assert set(billing.stored) == identifiers
    successes = billing.successes()
    assert max(successes.values()) == 1  # nothing answered 200 was ever sent again
    assert set(successes) <= identifiers
    assert all(e.report_state == State.SENT for e in UsageEvent.objects.all())
    billed: Counter[str] = Counter()
    for request in billing.stored.values():
        billed[request.customer_id] += int(request.value)
    counted: Counter[str] = Counter()
    for event in events:
        counted[f"cus_{tenants.index(event.tenant)}"] += event.quantity
    assert billed == counted
    # the failures really happened and were retried
    statuses = Counter(r.status for r in billing.requests)
    assert statuses[500] > 0
    assert statuses[429] > 0
    assert sum(run.retrying for run in runs) > 0


@pytest.mark.parametrize("duplicates", ["accept", "reject"])
def test_a_reporter_killed_between_sending_and_marking_resends_the_same_identifier(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant, duplicates: str
) -> None:
    billing.duplicates = duplicates
    consume(customer, "api_calls", 7)
    event = UsageEvent.objects.get()
    report_then_crash(monkeypatch)
    assert len(billing.requests) == 1
    event.refresh_from_db()
    assert event.report_state == State.PENDING  # Stripe has it; we never wrote that down
    identifier = event.report_identifier
    assert identifier

    # While its lease runs, no other run touches the event.
    assert report_pending().claimed == 0
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=6)):
        summary = report_pending()
    assert summary.sent == 1
    assert [r.identifier for r in billing.requests] == [identifier, identifier]
    assert list(billing.stored) == [identifier]
    assert billing.stored[identifier].value == "7"
    event.refresh_from_db()
    assert event.report_state == State.SENT


def test_hourly_aggregation_sends_one_meter_event_per_customer_meter_and_hour(
    settings: Any, billing: FakeStripe, customer: Tenant, free_plan: Plan
) -> None:
    billing_with(settings, billing, AGGREGATE="hour")
    other = TenantFactory(plan=free_plan, stripe_customer_id="cus_B")
    start = dt.datetime(2026, 11, 20, 9, 10, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False):
        for _ in range(4):
            increment_usage(customer, "api_calls", 2)
        increment_usage(other, "api_calls", 5)
    with time_machine.travel(start + dt.timedelta(hours=1), tick=False):
        increment_usage(customer, "api_calls", 3)
    with time_machine.travel(start + dt.timedelta(hours=1, minutes=5)):
        summary = report_pending()
    assert (summary.sent, summary.requests) == (6, 3)
    sent = sorted((r.customer_id, r.value, r.timestamp) for r in billing.requests)
    assert sent == [
        ("cus_A", "3", int((start + dt.timedelta(hours=1)).timestamp())),
        ("cus_A", "8", int(start.timestamp())),
        ("cus_B", "5", int(start.timestamp())),
    ]
    first_hour = UsageEvent.objects.filter(tenant=customer, timestamp__lt=start.replace(minute=59))
    assert len({e.report_identifier for e in first_hour}) == 1


def test_an_aggregated_group_is_resent_whole_after_a_crash(
    settings: Any, monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant
) -> None:
    billing_with(settings, billing, AGGREGATE="hour", BATCH_SIZE=2)
    for _ in range(3):
        increment_usage(customer, "api_calls", 1)
    report_then_crash(monkeypatch)
    assert [r.value for r in billing.requests] == ["2"]  # a batch of two, one group
    increment_usage(customer, "api_calls", 10)  # same hour, arrives after the crash
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=6)):
        report_pending()
    first = billing.requests[0].identifier
    resent = [r for r in billing.requests[1:] if r.identifier == first]
    assert [r.value for r in resent] == ["2"]  # the same events, the same value
    assert sum(int(r.value) for r in billing.stored.values()) == 13
    assert not UsageEvent.objects.exclude(report_state=State.SENT).exists()


def test_permanent_errors_are_marked_failed_without_calling_stripe(
    settings: Any, billing: FakeStripe, free_plan: Plan
) -> None:
    no_customer = TenantFactory(plan=free_plan, stripe_customer_id="")
    increment_usage(no_customer, "api_calls")
    with time_machine.travel(timezone.now() - dt.timedelta(days=36)):
        increment_usage(TenantFactory(plan=free_plan, stripe_customer_id="cus_old"), "api_calls")
    summary = report_pending()
    assert (summary.failed, summary.requests) == (2, 0)
    errors = set(UsageEvent.objects.values_list("report_state", "last_error"))
    assert errors == {
        (State.FAILED, "The tenant has no Stripe customer id."),
        (State.FAILED, "Older than Stripe's 35-day window for meter events: it cannot be billed."),
    }
    assert billing.requests == []


def test_an_event_whose_meter_was_removed_fails(
    settings: Any, billing: FakeStripe, customer: Tenant
) -> None:
    billing_with(settings, billing)
    increment_usage(customer, "api_calls")
    billing_with(settings, billing, METERS={"projects": "projects"})
    report_pending()
    event = UsageEvent.objects.get()
    assert event.report_state == State.FAILED
    assert "No Stripe meter" in event.last_error


def test_a_rejected_meter_event_is_failed_with_stripes_message(
    billing: FakeStripe, customer: Tenant
) -> None:
    billing.answer_next(404)
    increment_usage(customer, "api_calls")
    assert report_pending().failed == 1
    event = UsageEvent.objects.get()
    assert event.report_state == State.FAILED
    assert event.last_error.startswith("Stripe rejected the meter event: 404")


def test_retryable_errors_back_off_then_give_up(
    settings: Any, billing: FakeStripe, customer: Tenant
) -> None:
    billing_with(settings, billing, RETRY_BASE_SECONDS=60, MAX_ATTEMPTS=2)
    billing.answer_next(503, 429)
    increment_usage(customer, "api_calls")
    before = timezone.now()
    first = report_pending()
    assert (first.retrying, first.requests) == (1, 1)  # not retried within the same run
    event = UsageEvent.objects.get()
    assert event.report_state == State.PENDING
    assert event.attempts == 1
    assert event.next_attempt_at is not None
    assert dt.timedelta(seconds=30) <= event.next_attempt_at - before <= dt.timedelta(seconds=61)
    assert "503" in event.last_error
    assert report_pending().claimed == 0  # not due yet
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=2)):
        assert report_pending().failed == 1
    event.refresh_from_db()
    assert event.report_state == State.FAILED
    assert event.last_error.startswith("Gave up after 2 attempts: 429")


def test_backoff_grows_exponentially_with_jitter(settings: Any) -> None:
    settings.USAGE_LIMITS = with_billing(RETRY_BASE_SECONDS=10, RETRY_MAX_SECONDS=300)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (6, 300), (20, 300)]:
        delays = {backoff(attempt).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


def test_a_refused_api_key_stops_the_run_and_keeps_events_pending(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_revoked")
    for _ in range(3):
        increment_usage(customer, "api_calls")
    summary = report_pending()
    assert "Stripe refused the API key" in summary.stopped
    assert (summary.sent, summary.failed, summary.requests) == (0, 0, 1)
    assert billing.stored == {}
    events = UsageEvent.objects.all()
    assert {(e.report_state, e.attempts, e.claimed_by) for e in events} == {(State.PENDING, 0, "")}
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_usage_limits")
    assert report_pending().sent == 3


def test_without_an_api_key_reporting_is_off(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY")
    increment_usage(customer, "api_calls")
    summary = report_pending()
    assert not summary.enabled
    assert "STRIPE_API_KEY is not set" in str(summary)
    assert UsageEvent.objects.get().report_state == State.PENDING
    assert billing.requests == []


def test_a_limit_bounds_one_run(settings: Any, billing: FakeStripe, customer: Tenant) -> None:
    billing_with(settings, billing, BATCH_SIZE=2)
    for _ in range(5):
        increment_usage(customer, "api_calls")
    batches = []
    summary = report_pending(limit=3, progress=batches.append)
    assert (summary.sent, summary.batches) == (3, 2)
    assert [b.events for b in batches] == [2, 1]
    assert UsageEvent.objects.filter(report_state=State.PENDING).count() == 2


def test_meter_events_carry_the_stripe_fields(billing: FakeStripe, customer: Tenant) -> None:
    moment = dt.datetime(2026, 11, 20, 9, 30, 15, tzinfo=dt.UTC)
    with time_machine.travel(moment, tick=False):
        consume(customer, "api_calls", 4, idempotency_key="req-42")
    with time_machine.travel(moment + dt.timedelta(minutes=1)):
        report_pending()
    (request,) = billing.requests
    assert request.event_name == "api_requests"
    assert request.customer_id == "cus_A"
    assert request.value == "4"
    assert request.identifier == f"{customer.pk}-k-req-42"
    assert request.timestamp == int(moment.timestamp())


def test_a_run_ends_even_while_usage_keeps_arriving(
    monkeypatch: pytest.MonkeyPatch, settings: Any, billing: FakeStripe, customer: Tenant
) -> None:
    billing_with(settings, billing, BATCH_SIZE=1)
    increment_usage(customer, "api_calls")
    deliver = reporter._Reporter.deliver

    def deliver_while_busy(self: Any, group: Any) -> Any:
        increment_usage(customer, "api_calls")  # every send, one more event arrives
        return deliver(self, group)

    monkeypatch.setattr(reporter._Reporter, "deliver", deliver_while_busy)
    assert report_pending().sent == 1
    assert report_pending().sent == 1
    assert UsageEvent.objects.filter(report_state=State.PENDING).count() == 1


def test_a_client_key_never_takes_the_identifier_of_a_keyless_event(
    billing: FakeStripe, customer: Tenant
) -> None:
    """Seen before: a keyless event went as ``<tenant>-event-<pk>``, a client's key ``event-<pk>``
    as the same identifier, and Stripe dropped the second: its 7 units were never billed."""
    from usage_limits import record_events
    from usage_limits.events import UsageEventInput

    record_events(customer, [UsageEventInput("api_calls", 3)])
    row = UsageEvent.objects.get(tenant=customer, idempotency_key=None)
    consume(customer, "api_calls", 7, idempotency_key=f"event-{row.pk}")
    report_until_done()
    # What Stripe kept (it keeps the first event of an identifier and drops the others).
    assert sorted(int(r.value) for r in billing.stored.values()) == [3, 7]
