from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from usage_limits import increment_usage
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Tenant, UsageEvent

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("usage_limits_report_stripe", *args, stdout=out)
    return out.getvalue()


def test_the_command_reports_progress_and_a_summary(billing: FakeStripe, customer: Tenant) -> None:
    for _ in range(3):
        increment_usage(customer, "api_calls")
    billing.answer_next(200, 500)
    output = run()
    assert "batch 1: 3 events in 3 meter events: 2 sent, 1 to retry, 0 failed" in output
    assert output.strip().endswith(
        "3 events in 3 meter events: 2 sent, 1 to retry later, 0 failed."
    )
    assert UsageEvent.objects.filter(report_state=UsageEvent.ReportState.SENT).count() == 2


def test_the_command_honours_a_limit(billing: FakeStripe, customer: Tenant) -> None:
    for _ in range(3):
        increment_usage(customer, "api_calls")
    assert "2 events in 2 meter events: 2 sent" in run("--limit", "2")
    with pytest.raises(CommandError, match="--limit"):
        run("--limit", "0")


def test_the_command_says_when_reporting_is_off(
    monkeypatch: pytest.MonkeyPatch, customer: Tenant
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert "Stripe reporting is off" in run()


def test_the_command_fails_loudly_on_a_refused_key(
    monkeypatch: pytest.MonkeyPatch, billing: FakeStripe, customer: Tenant
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_wrong")
    increment_usage(customer, "api_calls")
    with pytest.raises(CommandError, match="Stripe refused the API key"):
        run()
