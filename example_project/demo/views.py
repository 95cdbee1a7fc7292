"""The example site's home page: the signed-in user's tenant and its usage, as a table."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string

import usage_limits
from usage_limits.conf import conf
from usage_limits.management.commands.usage_limits_demo import DEMO_TENANTS


def home(request: HttpRequest) -> HttpResponse:
    # The accounts `manage.py usage_limits_demo` makes, listed for visitors.
    context: dict[str, Any] = {"demo_tenants": DEMO_TENANTS, "tenant": None, "usage": None}
    if request.user.is_authenticated:
        resolve_tenant = import_string(conf.TENANT_RESOLVER)
        tenant = resolve_tenant(request)
        if tenant is not None:
            usage = usage_limits.get_usage(tenant).as_dict()
            context["tenant"] = tenant
            context["usage"] = usage
            context["rows"] = [_row(feature) for feature in usage["features"]]
    return render(request, "home.html", context)


def _row(feature: dict[str, Any]) -> dict[str, Any]:
    """One line of the table: the engine's figures plus what the page needs to show them."""
    declared = conf.FEATURES.get(feature["feature"], {})
    resets_at = feature["resets_at"]
    return {
        **feature,
        "unit": declared.get("unit", ""),
        "resets_at": parse_datetime(resets_at) if resets_at else None,
        # the bar stops at the end of the track even when usage ran over the limit
        "bar": round(min(feature["percent"], 100.0)),
    }
