"""Reporters running at once, each in its own thread and database connection."""

from __future__ import annotations

from typing import Any

import pytest

from tests.billing.conftest import with_billing
from tests.concurrency import run_in_threads
from usage_limits import increment_usage
from usage_limits.billing.reporter import ReportSummary, report_pending
from usage_limits.billing.testing import FakeStripe
from usage_limits.models import Plan, UsageEvent
from usage_limits.testing.factories import TenantFactory


@pytest.mark.django_db(transaction=True)
def test_two_reporters_at_once_never_send_the_same_event(
    settings: Any, billing: FakeStripe, free_plan: Plan, vendor: str
) -> None:
    # Small batches and a little latency so that the two runs really interleave.
    settings.USAGE_LIMITS = with_billing(
        METERS={"api_calls": "api_requests"}, API_BASE=billing.url, BATCH_SIZE=5
    )
    billing.latency = 0.005
    tenants = [TenantFactory(plan=free_plan, stripe_customer_id=f"cus_{i}") for i in range(4)]
    for i in range(160):
        increment_usage(tenants[i % 4], "api_calls")

    summaries: list[ReportSummary] = run_in_threads(2, lambda _: report_pending())

    sent = billing.sent_identifiers()
    assert len(sent) == 160
    assert max(sent.values()) == 1  # no identifier went out twice, from either reporter
    assert sum(s.sent for s in summaries) == 160
    assert all(s.claimed > 0 for s in summaries), summaries  # both took part
    assert not UsageEvent.objects.exclude(report_state=UsageEvent.ReportState.SENT).exists()
