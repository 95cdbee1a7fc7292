"""``UsageLimitsMiddleware``: the request's tenant and usage on every request, and quotas by path.

Place it after ``AuthenticationMiddleware`` (the default tenant resolver reads ``request.user``)::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "usage_limits.middleware.UsageLimitsMiddleware",
    ]
    USAGE_LIMITS = {"PATH_RULES": {r"^/api/": "api_calls"}}

On every request it sets

* ``request.tenant``: the tenant, resolved lazily on first use (like ``request.user``); a lazy
  object, so test it with ``if request.tenant:``. Async code calls ``await request.atenant()``.
* ``request.usage``: the tenant's :class:`~usage_limits.results.TenantUsage`, read lazily (one
  query, only if used); ``await request.ausage()`` in async code.

Requests whose path matches a ``PATH_RULES`` pattern (and no ``EXEMPT_PATHS`` pattern) are
counted and refused exactly like ``@require_quota`` views. CORS preflights (``OPTIONS``) are never
counted. With ``REQUEST_EVENTS`` on, each counted request leaves a
:class:`~usage_limits.models.UsageEvent` whose metadata holds its path, method, status and
duration.

Sync and async capable: under ASGI it stays async and runs the engine in a thread.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.functional import SimpleLazyObject

from usage_limits.conf import conf
from usage_limits.enforcement import QuotaRule, aenforce, enforce
from usage_limits.engine import get_usage
from usage_limits.models import Tenant
from usage_limits.results import TenantUsage
from usage_limits.tenancy import resolve_request_tenant

__all__ = ["UsageLimitsMiddleware", "path_rule_for"]

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

UNCOUNTED_METHODS = frozenset({"OPTIONS"})


def build_rule(value: str | Mapping[str, Any]) -> QuotaRule:
    """A ``PATH_RULES`` value: a feature name or ``{"feature", "quantity", "count"}``."""
    if isinstance(value, str):
        return QuotaRule(value)
    return QuotaRule(
        feature=value["feature"],
        quantity=value.get("quantity", 1),
        count=value.get("count", "always"),
    )


@functools.cache
def _compiled() -> tuple[
    tuple[re.Pattern[str], ...], tuple[tuple[re.Pattern[str], QuotaRule], ...]
]:
    exempt = tuple(re.compile(pattern) for pattern in conf.EXEMPT_PATHS)
    rules = tuple(
        (re.compile(pattern), build_rule(value)) for pattern, value in conf.PATH_RULES.items()
    )
    return exempt, rules


@receiver(setting_changed, dispatch_uid="usage_limits_reset_path_rules")
def _reset_rules(setting: str, **kwargs: Any) -> None:
    if setting == "USAGE_LIMITS":
        _compiled.cache_clear()


def path_rule_for(request: HttpRequest) -> QuotaRule | None:
    """The quota rule that applies to ``request``'s path, if any (first match wins)."""
    if request.method in UNCOUNTED_METHODS:
        return None
    exempt, rules = _compiled()
    path = request.path_info
    if any(pattern.search(path) for pattern in exempt):
        return None
    for pattern, rule in rules:
        if pattern.search(path):
            return rule
    return None


def _usage_of(request: HttpRequest) -> TenantUsage | None:
    tenant = resolve_request_tenant(request)
    return None if tenant is None else get_usage(tenant)


def _attach(request: HttpRequest) -> None:
    async def atenant() -> Tenant | None:
        return await sync_to_async(resolve_request_tenant, thread_sensitive=True)(request)

    async def ausage() -> TenantUsage | None:
        return await sync_to_async(_usage_of, thread_sensitive=True)(request)

    request.tenant = SimpleLazyObject(lambda: resolve_request_tenant(request))  # type: ignore[attr-defined]
    request.atenant = atenant  # type: ignore[attr-defined]
    request.usage = SimpleLazyObject(lambda: _usage_of(request))  # type: ignore[attr-defined]
    request.ausage = ausage  # type: ignore[attr-defined]


class UsageLimitsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            # Mark the instance as a coroutine function so Django's handler awaits it.
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        get_response: GetResponse = self.get_response  # type: ignore[assignment]
        _attach(request)
        rule = path_rule_for(request)
        if rule is None:
            return get_response(request)
        return enforce(
            request, rule, lambda: get_response(request), record_event=conf.REQUEST_EVENTS
        )

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: AsyncGetResponse = self.get_response  # type: ignore[assignment]
        _attach(request)
        rule = path_rule_for(request)
        if rule is None:
            return await get_response(request)
        return await aenforce(
            request, rule, lambda: get_response(request), record_event=conf.REQUEST_EVENTS
        )
