"""``conf`` reads ``settings.USAGE_LIMITS`` at call time: a changed setting is seen at once.

The values read on every enforced request are computed once per value of the setting; these tests
pin that a change through ``override_settings`` or pytest-django's ``settings`` fixture (both send
``setting_changed``) replaces them, and that leaving the override restores the old ones.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from usage_limits import consume
from usage_limits.conf import conf
from usage_limits.models import Tenant, UsageDailyBucket


def test_a_changed_setting_is_seen_at_once(settings: Any) -> None:
    assert conf.DATABASE_ALIAS == "default"
    assert conf.HISTORY is True
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": False, "CACHE_TIMEOUT": 7}
    assert conf.HISTORY is False
    assert conf.CACHE_TIMEOUT == 7


def test_leaving_an_override_restores_the_values_before_it() -> None:
    before = conf.NOT_BILLABLE_STATUSES
    with override_settings(
        USAGE_LIMITS={**django_settings.USAGE_LIMITS, "NOT_BILLABLE_STATUSES": [418]}
    ):
        assert conf.NOT_BILLABLE_STATUSES == (418,)
    after = conf.NOT_BILLABLE_STATUSES
    assert after == before


def test_stripe_meters_follow_the_billing_setting(settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "BILLING": {}}
    assert conf.stripe_meter("api_calls") is None
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "BILLING": {"METERS": {"api_calls": "api_requests", "storage_mb": ""}},
    }
    assert conf.stripe_meter("api_calls") == "api_requests"
    assert conf.stripe_meter("storage_mb") is None  # an empty meter name is no meter


@pytest.mark.django_db
def test_the_engine_follows_a_changed_setting(tenant: Tenant, settings: Any) -> None:
    consume(tenant, "api_calls")
    assert UsageDailyBucket.objects.filter(tenant=tenant).count() == 1
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": False}
    UsageDailyBucket.objects.all().delete()
    consume(tenant, "api_calls")
    assert not UsageDailyBucket.objects.exists()  # history switched off took effect
