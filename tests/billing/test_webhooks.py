"""Stripe webhooks, signed by the test exactly as Stripe signs them."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from django.test import Client

from tests.billing.conftest import WEBHOOK_SECRET, with_billing
from tests.concurrency import run_in_threads
from usage_limits import consume
from usage_limits.billing import webhooks
from usage_limits.billing.testing import FakeStripe, sign_webhook, stripe_event
from usage_limits.models import Plan, StripeWebhookEvent, SubscriptionStatus, Tenant
from usage_limits.results import DenialReason
from usage_limits.testing.factories import TenantFactory, plan_with_limits

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.billing.urls")]

URL = "/billing/stripe/webhook/"
T0 = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())


def post(
    event: Any,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    client: Client | None = None,
) -> Any:
    body = json.dumps(event)
    header = sign_webhook(body, secret, timestamp)
    return (client or Client()).post(
        URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


def subscription(
    status: str = "active", price: str = "price_pro", customer: str = "cus_A", **extra: Any
) -> dict[str, Any]:
    return {
        "id": "sub_1",
        "object": "subscription",
        "customer": customer,
        "status": status,
        "billing_cycle_anchor": T0,
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price}}]},
        **extra,
    }


@pytest.fixture
def pro(pro_plan: Plan) -> Plan:
    pro_plan.stripe_price_id = "price_pro"
    pro_plan.save()
    return pro_plan


def test_a_signed_subscription_update_sets_plan_status_and_anchor(
    billing: FakeStripe, customer: Tenant, pro: Plan
) -> None:
    response = post(stripe_event("customer.subscription.updated", subscription("trialing")))
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "applied"}
    customer.refresh_from_db()
    assert customer.plan == pro
    assert customer.subscription_status == SubscriptionStatus.TRIALING
    assert customer.billing_anchor == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    # the new plan's limits apply at once (the cached rules were dropped)
    assert consume(customer, "api_calls", 10_000).allowed


def test_a_forged_signature_is_refused(billing: FakeStripe, customer: Tenant, pro: Plan) -> None:
    response = post(
        stripe_event("customer.subscription.updated", subscription()), secret="whsec_forged"
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid or expired signature."}
    customer.refresh_from_db()
    assert customer.plan != pro
    assert not StripeWebhookEvent.objects.exists()


def test_a_tampered_body_is_refused(billing: FakeStripe, customer: Tenant, pro: Plan) -> None:
    body = json.dumps(stripe_event("customer.subscription.updated", subscription("canceled")))
    header = sign_webhook(body, WEBHOOK_SECRET)
    tampered = body.replace('"canceled"', '"active"')
    response = Client().post(
        URL, tampered, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    assert response.status_code == 400


def test_a_missing_signature_is_refused(billing: FakeStripe) -> None:
    body = json.dumps(stripe_event("customer.subscription.updated", subscription()))
    assert Client().post(URL, body, content_type="application/json").status_code == 400


def test_a_stale_signature_is_refused(billing: FakeStripe, customer: Tenant, pro: Plan) -> None:
    event = stripe_event("customer.subscription.updated", subscription())
    response = post(event, timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert post(event, timestamp=int(time.time()) - 60).status_code == 200


def test_a_replayed_event_id_is_processed_once(
    billing: FakeStripe, customer: Tenant, pro: Plan
) -> None:
    event = stripe_event("invoice.payment_failed", {"customer": "cus_A"}, event_id="evt_1")
    first = post(event)
    customer.refresh_from_db()
    since = customer.past_due_since
    assert first.json()["outcome"] == "applied"
    # The operator sorts things out; then Stripe redelivers the same event.
    Tenant.objects.filter(pk=customer.pk).update(subscription_status="active", past_due_since=None)
    again = post(event)
    assert again.status_code == 200
    assert again.json() == {"received": True, "outcome": "duplicate"}
    customer.refresh_from_db()
    assert customer.subscription_status == SubscriptionStatus.ACTIVE
    assert since is not None
    assert StripeWebhookEvent.objects.filter(event_id="evt_1").count() == 1


def test_payment_failed_starts_the_grace_period_once(billing: FakeStripe, customer: Tenant) -> None:
    post(stripe_event("invoice.payment_failed", {"customer": "cus_A"}, created=T0))
    post(stripe_event("invoice.payment_failed", {"customer": "cus_A"}, created=T0 + 86400))
    customer.refresh_from_db()
    assert customer.subscription_status == SubscriptionStatus.PAST_DUE
    assert customer.past_due_since == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    # long past the default 7 days of grace: blocked with 402
    decision = consume(customer, "api_calls")
    assert decision.reason == DenialReason.SUBSCRIPTION_INACTIVE


def test_recovery_clears_past_due(billing: FakeStripe, customer: Tenant, pro: Plan) -> None:
    post(stripe_event("invoice.payment_failed", {"customer": "cus_A"}, created=T0))
    post(stripe_event("customer.subscription.updated", subscription("active"), created=T0 + 60))
    customer.refresh_from_db()
    assert customer.subscription_status == SubscriptionStatus.ACTIVE
    assert customer.past_due_since is None


def test_an_older_event_arriving_late_changes_nothing(
    billing: FakeStripe, customer: Tenant, pro: Plan
) -> None:
    post(stripe_event("customer.subscription.updated", subscription("active"), created=T0 + 60))
    late = post(stripe_event("invoice.payment_failed", {"customer": "cus_A"}, created=T0))
    assert late.json()["outcome"] == "stale"
    customer.refresh_from_db()
    assert customer.subscription_status == SubscriptionStatus.ACTIVE


def test_deleting_the_subscription_cancels(billing: FakeStripe, customer: Tenant) -> None:
    post(stripe_event("customer.subscription.deleted", subscription("canceled")))
    customer.refresh_from_db()
    assert customer.subscription_status == SubscriptionStatus.CANCELED
    assert consume(customer, "api_calls").reason == DenialReason.SUBSCRIPTION_INACTIVE


def test_deleting_the_subscription_can_downgrade_instead(
    settings: Any, billing: FakeStripe, pro: Plan, free_plan: Plan
) -> None:
    settings.USAGE_LIMITS = with_billing(DOWNGRADE_PLAN="FREE")
    tenant = TenantFactory(plan=pro, stripe_customer_id="cus_A")
    post(stripe_event("customer.subscription.deleted", subscription("canceled")))
    tenant.refresh_from_db()
    assert (tenant.plan, tenant.subscription_status) == (free_plan, SubscriptionStatus.ACTIVE)


def test_prices_map_to_plans_through_settings(
    settings: Any, billing: FakeStripe, customer: Tenant
) -> None:
    starter = plan_with_limits("STARTER", api_calls=1000)
    settings.USAGE_LIMITS = with_billing(PRICE_PLANS={"price_starter_yearly": "STARTER"})
    post(stripe_event("customer.subscription.created", subscription(price="price_starter_yearly")))
    customer.refresh_from_db()
    assert customer.plan == starter


def test_an_unknown_price_keeps_the_plan(billing: FakeStripe, customer: Tenant) -> None:
    plan = customer.plan
    response = post(stripe_event("customer.subscription.updated", subscription(price="price_x")))
    assert response.json()["outcome"] == "applied"
    customer.refresh_from_db()
    assert customer.plan == plan
    assert "no plan for prices price_x" in StripeWebhookEvent.objects.get().detail


def test_a_new_customer_is_linked_through_subscription_metadata(
    billing: FakeStripe, free_plan: Plan, pro: Plan
) -> None:
    tenant = TenantFactory(plan=free_plan, stripe_customer_id="")
    data = subscription(customer="cus_new", metadata={"tenant_id": str(tenant.pk)})
    post(stripe_event("customer.subscription.created", data))
    tenant.refresh_from_db()
    assert (tenant.stripe_customer_id, tenant.plan) == ("cus_new", pro)


@pytest.mark.parametrize("reference", ["\u00b2", "\u0663", "9" * 40])
def test_metadata_that_names_no_tenant_links_nothing(
    billing: FakeStripe, free_plan: Plan, reference: str
) -> None:
    """Digits to ``str.isdigit()`` that ``int()`` refuses once gave 500, which Stripe retries."""
    tenant = TenantFactory(plan=free_plan, stripe_customer_id="")
    data = subscription(customer="cus_new", metadata={"tenant_id": reference})
    response = post(stripe_event("customer.subscription.created", data))
    assert (response.status_code, response.json()["outcome"]) == (200, "unknown_customer")
    tenant.refresh_from_db()
    assert tenant.stripe_customer_id == ""


def test_events_for_unknown_customers_and_types_are_acknowledged(billing: FakeStripe) -> None:
    unknown = post(stripe_event("customer.subscription.updated", subscription(customer="cus_Z")))
    other = post(stripe_event("charge.succeeded", {"customer": "cus_Z"}))
    assert [unknown.json()["outcome"], other.json()["outcome"]] == ["unknown_customer", "ignored"]


def test_without_a_signing_secret_the_endpoint_refuses(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe
) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    response = post(stripe_event("customer.subscription.updated", subscription()))
    assert response.status_code == 503


def test_only_post_is_allowed(billing: FakeStripe) -> None:
    assert Client().get(URL).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_twice_at_once_is_applied_once(
    billing: FakeStripe, free_plan: Plan
) -> None:
    TenantFactory(plan=free_plan, stripe_customer_id="cus_A")
    event = stripe_event("invoice.payment_failed", {"customer": "cus_A"}, event_id="evt_twice")
    outcomes = run_in_threads(4, lambda _: post(event).json()["outcome"])
    assert sorted(outcomes) == ["applied", "duplicate", "duplicate", "duplicate"]
    assert StripeWebhookEvent.objects.count() == 1


def test_a_failing_handler_records_nothing_so_stripe_retries(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant
) -> None:
    def broken(*args: Any) -> str:
        raise RuntimeError("database hiccup")

    event = stripe_event("invoice.payment_failed", {"customer": "cus_A"}, event_id="evt_retry")
    with monkeypatch.context() as patch:
        patch.setitem(webhooks.HANDLERS, "invoice.payment_failed", broken)
        assert post(event).status_code == 500
    assert not StripeWebhookEvent.objects.exists()
    assert post(event).json()["outcome"] == "applied"  # Stripe's retry goes through
    customer.refresh_from_db()
    assert customer.subscription_status == SubscriptionStatus.PAST_DUE


def post_raw(body: str) -> Any:
    header = sign_webhook(body, WEBHOOK_SECRET)
    return Client().post(URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([1, 2], "not an object"),
        ({"type": "customer.subscription.updated", "created": 1, "data": {}}, "no id"),
        ({"id": "evt_1", "created": "yesterday", "type": "x"}, "created time"),
        ({"id": "evt_2", "created": 10**20, "type": "x"}, "out of range"),
        ({"id": "evt_3", "created": 1, "type": "x", "data": {"object": [1]}}, "data.object"),
    ],
)
def test_a_signed_payload_that_is_no_stripe_event_is_400_and_recorded(
    billing: FakeStripe, payload: Any, problem: str
) -> None:
    """Seen before: 500, which Stripe retries for days."""
    first = post(payload)
    again = post(payload)
    assert (first.status_code, again.status_code) == (400, 400)
    assert problem in first.json()["error"]
    (record,) = StripeWebhookEvent.objects.all()  # once, however often it comes
    assert record.outcome == StripeWebhookEvent.Outcome.INVALID
    assert problem in record.detail


def test_a_payload_nested_past_any_parser_is_400(billing: FakeStripe) -> None:
    response = post_raw("[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
