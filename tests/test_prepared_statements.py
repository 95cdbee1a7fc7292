"""PostgreSQL with Django's opt-in to prepared statements (docs/scaling.md, hot counters).

Django binds parameters on the client and prepares nothing by default (so that transaction-pooling
proxies work). A counters alias configured with ``server_side_binding`` and ``prepare_threshold``
lets the server plan the counter's statements once per connection: the store must then still count
exactly, and its statements must really be the prepared ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from usage_limits import consume, get_usage, refund
from usage_limits.models import Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .concurrency import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "quota"])


@pytest.fixture
def prepared_alias(settings: pytest.FixtureRequest, vendor: str) -> Iterator[BaseDatabaseWrapper]:
    """The counters on the ``quota`` alias, its connections opted in to prepared statements."""
    if vendor != "postgresql":
        pytest.skip("PostgreSQL only: server-side binding and prepared statements of psycopg 3")
    connection = connections["quota"]
    # One settings dict serves every thread's connection to the alias.
    options = connection.settings_dict.setdefault("OPTIONS", {})
    saved = dict(options)
    connection.close()
    options.update({"server_side_binding": True, "prepare_threshold": 0})
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "DATABASE_ALIAS": "quota"}  # type: ignore[attr-defined]
    yield connection
    connection.close()
    options.clear()
    options.update(saved)


def make_tenant(limit: int) -> Tenant:
    return TenantFactory(plan=plan_with_limits("PREPARED", api_calls=limit))


def prepared_statements(connection: BaseDatabaseWrapper) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_counter_statements_are_prepared_and_count_exactly(
    prepared_alias: BaseDatabaseWrapper,
) -> None:
    tenant = make_tenant(3)
    assert [consume(tenant, "api_calls").used for _ in range(2)] == [1, 2]
    statements = prepared_statements(prepared_alias)
    guarded = [s for s in statements if s.startswith("WITH changed AS (UPDATE")]
    assert len(guarded) == 1, statements  # planned once, run twice

    assert [consume(tenant, "api_calls").allowed for _ in range(2)] == [True, False]
    assert refund(tenant, "api_calls").used == 2
    assert consume(tenant, "api_calls").used == 3
    assert get_usage(tenant).feature("api_calls").used == 3


def test_prepared_statements_admit_exactly_the_limit_under_concurrency(
    prepared_alias: BaseDatabaseWrapper,
) -> None:
    tenant = make_tenant(50)

    def admitted(_index: int) -> int:
        return sum(consume(tenant.pk, "api_calls").allowed for _ in range(10))

    assert sum(run_in_threads(8, admitted)) == 50
    assert get_usage(tenant).feature("api_calls").used == 50
