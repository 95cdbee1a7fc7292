"""``{% load usage_limits %}``: usage meters, the dashboard, the history chart and helpers.

Each tag is a thin wrapper: the work happens in :mod:`usage_limits.meters`,
:mod:`usage_limits.dashboard`, :mod:`usage_limits.history` and :mod:`usage_limits.charts`, which
you can call from your own views. Tags accept a tenant, its primary key, or the
:class:`~usage_limits.results.TenantUsage` you already have; within one render, a tenant's usage
is read once however many meters the page shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.http import HttpRequest
from django.utils import timezone

from usage_limits import engine
from usage_limits.charts import history_chart
from usage_limits.dashboard import FeatureFlag, build_dashboard, range_links
from usage_limits.exceptions import UnknownFeature
from usage_limits.history import DEFAULT_DAYS, clamp_days, usage_history
from usage_limits.meters import build_meter, time_until
from usage_limits.models import FeatureKind, Tenant
from usage_limits.results import TenantUsage
from usage_limits.rules import known_features
from usage_limits.units import humanize_quantity

register = template.Library()

_RENDER_CACHE_KEY = "usage_limits.usage"


def _usage(context: template.Context, tenant: Tenant | int | TenantUsage) -> TenantUsage:
    if isinstance(tenant, TenantUsage):
        return tenant
    key = tenant.pk if isinstance(tenant, Tenant) else tenant
    render_context: Any = context.render_context  # lives for one render, like the cycle tag's
    cache: dict[Any, TenantUsage] = render_context.setdefault(_RENDER_CACHE_KEY, {})
    if key not in cache:
        cache[key] = engine.get_usage(tenant)
    return cache[key]


def _request(context: template.Context) -> HttpRequest | None:
    request = context.get("request")
    return request if isinstance(request, HttpRequest) else None


@register.inclusion_tag("usage_limits/includes/meter.html", takes_context=True)
def usage_meter(
    context: template.Context, tenant: Tenant | int | TenantUsage | None, feature: str
) -> dict[str, Any]:
    """``{% usage_meter tenant "api_calls" %}``: one feature's meter.

    Renders nothing for a feature the tenant's plan does not include; a name no plan or setting
    knows raises :class:`~usage_limits.exceptions.UnknownFeature` (a typo should not pass silently).
    """
    if tenant is None:  # no tenant resolved (an anonymous visitor): nothing to show
        return {"meter": None}
    usage = _usage(context, tenant)
    try:
        feature_usage = usage.feature(feature)
    except KeyError:
        if feature not in known_features():
            raise UnknownFeature(f"Unknown feature {feature!r}.") from None
        return {"meter": None}
    if feature_usage.kind == FeatureKind.BOOLEAN:
        flag = FeatureFlag(feature_usage.feature, feature_usage.label, feature_usage.included)
        return {"meter": None, "flag": flag}
    return {"meter": build_meter(feature_usage, tenant_id=usage.tenant_id)}


@register.inclusion_tag("usage_limits/includes/dashboard.html", takes_context=True)
def usage_dashboard(
    context: template.Context, tenant: Tenant | int | TenantUsage | None, heading_level: int = 2
) -> dict[str, Any]:
    """``{% usage_dashboard tenant %}``: the plan, every meter, flags and the upgrade prompt."""
    if tenant is None:
        return {"dashboard": None}
    return {
        "dashboard": build_dashboard(_usage(context, tenant)),
        "heading_level": heading_level,
    }


@register.inclusion_tag("usage_limits/includes/history_chart.html", takes_context=True)
def usage_history_chart(
    context: template.Context,
    tenant: Tenant | int | TenantUsage | None,
    feature: str,
    days: int = DEFAULT_DAYS,
    param: str = "days",
) -> dict[str, Any]:
    """``{% usage_history_chart tenant "api_calls" days=30 %}``: the last days as an inline SVG.

    ``?days=7`` (or the name given as ``param``) in the page's query string switches the range,
    which is what the chart's range links do.
    """
    if tenant is None:
        return {"chart": None}
    request = _request(context)
    default = clamp_days(days)
    asked = request.GET.get(param) if request is not None else None
    chosen = clamp_days(asked, default) if asked is not None else default
    tenant_ref = tenant.tenant_id if isinstance(tenant, TenantUsage) else tenant
    history = usage_history(tenant_ref, feature, chosen)
    return {
        "chart": history_chart(history),
        "ranges": range_links(None if request is None else request.GET, chosen, param),
    }


@register.simple_tag
def has_feature(tenant: Tenant | int | None, feature: str) -> bool:
    """``{% has_feature tenant "advanced_analytics" as analytics %}{% if analytics %}...``

    ``False`` without a tenant (an anonymous visitor)."""
    return tenant is not None and engine.has_feature(tenant, feature)


@register.filter(name="has_feature")
def has_feature_filter(tenant: Tenant | int | None, feature: str) -> bool:
    """``{% if tenant|has_feature:"advanced_analytics" %}``"""
    return tenant is not None and engine.has_feature(tenant, feature)


@register.filter(name="time_until")
def time_until_filter(moment: datetime | None) -> str:
    """``{{ decision.resets_at|time_until }}`` -> "9 days" (rounded up; "" for ``None``)."""
    return "" if moment is None else time_until(moment, timezone.now())


@register.filter
def humanize_usage(value: Any, unit: str = "") -> str:
    """``{{ 1234|humanize_usage }}`` -> 1.2K; ``{{ size|humanize_usage:"bytes" }}`` -> 1.5 GB.

    ``unit`` may also be a feature's name: its declared unit is used (``"storage"``).
    """
    return humanize_quantity(value, unit)
