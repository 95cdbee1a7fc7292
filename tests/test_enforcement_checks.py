"""System checks of the enforcement settings (usage_limits.E020-E027, W020-W024)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from usage_limits import RATELIMIT_HEADERS
from usage_limits.checks import check_enforcement

AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
OURS = "usage_limits.middleware.UsageLimitsMiddleware"


def ids(settings: Any, **usage_limits: Any) -> list[str]:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, **usage_limits}
    return [message.id for message in check_enforcement()]


def test_the_defaults_pass(settings: Any) -> None:
    assert ids(settings) == []


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("PATH_RULES", ["^/api/"], "usage_limits.E020"),
        ("PATH_RULES", {"^/api/(": "api_calls"}, "usage_limits.E020"),
        ("PATH_RULES", {"^/api/": "api_callz"}, "usage_limits.E021"),
        ("PATH_RULES", {"^/api/": {"feature": "api_calls", "count": "never"}}, "usage_limits.E021"),
        ("PATH_RULES", {"^/api/": {"feature": "api_calls", "quantity": 0}}, "usage_limits.E021"),
        ("PATH_RULES", {"^/api/": {"feature": "api_calls", "cost": 2}}, "usage_limits.E021"),
        ("EXEMPT_PATHS", "^/admin/", "usage_limits.E022"),
        ("EXEMPT_PATHS", ["^/admin/", "[oops"], "usage_limits.E022"),
        ("ANONYMOUS_REQUESTS", "deny", "usage_limits.E023"),
        ("TENANT_HEADER", "X Tenant", "usage_limits.E024"),
        ("REQUEST_EVENTS", "yes", "usage_limits.E025"),
        ("NOT_BILLABLE_STATUSES", ["4xx", 700], "usage_limits.E026"),
        ("NOT_BILLABLE_STATUSES", "5xx", "usage_limits.E026"),
        ("ON_USAGE_WARNING", "no.such.module.callback", "usage_limits.E027"),
        ("ON_LIMIT_EXCEEDED", ["usage_limits.conf.DEFAULTS"], "usage_limits.E027"),
    ],
)
def test_malformed_settings_are_reported(
    settings: Any, setting: str, value: Any, expected: str
) -> None:
    assert expected in ids(settings, **{setting: value})


def test_good_settings_pass(settings: Any) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, OURS]
    assert (
        ids(
            settings,
            PATH_RULES={
                "^/api/": "api_calls",
                "^/upload/": {"feature": "api_calls", "quantity": 5},
            },
            EXEMPT_PATHS=["^/api/health/"],
            ANONYMOUS_REQUESTS="allow",
            TENANT_HEADER=None,
            NOT_BILLABLE_STATUSES=["5xx", 404],
            ON_USAGE_WARNING="logging.warning",
            ON_LIMIT_EXCEEDED=["logging.error", print],
            REQUEST_EVENTS=True,
        )
        == []
    )


def test_path_rules_without_the_middleware_warn(settings: Any) -> None:
    assert ids(settings, PATH_RULES={"^/api/": "api_calls"}) == ["usage_limits.W021"]


def test_middleware_before_authentication_warns(settings: Any) -> None:
    settings.MIDDLEWARE = [OURS, *settings.MIDDLEWARE]
    assert ids(settings) == ["usage_limits.W020"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE[1:], OURS]
    assert ids(settings) == []
    # A custom resolver may not need the user at all.
    settings.MIDDLEWARE = [OURS, *settings.MIDDLEWARE[:-1]]
    assert ids(settings, TENANT_RESOLVER="usage_limits.tenancy.get_tenant_resolver") == []


def test_errors_stop_manage_py_check(settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "ANONYMOUS_REQUESTS": "maybe"}
    with pytest.raises(SystemCheckError, match=r"usage_limits\.E023"):
        # Only the compatibility checks: the model checks would ask each database its version.
        call_command("check", tags=["compatibility"])


def test_every_message_has_a_hint(settings: Any) -> None:
    settings.MIDDLEWARE = [OURS]
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "PATH_RULES": {"^/api/": {"feature": "nope", "quantity": 0, "count": "x"}, "(": "a"},
        "EXEMPT_PATHS": ["("],
        "ANONYMOUS_REQUESTS": "x",
        "TENANT_HEADER": "bad header",
        "REQUEST_EVENTS": 1,
        "NOT_BILLABLE_STATUSES": "x",
        "ON_USAGE_WARNING": "no.such.path",
        "ON_LIMIT_EXCEEDED": [3],
    }
    messages = check_enforcement()
    assert len(messages) >= 10
    assert all(message.hint for message in messages)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_atomic_requests_on_the_counter_database_warns(settings: Any) -> None:
    settings.DATABASES = {
        "default": {**settings.DATABASES["default"], "ATOMIC_REQUESTS": True},
        "quota": {**settings.DATABASES["default"], "ATOMIC_REQUESTS": False},
    }
    assert ids(settings) == ["usage_limits.W022"]
    assert ids(settings, DATABASE_ALIAS="quota") == []


CORS = "corsheaders.middleware.CorsMiddleware"


def test_cors_without_the_ratelimit_fields_exposed_warns(settings: Any) -> None:
    settings.MIDDLEWARE = [CORS, *settings.MIDDLEWARE]
    settings.CORS_EXPOSE_HEADERS = ["X-Request-Id"]
    [message] = check_enforcement()
    assert message.id == "usage_limits.W023"
    assert "RateLimit-Policy, RateLimit, Retry-After" in message.msg
    settings.CORS_EXPOSE_HEADERS = ["X-Request-Id", "ratelimit-policy", "RateLimit"]
    [message] = check_enforcement()
    assert "does not list Retry-After:" in message.msg
    settings.CORS_EXPOSE_HEADERS = ["X-Request-Id", *RATELIMIT_HEADERS]
    assert ids(settings) == []


def test_a_wildcard_exposes_the_fields_only_without_credentials(settings: Any) -> None:
    settings.MIDDLEWARE = [CORS, *settings.MIDDLEWARE]
    settings.CORS_EXPOSE_HEADERS = ["*"]
    assert ids(settings) == []
    settings.CORS_ALLOW_CREDENTIALS = True
    assert ids(settings) == ["usage_limits.W023"]


def test_no_cors_middleware_no_cors_warning(settings: Any) -> None:
    settings.CORS_EXPOSE_HEADERS = []
    assert ids(settings) == []


def test_our_middleware_before_the_cors_middleware_warns(settings: Any) -> None:
    settings.CORS_EXPOSE_HEADERS = [*RATELIMIT_HEADERS]
    settings.MIDDLEWARE = [OURS, CORS, *settings.MIDDLEWARE]
    rules = {
        "PATH_RULES": {"^/api/": "api_calls"},
        "TENANT_RESOLVER": "usage_limits.tenancy.get_tenant_resolver",  # W020 does not apply
    }
    assert ids(settings, **rules) == ["usage_limits.W024"]
    # Without path rules the middleware refuses nothing, so its place does not matter here.
    assert ids(settings, PATH_RULES={}) == []
    settings.MIDDLEWARE = [CORS, OURS, *settings.MIDDLEWARE[2:]]
    assert ids(settings, **rules) == []
