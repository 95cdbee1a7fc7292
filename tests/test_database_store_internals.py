"""The database store's shortcuts on the enforcement path behave like Django's own code.

The store keeps one cursor per database connection and converts datetimes itself, both to save
microseconds on every enforced request. These tests pin that nothing observable changes: the
values written match the ORM's, a closed connection is replaced, and query logging and
``execute_wrapper()`` hooks still see every statement.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from usage_limits import consume, get_usage
from usage_limits.backends.database import _db_datetime
from usage_limits.models import Tenant, UsageRecord
from usage_limits.testing.factories import TenantFactory, plan_with_limits

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York")),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 6, 30, 12, 0, tzinfo=ZoneInfo("Asia/Kolkata")),
    ],
)
def test_datetimes_are_sent_as_the_orm_sends_them(value: datetime) -> None:
    assert _db_datetime(connection, value) == connection.ops.adapt_datetimefield_value(value)


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


def test_query_logging_sees_every_statement_of_a_kept_cursor(tenant: Tenant) -> None:
    consume(tenant, "api_calls")  # the cursor is kept from here on
    with CaptureQueriesContext(connection) as captured:
        consume(tenant, "api_calls")
        consume(tenant, "api_calls")
    updates = [
        q
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith(("UPDATE", "WITH"))
    ]
    assert len(updates) == 2
    # And once logging stops, the kept cursor stops logging too.
    before = len(connection.queries_log)
    consume(tenant, "api_calls")
    assert len(connection.queries_log) == before


def test_execute_wrappers_see_the_enforcement_statement(tenant: Tenant) -> None:
    consume(tenant, "api_calls")
    seen: list[str] = []

    def spy(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        assert consume(tenant, "api_calls").used == 2
    assert any("usage_limits_usagerecord" in sql for sql in seen)
