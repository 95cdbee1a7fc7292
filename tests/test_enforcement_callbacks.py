"""ON_USAGE_WARNING / ON_LIMIT_EXCEEDED callbacks, called from the engine's signals."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from tests.enforcement_app.support import limited_tenant, member  # noqa: F401  (fixtures)
from usage_limits.models import Tenant

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

CALLS: list[tuple[str, dict[str, Any]]] = []


def on_warning(tenant: Tenant, feature: str, current: int, limit: int, percentage: float) -> None:
    CALLS.append(
        ("warning", {"tenant": tenant, "feature": feature, "current": current,
                     "limit": limit, "percentage": percentage})
    )  # fmt: skip


def on_warning_with_extras(**kwargs: Any) -> None:
    CALLS.append(("warning+", kwargs))


def on_exceeded(tenant: Tenant, feature: str, current: int, limit: int, percentage: float) -> None:
    CALLS.append(("exceeded", {"tenant": tenant, "current": current, "percentage": percentage}))


async def on_exceeded_async(tenant: Tenant, feature: str, **kwargs: Any) -> None:
    CALLS.append(("exceeded-async", {"tenant": tenant, "feature": feature}))


def broken(**kwargs: Any) -> None:
    raise RuntimeError("the mail server is down")


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def _configure(settings: Any, **callbacks: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, **callbacks}


def test_callbacks_get_tenant_feature_current_limit_and_percentage(
    client: Client,
    member: AbstractBaseUser,
    limited_tenant: Tenant,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _configure(
        settings,
        ON_USAGE_WARNING=[f"{__name__}.on_warning", f"{__name__}.on_warning_with_extras"],
        ON_LIMIT_EXCEEDED=[f"{__name__}.on_exceeded", f"{__name__}.on_exceeded_async"],
    )
    client.force_login(member)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            client.get("/fn/quota/")
    warnings = [c for kind, c in CALLS if kind == "warning"]
    assert (
        warnings
        == [
            {
                "tenant": limited_tenant,
                "feature": "api_calls",
                "current": 3,
                "limit": 3,
                "percentage": 100.0,
            },
        ]
        * 2
    )  # fmt: skip  (80 % and 100 % are both reached by the third call)
    extras = [c for kind, c in CALLS if kind == "warning+"]
    assert [c["threshold"] for c in extras] == [80, 100]
    assert extras[0]["period"].key  # only callbacks that take them get threshold and period
    exceeded = [c for kind, c in CALLS if kind == "exceeded"]
    assert exceeded == [{"tenant": limited_tenant, "current": 3, "percentage": 100.0}]  # once
    assert [c for kind, c in CALLS if kind == "exceeded-async"] == [
        {"tenant": limited_tenant, "feature": "api_calls"}
    ]


def test_a_callback_that_raises_is_logged_and_the_request_goes_on(
    client: Client,
    member: AbstractBaseUser,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _configure(
        settings,
        ON_USAGE_WARNING=f"{__name__}.broken",
        ON_LIMIT_EXCEEDED=[f"{__name__}.broken", f"{__name__}.on_exceeded"],
    )
    client.force_login(member)
    with (
        caplog.at_level(logging.ERROR, logger="usage_limits"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        statuses = [client.get("/fn/quota/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    failures = [r for r in caplog.records if "callback" in r.getMessage()]
    assert len(failures) == 3  # two warnings and one exceeded
    assert "ON_LIMIT_EXCEEDED" in failures[-1].getMessage()
    assert failures[-1].exc_info is not None
    assert [kind for kind, _ in CALLS] == ["exceeded"]  # the next callback still ran


def test_no_callbacks_configured_costs_nothing(
    client: Client,
    member: AbstractBaseUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    client.force_login(member)
    with django_capture_on_commit_callbacks(execute=True):
        statuses = [client.get("/fn/quota/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert CALLS == []
