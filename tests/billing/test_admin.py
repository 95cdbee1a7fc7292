from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

import usage_limits.billing.admin  # noqa: F401  (registers the billing admin)
from usage_limits import increment_usage
from usage_limits.billing.reporter import report_pending
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Plan, Tenant, UsageEvent
from usage_limits.testing.factories import TenantFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.billing.urls")]

URL = "/admin/usage_limits/usageevent/"
State = UsageEvent.ReportState


def event(tenant: Tenant, state: str, **fields: object) -> UsageEvent:
    return UsageEvent.objects.create(
        tenant=tenant,
        feature="api_calls",
        quantity=1,
        timestamp=timezone.now(),
        period_key="2026-11",
        report_state=state,
        **fields,
    )


@pytest.fixture
def admin_client_(db: None) -> Client:
    client = Client()
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


def test_failed_events_are_listed_with_their_error(admin_client_: Client, customer: Tenant) -> None:
    event(customer, State.FAILED, last_error="The tenant has no Stripe customer id.")
    event(customer, State.SENT)
    page = admin_client_.get(URL, {"report_state__exact": "failed"}).content.decode()
    assert "The tenant has no Stripe customer id." in page
    assert "1 usage event" in page


def test_retry_queues_failed_events_with_their_group(
    admin_client_: Client, customer: Tenant
) -> None:
    failed = event(customer, State.FAILED, attempts=25, last_error="x", report_identifier="g-1")
    sibling = event(customer, State.FAILED, attempts=25, report_identifier="g-1")
    sent = event(customer, State.SENT)
    in_flight = event(
        customer,
        State.PENDING,
        claimed_by="abc",
        next_attempt_at=timezone.now() + dt.timedelta(minutes=5),
    )
    response = admin_client_.post(
        URL,
        {"action": "retry_reporting", "_selected_action": [failed.pk, sent.pk, in_flight.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "2 events will be sent to Stripe on the next reporter run." in page
    assert "2 events were left alone" in page
    states = dict(UsageEvent.objects.values_list("pk", "report_state"))
    assert states == {
        failed.pk: State.PENDING,
        sibling.pk: State.PENDING,
        sent.pk: State.SENT,
        in_flight.pk: State.PENDING,
    }
    failed.refresh_from_db()
    assert (failed.attempts, failed.next_attempt_at, failed.report_identifier) == (0, None, "g-1")
    in_flight.refresh_from_db()
    assert in_flight.claimed_by == "abc"
    logged = set(LogEntry.objects.values_list("object_id", flat=True))
    assert logged == {str(failed.pk), str(sibling.pk)}


def test_a_retried_event_is_sent_by_the_next_run(
    admin_client_: Client, billing: FakeStripe, free_plan: Plan
) -> None:
    tenant = TenantFactory(plan=free_plan, stripe_customer_id="")
    increment_usage(tenant, "api_calls")
    assert report_pending().failed == 1  # no Stripe customer yet
    tenant.stripe_customer_id = "cus_late"
    tenant.save()
    admin_client_.post(
        URL, {"action": "retry_reporting", "_selected_action": [UsageEvent.objects.get().pk]}
    )
    assert report_pending().sent == 1
    assert [r.customer_id for r in billing.requests] == ["cus_late"]


def test_the_ledger_is_read_only_and_retry_needs_change_permission(customer: Tenant) -> None:
    failed = event(customer, State.FAILED)
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_usageevent"))
    client = Client()
    client.force_login(viewer)
    page = client.get(URL).content.decode()
    assert "retry_reporting" not in page
    client.post(URL, {"action": "retry_reporting", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.report_state == State.FAILED
    assert client.get(f"{URL}add/").status_code == 403
    assert client.get(f"{URL}{failed.pk}/delete/").status_code == 403


def test_webhook_events_are_listed(admin_client_: Client) -> None:
    assert admin_client_.get("/admin/usage_limits/stripewebhookevent/").status_code == 200
