"""The example of docs/billing.md, "Testing your integration", as written there."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from usage_limits import increment_usage
from usage_limits.billing.reporter import report_pending
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Tenant

pytestmark = pytest.mark.django_db


def test_usage_reaches_stripe(monkeypatch: Any, tenant: Tenant) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")
    tenant.stripe_customer_id = "cus_docs"
    tenant.save()
    with (
        FakeStripe() as stripe_server,
        override_settings(
            USAGE_LIMITS={
                **settings.USAGE_LIMITS,
                "BILLING": {"METERS": {"api_calls": "api_calls"}, "API_BASE": stripe_server.url},
            }
        ),
    ):
        increment_usage(tenant, "api_calls", 3)
        report_pending()
    assert [r.value for r in stripe_server.stored.values()] == ["3"]
