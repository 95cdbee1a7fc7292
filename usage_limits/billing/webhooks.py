"""Stripe webhooks: subscriptions set a tenant's plan, status and billing anchor.

The endpoint checks the ``Stripe-Signature`` header with ``stripe.Webhook.construct_event`` on the
raw body (a bad or stale signature gets 400), then handles each Stripe event id once: the event
is recorded as a :class:`~usage_limits.models.StripeWebhookEvent` (unique event id) in the same
transaction as the change it causes, so a retried delivery, or two deliveries at once, change
nothing twice. A handler that fails rolls back both and answers 500, and Stripe retries.

Stripe does not deliver events in order, so an event older (by Stripe's ``created``) than a
status change already applied for the same customer is recorded as stale and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from usage_limits.billing.conf import billing_conf
from usage_limits.models import Plan, StripeWebhookEvent, SubscriptionStatus, Tenant
from usage_limits.numbers import primary_key

logger = logging.getLogger("usage_limits.billing")

Outcome = StripeWebhookEvent.Outcome

# Stripe subscription status -> ours. Unpaid and incomplete subscriptions keep working through
# the past-due grace period (USAGE_LIMITS["PAST_DUE_GRACE_DAYS"]) and are blocked after it.
SUBSCRIPTION_STATUSES: dict[str, str] = {
    "active": SubscriptionStatus.ACTIVE,
    "trialing": SubscriptionStatus.TRIALING,
    "past_due": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.PAST_DUE,
    "incomplete": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED,
    "incomplete_expired": SubscriptionStatus.CANCELED,
    "paused": SubscriptionStatus.CANCELED,
}

# Event types that change a tenant's plan or status, and so are ordered against each other.
STATUS_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_failed",
)


@dataclass(frozen=True)
class Handled:
    outcome: str
    tenant: Tenant | None = None
    detail: str = ""


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """The endpoint to register in Stripe's dashboard (``billing/stripe/webhook/``)."""
    import stripe

    secret = billing_conf.webhook_secret
    if not secret:
        logger.error(
            "usage_limits: Stripe webhook received but %s is not set",
            billing_conf.WEBHOOK_SECRET_ENV,
        )
        return JsonResponse({"error": "Webhook signing secret not configured."}, status=503)
    signature = request.headers.get("Stripe-Signature", "")
    payload = request.body.decode("utf-8", errors="replace")
    try:
        # The signature alone: the SDK's event builder assumes an object and fails on others.
        stripe.WebhookSignature.verify_header(
            payload, signature, secret, tolerance=billing_conf.WEBHOOK_TOLERANCE
        )
    except stripe.SignatureVerificationError:
        return JsonResponse({"error": "Invalid or expired signature."}, status=400)
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return JsonResponse({"error": "Invalid payload."}, status=400)
    problem = malformed(event)
    if problem:
        _record_invalid(request.body, problem)
        return JsonResponse({"error": f"Not a Stripe event: {problem}."}, status=400)
    try:
        outcome = process_event(event)
    except Exception:
        logger.exception("usage_limits: Stripe event %s could not be handled", event.get("id"))
        return JsonResponse({"error": "The event could not be handled."}, status=500)
    return JsonResponse({"received": True, "outcome": outcome})


def malformed(event: object) -> str:
    """What keeps a signed payload from being a Stripe event ("" when nothing does).

    Checked before anything is written: a payload that fails here would fail the same way on each
    of Stripe's retries, so it is refused (400) and recorded rather than answered 500 for days.
    """
    if not isinstance(event, Mapping):
        return "the payload is not an object"
    if not isinstance(event.get("id"), str) or not event["id"]:
        return "it has no id"
    created = event.get("created", 0)
    if isinstance(created, bool) or not isinstance(created, int):
        return "its created time is not a whole number of seconds"
    if not 0 <= created <= _LATEST_CREATED:
        return "its created time is out of range"
    if not isinstance(event.get("type", ""), str):
        return "its type is not a string"
    data = event.get("data", {})
    if not isinstance(data, Mapping) or not isinstance(data.get("object", {}) or {}, Mapping):
        return "its data.object is not an object"
    return ""


# 9999-12-31: later times do not fit a datetime.
_LATEST_CREATED = 253_402_300_799


def _record_invalid(body: bytes, problem: str) -> None:
    """Keep a refused payload's trace (once per payload), for the admin's webhook list."""
    digest = hashlib.sha256(body).hexdigest()
    logger.error("usage_limits: a signed Stripe webhook payload was refused: %s", problem)
    StripeWebhookEvent.objects.get_or_create(
        event_id=f"invalid:{digest}",
        defaults={
            "type": "",
            "created": timezone.now(),
            "outcome": Outcome.INVALID,
            "detail": f"Refused with 400: {problem}. {body[:500].decode(errors='replace')}",
        },
    )


def process_event(event: Mapping[str, Any]) -> str:
    """Handle a verified Stripe event once; returns its outcome (``"duplicate"`` on a replay)."""
    event_type = str(event.get("type", ""))
    data_object: Mapping[str, Any] = event.get("data", {}).get("object", {}) or {}
    created = datetime.fromtimestamp(int(event.get("created", 0)), tz=UTC)
    customer_id = _customer_id(data_object)
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeWebhookEvent.objects.create(
                    event_id=str(event["id"]),
                    type=event_type[:100],
                    customer_id=customer_id,
                    created=created,
                    livemode=bool(event.get("livemode", False)),
                    outcome=Outcome.IGNORED,
                )
        except IntegrityError:
            return "duplicate"
        handler = HANDLERS.get(event_type)
        if handler is None:
            return str(record.outcome)
        handled = _apply(handler, record, data_object)
        record.outcome = handled.outcome
        record.tenant = handled.tenant
        record.detail = handled.detail
        record.save(update_fields=["outcome", "tenant", "detail"])
    return handled.outcome


