"""Billing URLs; include them once, e.g. ``path("billing/", include("usage_limits.billing.urls"))``.

The Stripe webhook is then at ``billing/stripe/webhook/``.
"""

from __future__ import annotations

from django.urls import path

from usage_limits.billing.webhooks import stripe_webhook

app_name = "usage_limits_billing"

urlpatterns = [
    path("stripe/webhook/", stripe_webhook, name="stripe-webhook"),
]
