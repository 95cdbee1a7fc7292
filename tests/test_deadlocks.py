"""A statement or transaction the database picks as a deadlock's victim runs again.

Seen on MariaDB: a refund and a count of one counter locked in opposite orders; the victim
answered 503 (a legitimate request refused) or lost its refund. Here the victim is made by
hand (an ``execute_wrapper`` that fails the first matching statement as MariaDB does), on every
database, and by real threads refunding and counting one counter at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection

from tests.concurrency import run_in_threads
from usage_limits import consume, get_usage, refund
from usage_limits.testing.factories import TenantFactory, plan_with_limits

pytestmark = pytest.mark.django_db(transaction=True)

DEADLOCK = (1213, "Deadlock found when trying to get lock; try restarting transaction")


@contextmanager
def first_statement_deadlocks(matching: str) -> Iterator[list[str]]:
    """Fail the first statement containing ``matching`` as MariaDB fails a deadlock's victim."""
    failed: list[str] = []

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        if matching in sql and not failed:
            failed.append(sql)
            raise OperationalError(*DEADLOCK)
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(wrapper):
        yield failed


def test_a_count_picked_as_a_victim_counts_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=10))
    consume(tenant, "api_calls")
    with first_statement_deadlocks("UPDATE") as failed:
        assert consume(tenant, "api_calls").used == 2
    assert failed
    assert get_usage(tenant).feature("api_calls").used == 2


def test_a_keyed_count_picked_as_a_victim_counts_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=10))
    with first_statement_deadlocks("usage_limits_usagerecord") as failed:
        decision = consume(tenant, "api_calls", 2, idempotency_key="job-1")
    assert failed
    assert (decision.used, decision.replayed) == (2, False)
    assert get_usage(tenant).feature("api_calls").used == 2


def test_a_refund_picked_as_a_victim_still_gives_back_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=10))
    consume(tenant, "api_calls", 3, idempotency_key="job-1")
    with first_statement_deadlocks("usage_limits_usagerecord") as failed:
        refund(tenant, "api_calls", idempotency_key="job-1")
    assert failed
    assert get_usage(tenant).feature("api_calls").used == 0
    refund(tenant, "api_calls", idempotency_key="job-1")  # once, however often
    assert get_usage(tenant).feature("api_calls").used == 0


def test_refunds_and_counts_of_one_counter_at_once_lose_nothing() -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=10_000))
    for i in range(40):
        consume(tenant, "api_calls", 1, idempotency_key=f"old-{i}")

    def work(index: int) -> int:
        counted = 0
        for i in range(10):
            if index % 2:
                refund(tenant.pk, "api_calls", idempotency_key=f"old-{index // 2 * 10 + i}")
            else:
                counted += consume(tenant.pk, "api_calls").allowed
        return counted

    counted = sum(run_in_threads(8, work))
    # 40 counted and given back by key, 40 counted by the others: no refund lost, no 503.
    assert counted == 40
    assert get_usage(tenant).feature("api_calls").used == 40
