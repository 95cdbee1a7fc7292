from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from usage_limits.billing import reporter
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Plan, Tenant
from usage_limits.testing.factories import TenantFactory

API_KEY = "sk_test_usage_limits"
WEBHOOK_SECRET = "whsec_test_usage_limits"


class Killed(BaseException):
    """A reporter process dying (not an error it could catch)."""


def report_then_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the reporter until it has sent its first batch, then kill it before it marks it."""

    def killed(*args: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(reporter._Reporter, "mark", killed)
        with pytest.raises(Killed):
            reporter.report_pending()


def with_billing(**billing: Any) -> dict[str, Any]:
    """The test settings' USAGE_LIMITS with a BILLING section."""
    return {**django_settings.USAGE_LIMITS, "BILLING": billing}


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe(seed=7, api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def billing(settings: Any, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe) -> FakeStripe:
    """api_calls billed through a Stripe meter, the SDK pointed at the local fake."""
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    settings.USAGE_LIMITS = with_billing(
        METERS={"api_calls": "api_requests"},
        API_BASE=fake_stripe.url,
        RETRY_BASE_SECONDS=0,
        REQUEST_TIMEOUT=5,
    )
    return fake_stripe


@pytest.fixture
def customer(free_plan: Plan) -> Tenant:
    return TenantFactory(plan=free_plan, stripe_customer_id="cus_A")
