from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.core.cache import caches
from django.db import connections

from usage_limits.models import Plan, Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits

# Django 6.x removes what Django 5.2 deprecates, and 5.2 warns on every use of it: the suite turns
# those warnings into errors, so nothing here relies on an API that 6.0 or 6.1 no longer has.
# (Only the classes this Django still defines: 6.0 itself no longer has RemovedInDjango60Warning.)
_REMOVED_IN_DJANGO_6 = ("RemovedInDjango60Warning", "RemovedInDjango61Warning")


def pytest_configure(config: pytest.Config) -> None:
    from django.utils import deprecation

    for name in _REMOVED_IN_DJANGO_6:
        if hasattr(deprecation, name):
            config.addinivalue_line("filterwarnings", f"error::django.utils.deprecation.{name}")


REQUIRE_SERVICES = os.environ.get("USAGE_LIMITS_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> None:
    """Skip for a missing service, or fail when the run promised it (``.ci/run``)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Rules and alert flags are cached; primary keys repeat across rolled-back tests.
    for alias in ("default",):
        caches[alias].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def free_plan(db: None) -> Plan:
    return plan_with_limits("FREE", api_calls=100, projects=3, seats=1, advanced_analytics=False)


@pytest.fixture
def pro_plan(db: None) -> Plan:
    return plan_with_limits("PRO", api_calls=None, projects=None, seats=20, advanced_analytics=True)


@pytest.fixture
def tenant(free_plan: Plan) -> Tenant:
    return TenantFactory(plan=free_plan)


@pytest.fixture
def vendor() -> str:
    return connections["default"].vendor
