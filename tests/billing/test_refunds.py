"""Units given back are not billed: a refund by key withdraws its event from the Stripe report.

``count="success"`` gives a failed request's unit back; for a feature billed through a Stripe
meter, the unit's ledger row must then stay out of the report too, or the customer pays for a
request that was not counted.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import time_machine
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from tests.billing.conftest import report_then_crash
from usage_limits import check_limit, consume, refund
from usage_limits.billing.reporter import report_pending
from usage_limits.billing.testing import FakeStripe
from usage_limits.exceptions import InvalidIdempotencyKey, InvalidQuantity, UnknownEvent
from usage_limits.models import Tenant, UsageEvent
from usage_limits.testing.factories import MembershipFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

State = UsageEvent.ReportState


@pytest.fixture
def customer_member(customer: Tenant) -> AbstractBaseUser:
    user = UserFactory(username="payer")
    MembershipFactory(user=user, tenant=customer, is_default=True)
    return user  # type: ignore[no-any-return]


def used(tenant: Tenant) -> int:
    return check_limit(tenant, "api_calls").used


@pytest.mark.parametrize("path", ["/fn/success/", "/cbv/success/", "/drf/success/"])
@pytest.mark.parametrize("failure", ["?status=500", "?status=404", "?fail=1"])
def test_a_request_given_back_by_count_success_is_not_billed(
    client: Client,
    billing: FakeStripe,
    customer: Tenant,
    customer_member: AbstractBaseUser,
    path: str,
    failure: str,
) -> None:
    client.force_login(customer_member)
    client.raise_request_exception = False
    assert client.get(path).status_code == 200
    client.get(path + failure)
    assert used(customer) == 1
    refunded = UsageEvent.objects.get(accepted=False)
    assert refunded.report_state == State.NOT_REPORTED

    summary = report_pending()
    assert summary.sent == 1
    assert sum(int(r.value) for r in billing.stored.values()) == 1  # the answered request only


def test_a_refund_by_key_gives_back_once(billing: FakeStripe, customer: Tenant) -> None:
    consume(customer, "api_calls", 5, idempotency_key="job-1")
    consume(customer, "api_calls", 2, idempotency_key="job-2")

    first = refund(customer, "api_calls", idempotency_key="job-1")
    again = refund(customer, "api_calls", idempotency_key="job-1")

    assert (first.quantity, first.used_before, first.used, first.replayed) == (5, 7, 2, False)
    assert (again.used_before, again.used, again.replayed) == (2, 2, True)
    assert used(customer) == 2
    states = dict(UsageEvent.objects.values_list("idempotency_key", "report_state"))
    assert states == {"job-1": State.NOT_REPORTED, "job-2": State.PENDING}
    assert report_pending().sent == 1
    assert [r.value for r in billing.stored.values()] == ["2"]


def test_a_refund_by_key_checks_what_it_is_given(billing: FakeStripe, customer: Tenant) -> None:
    consume(customer, "api_calls", 5, idempotency_key="job-1")
    with pytest.raises(InvalidQuantity, match="counted 5 unit"):
        refund(customer, "api_calls", 4, idempotency_key="job-1")
    with pytest.raises(UnknownEvent, match="job-9"):
        refund(customer, "api_calls", idempotency_key="job-9")
    with pytest.raises(UnknownEvent):
        refund(customer, "projects", idempotency_key="job-1")  # counted for another feature
    with pytest.raises(InvalidIdempotencyKey):
        refund(customer, "api_calls", idempotency_key="")
    # Nothing changed: the units are counted and billed as before.
    assert used(customer) == 5
    assert UsageEvent.objects.get().report_state == State.PENDING
    assert refund(customer, "api_calls", 5, idempotency_key="job-1").used == 0


def test_a_denied_count_has_nothing_to_give_back(billing: FakeStripe, customer: Tenant) -> None:
    consume(customer, "api_calls", 100)
    denied = consume(customer, "api_calls", 3, idempotency_key="late")
    assert not denied.allowed
    assert denied.idempotency_key == "late"
    given = refund(customer, "api_calls", idempotency_key="late")
    assert (given.used, given.replayed) == (100, True)
    assert used(customer) == 100


def test_decisions_carry_the_key_their_units_were_recorded_under(
    billing: FakeStripe, customer: Tenant
) -> None:
    generated = consume(customer, "api_calls")  # a billed feature gets a key of its own
    assert generated.idempotency_key == UsageEvent.objects.get().idempotency_key
    assert consume(customer, "api_calls", idempotency_key="k").idempotency_key == "k"
    assert consume(customer, "api_calls", idempotency_key="k").idempotency_key == "k"  # replay
    assert consume(customer, "projects").idempotency_key is None  # no meter, no ledger row


def test_a_refund_after_the_report_gives_back_and_says_stripe_has_it(
    billing: FakeStripe, customer: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    consume(customer, "api_calls", 3, idempotency_key="job-1")
    assert report_pending().sent == 1
    with caplog.at_level(logging.WARNING, logger="usage_limits"):
        given = refund(customer, "api_calls", idempotency_key="job-1")
    assert given.used == 0
    event = UsageEvent.objects.get()
    assert (event.accepted, event.report_state) == (False, State.SENT)
    assert "meter event adjustment" in caplog.text
    assert event.report_identifier in caplog.text


def test_a_refund_while_a_reporter_holds_the_event_leaves_its_report_alone(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant
) -> None:
    consume(customer, "api_calls", 4, idempotency_key="job-1")
    # A reporter sent the event and died before writing that down: Stripe may have it.
    report_then_crash(monkeypatch)
    refund(customer, "api_calls", idempotency_key="job-1")
    event = UsageEvent.objects.get()
    assert (event.accepted, event.report_state) == (False, State.PENDING)
    assert used(customer) == 0


@pytest.mark.parametrize("path", ["/fn/success/", "/drf/success/"])
def test_a_refund_that_fails_leaves_the_views_answer_and_logs(
    client: Client,
    billing: FakeStripe,
    customer: Tenant,
    customer_member: AbstractBaseUser,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the ledger is unreachable (injected)")

    monkeypatch.setattr("usage_limits.engine.withdraw_event", broken)
    client.force_login(customer_member)
    with caplog.at_level(logging.ERROR, logger="usage_limits"):
        response = client.get(path + "?status=503")
    assert response.status_code == 503  # the view's own answer, not the refund's error
    assert "could not refund" in caplog.text
    assert used(customer) == 1  # the unit stays counted, and billed: nothing was given back
    assert UsageEvent.objects.get().report_state == State.PENDING


def test_a_key_counted_in_an_ended_period_gives_back_to_that_period_not_this_one(
    billing: FakeStripe, customer: Tenant
) -> None:
    with time_machine.travel(dt.datetime(2026, 10, 20, tzinfo=dt.UTC)):
        consume(customer, "api_calls", 4, idempotency_key="october")
    with time_machine.travel(dt.datetime(2026, 11, 20, tzinfo=dt.UTC)):
        consume(customer, "api_calls", 2)
        given = refund(customer, "api_calls", idempotency_key="october")
        assert (given.period.key, given.used_before, given.used) == ("2026-10", 4, 0)
        assert used(customer) == 2  # November's count keeps its own units
    october = UsageEvent.objects.get(idempotency_key="october")
    assert (october.accepted, october.report_state) == (False, State.NOT_REPORTED)
