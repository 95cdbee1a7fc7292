"""Project callbacks for usage warnings and exceeded limits, named in settings::

    USAGE_LIMITS = {
        "ON_USAGE_WARNING": "myapp.notifications.usage_warning",
        "ON_LIMIT_EXCEEDED": ["myapp.notifications.limit_exceeded", "myapp.crm.flag_upsell"],
    }

    def usage_warning(tenant, feature, current, limit, percentage, **extra):
        send_mail(..., f"{tenant} has used {percentage}% of its {feature}")

Each callback is called with keyword arguments ``tenant`` (a
:class:`~usage_limits.models.Tenant`), ``feature``, ``current``, ``limit`` and ``percentage``;
warnings also pass ``threshold`` and both pass ``period``, but only to callbacks that accept them
(by name or ``**kwargs``), so a callback with exactly the five documented parameters works.
``async def`` callbacks are run to completion.

They run from the engine's signals (``threshold_crossed``, ``quota_exceeded``), so after the
counter's transaction commits and once per tenant, feature, period and level. A callback that
raises is logged on the ``usage_limits`` logger and never breaks the request that triggered it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from usage_limits import signals
from usage_limits.conf import conf
from usage_limits.models import Tenant

logger = logging.getLogger("usage_limits")

Callback = Callable[..., Any]

SETTINGS = ("ON_USAGE_WARNING", "ON_LIMIT_EXCEEDED")


def _paths(value: Any) -> tuple[Any, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str) or callable(value):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)


@functools.cache
def _load(setting: str) -> tuple[Callback, ...]:
    value = conf.ON_USAGE_WARNING if setting == "ON_USAGE_WARNING" else conf.ON_LIMIT_EXCEEDED
    return tuple(import_string(v) if isinstance(v, str) else v for v in _paths(value))


def callbacks_for(setting: str) -> tuple[Callback, ...]:
    """The callables configured under ``setting`` (imported once, again after a settings change)."""
    return _load(setting)


@receiver(setting_changed, dispatch_uid="usage_limits_reset_callbacks")
def _reset_callbacks(setting: str, **kwargs: Any) -> None:
    if setting == "USAGE_LIMITS":
        _load.cache_clear()


def _accepted(callback: Callback, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: give them everything
        return arguments
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
        return arguments
    names = {p.name for p in parameters}
    return {name: value for name, value in arguments.items() if name in names}


def run_callbacks(setting: str, **arguments: Any) -> None:
    """Call every callback of ``setting``; log (never raise) what fails."""
    for callback in callbacks_for(setting):
        try:
            kwargs = _accepted(callback, arguments)
            if iscoroutinefunction(callback):
                async_to_sync(callback)(**kwargs)
            else:
                callback(**kwargs)
        except Exception:
            logger.exception(
                "usage_limits: %s callback %r failed for tenant %s, feature %s",
                setting,
                callback,
                getattr(arguments.get("tenant"), "pk", None),
                arguments.get("feature"),
            )


def _tenant(tenant_id: int) -> Tenant | int:
    try:
        return Tenant.objects.select_related("plan").get(pk=tenant_id)
    except Tenant.DoesNotExist:  # deleted since: still say which one it was
        return tenant_id


def on_threshold_crossed(
    tenant_id: int,
    feature: str,
    threshold: int,
    current: int,
    limit: int,
    percentage: float,
    period: Any,
    **kwargs: Any,
) -> None:
    if not callbacks_for("ON_USAGE_WARNING"):
        return
    run_callbacks(
        "ON_USAGE_WARNING",
        tenant=_tenant(tenant_id),
        feature=feature,
        current=current,
        limit=limit,
        percentage=percentage,
        threshold=threshold,
        period=period,
    )


def on_quota_exceeded(
    tenant_id: int,
    feature: str,
    current: int,
    limit: int,
    percentage: float,
    period: Any,
    **kwargs: Any,
) -> None:
    if not callbacks_for("ON_LIMIT_EXCEEDED"):
        return
    run_callbacks(
        "ON_LIMIT_EXCEEDED",
        tenant=_tenant(tenant_id),
        feature=feature,
        current=current,
        limit=limit,
        percentage=percentage,
        period=period,
    )


def connect_callbacks() -> None:
    """Connect the settings' callbacks to the engine's signals (from ``AppConfig.ready``)."""
    signals.threshold_crossed.connect(
        on_threshold_crossed, dispatch_uid="usage_limits_on_usage_warning"
    )
    signals.quota_exceeded.connect(on_quota_exceeded, dispatch_uid="usage_limits_on_limit_exceeded")
