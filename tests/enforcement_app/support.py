"""Fixtures and helpers shared by the enforcement tests."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AbstractBaseUser

from usage_limits.backends.database import DatabaseStore
from usage_limits.exceptions import StoreUnavailable
from usage_limits.models import Tenant
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

T = TypeVar("T")

JSON = {"HTTP_ACCEPT": "application/json"}
BROWSER = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def run_async(test: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an ``async def`` test from the test's own thread, as Django's TestCase does.

    Thread-sensitive ``sync_to_async`` calls (our engine hop, sync views) then come back to this
    thread and its database connection, so they see the test's (uncommitted) data.
    """

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return async_to_sync(test)(*args, **kwargs)

    return wrapper


@pytest.fixture
def limited_tenant(db: None) -> Tenant:
    """The seeds' FREE plan, temporarily limited to 3 api calls."""
    plan = plan_with_limits("FREE", api_calls=3, projects=1, advanced_analytics=False)
    return TenantFactory(plan=plan, slug="acme")  # type: ignore[no-any-return]


@pytest.fixture
def member(limited_tenant: Tenant) -> AbstractBaseUser:
    user = UserFactory(username="ada")
    MembershipFactory(user=user, tenant=limited_tenant, is_default=True)
    return user  # type: ignore[no-any-return]


class UnavailableStore(DatabaseStore):
    """A store whose backend is down (what the Redis store raises in fail-closed mode)."""

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("counter store unreachable")

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("counter store unreachable")