Handler = Callable[[Tenant, Mapping[str, Any], datetime], str]


def _apply(handler: Handler, record: StripeWebhookEvent, data_object: Mapping[str, Any]) -> Handled:
    tenant = _tenant_for(record.customer_id, data_object)
    if tenant is None:
        return Handled(Outcome.UNKNOWN_CUSTOMER, detail=f"No tenant for {record.customer_id!r}.")
    newer = (
        StripeWebhookEvent.objects.filter(
            customer_id=record.customer_id,
            type__in=STATUS_EVENTS,
            outcome=Outcome.APPLIED,
            created__gt=record.created,
        )
        .exclude(pk=record.pk)
        .exists()
    )
    if newer:
        return Handled(Outcome.STALE, tenant, "A newer change was applied already.")
    detail = handler(tenant, data_object, record.created)
    return Handled(Outcome.APPLIED, tenant, detail)


def _customer_id(data_object: Mapping[str, Any]) -> str:
    customer = data_object.get("customer")
    if isinstance(customer, Mapping):  # an expanded customer object
        customer = customer.get("id")
    return str(customer or "")


def _tenant_for(customer_id: str, data_object: Mapping[str, Any]) -> Tenant | None:
    """The customer's tenant, locked for the change; linked through metadata the first time."""
    tenants = Tenant.objects.select_for_update()
    if customer_id:
        tenant = tenants.filter(stripe_customer_id=customer_id).first()
        if tenant is not None:
            return tenant
    key = billing_conf.TENANT_METADATA_KEY
    metadata = data_object.get("metadata") or {}
    tenant_ref = metadata.get(key) if key and isinstance(metadata, Mapping) else None
    tenant_pk = primary_key(tenant_ref)
    if tenant_pk is None or not customer_id:
        return None
    tenant = tenants.filter(pk=tenant_pk, stripe_customer_id="").first()
    if tenant is not None:
        tenant.stripe_customer_id = customer_id
        tenant.save(update_fields=["stripe_customer_id", "updated_at"])
    return tenant


def plan_for_prices(price_ids: list[str]) -> Plan | None:
    """The plan of the first price that names one: settings first, then ``Plan.stripe_price_id``."""
    by_setting = billing_conf.PRICE_PLANS
    codes = [by_setting[p] for p in price_ids if p in by_setting]
    if codes:
        return Plan.objects.filter(code=codes[0]).first()
    plans = {p.stripe_price_id: p for p in Plan.objects.filter(stripe_price_id__in=price_ids)}
    return next((plans[p] for p in price_ids if p in plans), None)


def _price_ids(subscription: Mapping[str, Any]) -> list[str]:
    prices = []
    for item in (subscription.get("items") or {}).get("data") or []:
        price = item.get("price") or item.get("plan") or {}
        price_id = price.get("id") if isinstance(price, Mapping) else price
        if price_id:
            prices.append(str(price_id))
    return prices


def _set_status(tenant: Tenant, status: str, since: datetime) -> None:
    if status == SubscriptionStatus.PAST_DUE:
        # The grace period counts from the first failure, not from every later reminder.
        if tenant.subscription_status != SubscriptionStatus.PAST_DUE or not tenant.past_due_since:
            tenant.past_due_since = since
    else:
        tenant.past_due_since = None
    tenant.subscription_status = status


def _subscription_changed(
    tenant: Tenant, subscription: Mapping[str, Any], created: datetime
) -> str:
    changes = []
    prices = _price_ids(subscription)
    plan = plan_for_prices(prices)
    if plan is not None and plan.pk != tenant.plan_id:
        tenant.plan = plan
        changes.append(f"plan {plan.code}")
    elif plan is None and prices:
        changes.append(f"no plan for prices {', '.join(prices)}: plan kept")
    status = SUBSCRIPTION_STATUSES.get(str(subscription.get("status", "")))
    if status is not None:
        _set_status(tenant, status, created)
        changes.append(f"status {status}")
    anchor = subscription.get("billing_cycle_anchor")
    if anchor:
        tenant.billing_anchor = datetime.fromtimestamp(int(anchor), tz=UTC)
        changes.append(f"billing anchor {tenant.billing_anchor:%Y-%m-%d %H:%M}")
    tenant.save()
    return "; ".join(changes)


def _subscription_deleted(
    tenant: Tenant, subscription: Mapping[str, Any], created: datetime
) -> str:
    fallback = billing_conf.DOWNGRADE_PLAN
    plan = Plan.objects.filter(code=fallback).first() if fallback else None
    if plan is not None:
        tenant.plan = plan
        _set_status(tenant, SubscriptionStatus.ACTIVE, created)
        tenant.save()
        return f"subscription ended: moved to {plan.code}"
    _set_status(tenant, SubscriptionStatus.CANCELED, created)
    tenant.save()
    return "subscription ended: canceled"


def _payment_failed(tenant: Tenant, invoice: Mapping[str, Any], created: datetime) -> str:
    if tenant.subscription_status == SubscriptionStatus.CANCELED:
        return "payment failed on a canceled subscription: unchanged"
    _set_status(tenant, SubscriptionStatus.PAST_DUE, created)
    tenant.save()
    return f"past due since {tenant.past_due_since:%Y-%m-%d %H:%M}"


HANDLERS: dict[str, Handler] = {
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_deleted,
    "invoice.payment_failed": _payment_failed,
}
