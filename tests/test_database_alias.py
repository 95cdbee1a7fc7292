"""Counters written through their own connection do not join the caller's transaction."""

from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.test import override_settings

from usage_limits import consume, get_usage
from usage_limits.models import Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .concurrency import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "quota"])


@pytest.fixture
def settings_with_quota_alias(settings: pytest.FixtureRequest, vendor: str) -> None:
    if vendor == "sqlite":
        pytest.skip(
            "SQLite has one writer at a time: a second connection cannot write while the view's "
            "IMMEDIATE transaction is open (documented in docs/configuration.md)"
        )
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "DATABASE_ALIAS": "quota"}  # type: ignore[attr-defined]


def make_tenant() -> Tenant:
    return TenantFactory(plan=plan_with_limits("ALIAS", api_calls=5))


def test_a_count_through_the_quota_alias_commits_before_the_view_does(
    settings_with_quota_alias: None,
) -> None:
    tenant = make_tenant()
    with transaction.atomic():  # the view's transaction, e.g. ATOMIC_REQUESTS
        assert consume(tenant, "api_calls", 2).allowed
        # Another request (thread, own connections) already sees the units, and is not blocked
        # by a row lock held until this "view" returns.
        [seen] = run_in_threads(1, lambda _: get_usage(tenant.pk).feature("api_calls").used)
        assert seen == 2
        [other] = run_in_threads(1, lambda _: consume(tenant.pk, "api_calls").used)
        assert other == 3
    assert get_usage(tenant).feature("api_calls").used == 3


def test_a_rolled_back_view_keeps_units_counted_through_the_quota_alias(
    settings_with_quota_alias: None,
) -> None:
    tenant = make_tenant()

    def failing_view() -> None:
        with transaction.atomic():
            consume(tenant, "api_calls", 4)
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        failing_view()
    assert get_usage(tenant).feature("api_calls").used == 4


def test_through_the_default_alias_a_count_joins_the_callers_transaction() -> None:
    tenant = make_tenant()

    def failing_view() -> None:
        with transaction.atomic():
            consume(tenant, "api_calls", 4)
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        failing_view()
    assert get_usage(tenant).feature("api_calls").used == 0
    assert connections["default"].get_autocommit()


@override_settings(USAGE_LIMITS={"DATABASE_ALIAS": "quota"})
def test_store_uses_the_configured_connection() -> None:
    from usage_limits.backends import get_store

    assert get_store().alias == "quota"  # type: ignore[attr-defined]
