"""The enforcement path's database cost, counted.

With daily history on (the default), PostgreSQL writes today's bucket inside the counter's own
statement; SQLite and MariaDB need a second statement in the same transaction when the counter
changed. ``HISTORY_WRITES`` is that second statement's count on this run's database.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_django import DjangoAssertNumQueries

from usage_limits import consume, get_usage, increment_usage
from usage_limits.models import PlanLimit, Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits

pytestmark = pytest.mark.django_db


def history_writes(vendor: str) -> int:
    """Statements a counted change adds for the daily bucket on ``vendor`` (history on)."""
    return 0 if vendor == "postgresql" else 1


def test_steady_state_consume_costs_one_query(
    tenant: Tenant, vendor: str, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    consume(tenant, "api_calls")  # warms the rules cache and creates the period's row
    with django_assert_num_queries(1 + history_writes(vendor)):
        decision = consume(tenant, "api_calls")
    assert decision.used == 2
    with django_assert_num_queries(1 + history_writes(vendor)):
        increment_usage(tenant, "api_calls")


def test_steady_state_consume_costs_one_query_without_history(
    tenant: Tenant, settings: Any, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": False}
    consume(tenant, "api_calls")
    with django_assert_num_queries(1):
        assert consume(tenant, "api_calls").used == 2


def test_a_denial_costs_the_guarded_update_and_one_read(
    tenant: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    consume(tenant, "api_calls", 100)
    consume(tenant, "api_calls")  # first denial of the period records the alert once
    # The allowed path is the one kept to a single statement; a denial reads the value it
    # reports in a second one.
    with django_assert_num_queries(2):
        assert not consume(tenant, "api_calls").allowed


def test_a_changed_limit_is_read_again_once(
    tenant: Tenant, vendor: str, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    consume(tenant, "api_calls")
    limit = PlanLimit.objects.get(plan=tenant.plan, feature="api_calls")
    limit.limit = 5
    limit.save()
    # The tenant with its plan, its overrides, the plan's limits, the counter (and the day's
    # bucket). (A process that did not hear of the change finds out from the counter's own
    # statement: tests/test_rules_memory.py.)
    with django_assert_num_queries(3 + 1 + history_writes(vendor)):
        decision = consume(tenant, "api_calls")
    assert decision.limit == 5
    with django_assert_num_queries(1 + history_writes(vendor)):
        consume(tenant, "api_calls")


@pytest.mark.parametrize("feature_count", [3, 20])
def test_get_usage_costs_two_queries_whatever_the_number_of_features(
    db: None, feature_count: int, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    limits = {f"feature_{i}": 10 for i in range(feature_count)}
    plan = plan_with_limits("MANY", **limits)
    tenant = TenantFactory(plan=plan)
    for i in range(feature_count):
        consume(tenant, f"feature_{i}", i % 10 + 1)
    # The tenant's rules version (what it remembers must still be current), then the counters.
    with django_assert_num_queries(2):
        usage = get_usage(tenant)
    assert {f.feature: f.used for f in usage.features} == {
        f"feature_{i}": i % 10 + 1 for i in range(feature_count)
    }
