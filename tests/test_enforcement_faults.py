"""Every edge answers the same fault the same way: a 503 with the same body, never a 500.

Seen before: with the database down while the rules were read, ``@require_feature`` answered
500 where ``HasFeature`` answered 503.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import OperationalError, connection
from django.test import Client, override_settings

from tests.enforcement_app.support import limited_tenant, member  # noqa: F401  (fixtures)
from usage_limits.rules import forget_rules


def limits(**extra: Any) -> Any:
    return override_settings(USAGE_LIMITS={**settings.USAGE_LIMITS, **extra})


pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

EDGES = [
    "/fn/quota/",
    "/fn/async-quota/",
    "/fn/feature/",
    "/fn/async-feature/",
    "/cbv/quota/",
    "/cbv/feature/",
    "/drf/quota/",
    "/drf/feature/",
    "/drf/throttled/",
]


@contextmanager
def database_down_for(table: str) -> Iterator[None]:
    """Fail every statement on ``table`` as a dropped database connection fails."""

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        if table in sql:
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(wrapper):
        yield


@pytest.mark.parametrize("path", EDGES)
def test_the_database_down_while_reading_the_rules_is_a_503_on_every_edge(
    client: Client,
    member: AbstractBaseUser,
    limited_tenant: Any,
    path: str,
) -> None:
    client.force_login(member)
    client.get("/plain/")  # the session and user are loaded before the fault
    forget_rules(limited_tenant.pk)  # the rules must be read from the database
    with database_down_for("usage_limits_planlimit"):
        response = client.get(path, HTTP_ACCEPT="application/json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "store_unavailable"


@pytest.mark.parametrize("path", EDGES)
def test_the_store_down_is_a_503_on_every_edge_that_counts(
    client: Client,
    member: AbstractBaseUser,
    limited_tenant: Any,
    path: str,
) -> None:
    client.force_login(member)
    with limits(STORE="tests.enforcement_app.support.UnavailableStore"):
        response = client.get(path, HTTP_ACCEPT="application/json")
    if "feature" in path:
        # A feature gate counts nothing: no store call, the plan's answer (not included here).
        assert response.status_code == 403
    else:
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "store_unavailable"
