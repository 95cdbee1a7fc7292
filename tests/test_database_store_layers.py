"""The database store runs its statements through Django's public layers, as the ORM does.

Every counter statement goes through a cursor of the connection (Django's ``CursorWrapper``), so
what instruments Django sees it: query logging (``DEBUG``, the debug toolbar, ``assertNumQueries``),
``execute_wrapper()`` hooks, and tools that patch ``CursorWrapper`` (Sentry, OpenTelemetry). The
values written match the ORM's, a closed or dead connection is replaced, the driver's errors
arrive as Django's, and no statement runs in a transaction marked for rollback.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from usage_limits import consume, get_usage
from usage_limits.exceptions import StoreUnavailable
from usage_limits.models import Tenant, UsageRecord
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .reliability.faults import KILLABLE_VENDORS, ConnectionKiller, session_id

pytestmark = pytest.mark.django_db


def test_the_period_row_matches_what_the_orm_reads(tenant: Tenant) -> None:
    decision = consume(tenant, "api_calls", 3)
    row = UsageRecord.objects.get(tenant=tenant, feature="api_calls")
    assert row.period_start == decision.period.start
    assert row.used == 3
    assert abs(row.updated_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.django_db(transaction=True)
def test_a_closed_connection_is_replaced_outside_a_transaction() -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=100))
    consume(tenant, "api_calls")
    connection.close()  # the kept cursor's driver connection is gone
    assert consume(tenant, "api_calls").used == 2
    assert get_usage(tenant).feature("api_calls").used == 2


def test_query_logging_sees_every_statement(tenant: Tenant) -> None:
    consume(tenant, "api_calls")
    with CaptureQueriesContext(connection) as captured:
        consume(tenant, "api_calls")
        consume(tenant, "api_calls")
    updates = [
        q
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith(("UPDATE", "WITH"))
    ]
    assert len(updates) == 2


def test_execute_wrappers_see_the_enforcement_statement(tenant: Tenant) -> None:
    consume(tenant, "api_calls")
    seen: list[str] = []

    def spy(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        assert consume(tenant, "api_calls").used == 2
    assert any("usage_limits_usagerecord" in sql for sql in seen)


@pytest.mark.django_db(transaction=True)
def test_a_failing_statement_raises_djangos_error_not_the_drivers() -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=100))
    consume(tenant, "api_calls")
    connection.connection.close()  # closed underneath Django: the next statement fails
    try:
        with pytest.raises((StoreUnavailable, DatabaseError)) as failure:
            consume(tenant, "api_calls")
        error = failure.value
        # StoreUnavailable (a lost connection) or Django's own class, never the driver's.
        assert type(error).__module__.startswith(("usage_limits.", "django.")), type(error)
        if not isinstance(error, StoreUnavailable):
            assert connection.errors_occurred  # Django closes it at the end of the request
    finally:
        connection.close()
    assert consume(tenant, "api_calls").used == 2  # nothing was counted by the failed call


def test_no_statement_runs_in_a_transaction_marked_for_rollback(tenant: Tenant) -> None:
    consume(tenant, "api_calls")
    with transaction.atomic():
        transaction.set_rollback(True)
        with pytest.raises(TransactionManagementError):
            consume(tenant, "api_calls")
    assert get_usage(tenant).feature("api_calls").used == 1


@pytest.mark.django_db(transaction=True)
def test_the_connection_health_check_still_replaces_a_dead_connection() -> None:
    if connection.vendor not in KILLABLE_VENDORS:
        pytest.skip(f"{connection.vendor} has no server connection to lose")
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=100))
    consume(tenant, "api_calls")
    killer = ConnectionKiller()
    enabled = connection.health_check_enabled
    try:
        killer.kill(session_id(connection))  # the server dropped the idle persistent connection
        connection.health_check_enabled = True  # CONN_HEALTH_CHECKS = True
        connection.health_check_done = False  # a new request has started
        assert consume(tenant, "api_calls").used == 2  # no error: a new connection was opened
    finally:
        connection.health_check_enabled = enabled
        killer.close()


def test_monitoring_that_patches_the_cursor_wrapper_sees_the_counter_statement(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a tool that patches ``CursorWrapper.execute`` (as Sentry's does) sees."""
    seen: list[str] = []
    execute = CursorWrapper.execute

    def traced(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        seen.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", traced)
    consume(tenant, "api_calls")
    seen.clear()
    assert consume(tenant, "api_calls").used == 2
    assert any("usage_limits_usagerecord" in sql for sql in seen)
