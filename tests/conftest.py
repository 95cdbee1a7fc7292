from __future__ import annotations

import datetime as dt
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest
import time_machine
from django.core.cache import caches
from django.db import connections

from tests.clock import ENV, move_clock
from usage_limits.models import Plan, Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits

# Django 6.x removes what Django 5.2 deprecates, and 5.2 warns on every use of it: the suite turns
# those warnings into errors, so nothing here relies on an API that 6.0 or 6.1 no longer has.
# (Only the classes this Django still defines: 6.0 itself no longer has RemovedInDjango60Warning.)
_REMOVED_IN_DJANGO_6 = ("RemovedInDjango60Warning", "RemovedInDjango61Warning")


_moved_clock: tuple[str, dt.datetime] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _moved_clock
    from django.utils import deprecation

    _moved_clock = move_clock()

    for name in _REMOVED_IN_DJANGO_6:
        if hasattr(deprecation, name):
            config.addinivalue_line("filterwarnings", f"error::django.utils.deprecation.{name}")


def pytest_report_header(config: pytest.Config) -> str:
    if _moved_clock is None:
        return "clock: real (USAGE_LIMITS_TEST_CLOCK moves it for the whole run, tests/clock.py)"
    name, when = _moved_clock
    return f"clock: moved to {when.isoformat()} ({name}); rerun with {ENV}={when.isoformat()}"


@pytest.fixture(autouse=True)
def _frozen_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    """``@pytest.mark.frozen_clock(when)``: the test and its fixtures run at ``when``, not ticking.

    Autouse, so it starts before the test's own fixtures: a tenant made by a fixture is made at
    ``when`` too, whatever the real (or the moved) clock says.
    """
    marker = request.node.get_closest_marker("frozen_clock")
    if marker is None:
        yield
        return
    with time_machine.travel(marker.args[0], tick=marker.kwargs.get("tick", False)):
        yield


REQUIRE_SERVICES = os.environ.get("USAGE_LIMITS_REQUIRE_SERVICES") == "1"


def require_module(name: str, install: str) -> ModuleType:
    """Import an optional package for a test module, or skip the module (fail under ``.ci/run``).

    Call it before the module's imports that need the package (they then carry ``noqa: E402``).
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"the {name} package is not installed ({install}): {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(f"required package unavailable: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


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
