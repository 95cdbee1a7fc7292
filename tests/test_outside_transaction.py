"""A count that a failed ledger write leaves behind is taken back, on every store.

Under an idempotency key, for a billed feature and in event batches, the engine writes the ledger
row in the same database transaction as the count. The database store's count rolls back with it;
the Redis store's does not, so the engine takes it back itself. Otherwise a caller retrying with
the same key after the failure would be counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError, connection, connections

from usage_limits import check_limit, consume, increment_usage, record_events, refund
from usage_limits.events import UsageEventInput
from usage_limits.exceptions import StoreUnavailable
from usage_limits.models import Tenant, UsageEvent

from .stores import redis_prefix, store_name  # noqa: F401  (fixtures)

# Every test runs on the database store and on the Redis store.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("store_name")]

LEDGER = UsageEvent._meta.db_table


@contextmanager
def failing(verb: str, error: type[Exception], times: int = 1) -> Iterator[list[str]]:
    """Make the next ``times`` ledger statements starting with ``verb`` fail with ``error``."""
    failed: list[str] = []

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if len(failed) < times and sql.lstrip().upper().startswith(verb) and LEDGER in sql:
            failed.append(sql)
            raise error("the ledger write failed (injected)")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield failed


def used(tenant: Tenant) -> int:
    return check_limit(tenant, "api_calls").used


def test_a_keyed_count_whose_ledger_write_fails_is_taken_back(tenant: Tenant) -> None:
    with failing("UPDATE", OperationalError) as failed, pytest.raises(OperationalError):
        consume(tenant, "api_calls", 3, idempotency_key="order-1")
    assert failed
    assert used(tenant) == 0
    assert not UsageEvent.objects.filter(idempotency_key="order-1").exists()
    # The caller retries with the same key: counted once.
    assert consume(tenant, "api_calls", 3, idempotency_key="order-1").used == 3
    assert consume(tenant, "api_calls", 3, idempotency_key="order-1").replayed
    assert used(tenant) == 3


def test_a_refund_by_key_whose_transaction_fails_is_taken_back(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    consume(tenant, "api_calls", 3, idempotency_key="order-1")
    # The refund's transaction fails as it ends (inside the test's own transaction it ends with
    # a savepoint's release): its event row stays accepted, so the units must stay counted.
    wrapper = connections["default"]
    for name in ("commit", "savepoint_commit"):

        def fail(*args: Any) -> None:
            monkeypatch.undo()  # once
            raise OperationalError("the commit failed (injected)")

        monkeypatch.setattr(wrapper, name, fail)
    # (The database store's own savepoint is the first to end there: it reports the failure as
    # the store's.)
    with pytest.raises((OperationalError, StoreUnavailable)):
        refund(tenant, "api_calls", idempotency_key="order-1")
    monkeypatch.undo()
    assert used(tenant) == 3
    assert UsageEvent.objects.get(idempotency_key="order-1").accepted
    # The caller retries: given back once.
    assert refund(tenant, "api_calls", idempotency_key="order-1").used == 0
    assert refund(tenant, "api_calls", idempotency_key="order-1").replayed
    assert used(tenant) == 0


def test_a_billed_count_without_its_ledger_row_is_taken_back(tenant: Tenant, settings: Any) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "BILLING": {**settings.USAGE_LIMITS.get("BILLING", {}), "METERS": {"api_calls": "api"}},
    }
    increment_usage(tenant, "api_calls", 2)
    with failing("INSERT", OperationalError), pytest.raises(OperationalError):
        increment_usage(tenant, "api_calls", 5)
    assert used(tenant) == 2  # nothing counted that the ledger (and so Stripe) does not know
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


def test_a_batch_that_runs_again_after_a_key_race_counts_once(tenant: Tenant) -> None:
    events = [
        UsageEventInput(feature="api_calls", quantity=2, idempotency_key="a"),
        UsageEventInput(feature="api_calls", quantity=3, idempotency_key="b"),
    ]
    # The first attempt's ledger insert loses a race on a key, as when a concurrent batch commits
    # it first; the batch runs again.
    with failing("INSERT", IntegrityError) as failed:
        decisions = record_events(tenant, events)
    assert len(failed) == 1
    assert [d.allowed for d in decisions] == [True, True]
    assert used(tenant) == 5
    assert UsageEvent.objects.filter(tenant=tenant).count() == 2
