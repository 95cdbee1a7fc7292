"""View decorators: ``@require_quota`` for metered or allocated features, ``@require_feature``
for features a plan includes or not.

Both serve ``def`` and ``async def`` views; the wrapper is chosen once, when the view is decorated,
so an async view stays a coroutine function that Django awaits (the engine runs in a thread).

::

    @require_quota("api_calls")
    def search(request): ...

    @require_quota("tokens", quantity=lambda request: int(request.POST["max_tokens"]),
                   count="success")
    async def complete(request): ...

    @require_feature("advanced_analytics")
    def analytics(request): ...
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest

from usage_limits.enforcement import (
    CountMode,
    Quantity,
    QuotaRule,
    aenforce,
    arequire_feature,
    enforce,
    require_feature_sync,
)

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])

__all__ = ["require_feature", "require_quota"]


def require_quota(
    feature: str, quantity: Quantity = 1, *, count: CountMode = "always"
) -> Callable[[ViewFunc], ViewFunc]:
    """Count ``quantity`` of ``feature`` for the request's tenant before the view runs.

    The check and the count are one atomic operation: when the quota is used up the view does not
    run and the client gets 429 (402 when the subscription is inactive), as JSON or an HTML page.

    ``quantity`` is a whole number or a callable ``(request) -> int`` (bytes uploaded, tokens
    asked for; the integer 0 counts nothing). ``count="success"`` gives the units back when the
    view raises or answers with a status listed in ``USAGE_LIMITS["NOT_BILLABLE_STATUSES"]``
    (4xx and 5xx).
    """
    rule = QuotaRule(feature, quantity, count)

    def decorator(view_func: ViewFunc) -> ViewFunc:
        wrapper: Callable[..., Any]
        if iscoroutinefunction(view_func):

            async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return await aenforce(request, rule, lambda: view_func(request, *args, **kwargs))

        else:

            def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return enforce(request, rule, lambda: view_func(request, *args, **kwargs))

        return cast(ViewFunc, wraps(view_func)(wrapper))

    return decorator


def require_feature(feature: str) -> Callable[[ViewFunc], ViewFunc]:
    """Run the view only if the tenant's plan includes ``feature``; else 403 with an upgrade
    message (402 when the subscription is inactive). Nothing is counted."""
    if not isinstance(feature, str) or not feature:
        raise ValueError(f"require_feature needs a feature name, got {feature!r}.")

    def decorator(view_func: ViewFunc) -> ViewFunc:
        wrapper: Callable[..., Any]
        if iscoroutinefunction(view_func):

            async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return await arequire_feature(
                    request, feature, lambda: view_func(request, *args, **kwargs)
                )

        else:

            def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return require_feature_sync(
                    request, feature, lambda: view_func(request, *args, **kwargs)
                )

        return cast(ViewFunc, wraps(view_func)(wrapper))

    return decorator
