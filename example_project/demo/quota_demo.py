"""The usage dashboard inside this site, and a quota a visitor can use up by clicking.

``account`` embeds the app's template tags in the site's own layout. ``demo`` shows one meter and
buttons that POST to ``demo_call``, which enforces the quota with :func:`usage_limits.consume`
(the atomic check-and-count) and answers a denial with the app's "Limit reached" page, status 429
and the RateLimit headers, as an enforced endpoint of a real site would.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

import usage_limits
from usage_limits.conf import conf
from usage_limits.models import Plan, Tenant
from usage_limits.responses import LIMIT_REACHED_MESSAGE, ratelimit_headers, status_code

DEMO_FEATURE = "api_calls"
QUANTITIES = (1, 10)


def _tenant(request: HttpRequest) -> Tenant | None:
    tenant: Tenant | None = import_string(conf.TENANT_RESOLVER)(request)
    return tenant


def pricing(request: HttpRequest) -> HttpResponse:
    """The plans side by side: where ``USAGE_LIMITS["UPGRADE_URL"]`` points in this example."""
    plans = list(Plan.objects.filter(is_public=True).prefetch_related("limits"))
    current = _tenant(request) if request.user.is_authenticated else None
    rows = []
    for feature, spec in conf.FEATURES.items():
        cells = []
        for plan in plans:
            limit = next((item for item in plan.limits.all() if item.feature == feature), None)
            cells.append(limit)
        rows.append({"feature": feature, "label": spec.get("label", feature), "cells": cells})
    context = {"plans": plans, "rows": rows, "current_plan_id": current and current.plan_id}
    return render(request, "pricing.html", context)


@login_required
def account(request: HttpRequest) -> HttpResponse:
    return render(request, "account.html", {"tenant": _tenant(request)})


@login_required
def demo(request: HttpRequest) -> HttpResponse:
    context = {"tenant": _tenant(request), "feature": DEMO_FEATURE, "quantities": QUANTITIES}
    return render(request, "demo.html", context)


@login_required
@require_POST
def demo_call(request: HttpRequest) -> HttpResponse:
    tenant = _tenant(request)
    if tenant is None:
        return redirect("demo")
    try:
        quantity = int(request.POST.get("quantity", "1"))
    except ValueError:
        quantity = 1
    if quantity not in QUANTITIES:
        quantity = 1
    decision = usage_limits.consume(tenant, DEMO_FEATURE, quantity)
    if not decision.allowed:
        response = render(
            request,
            "usage_limits/limit_reached.html",
            {
                "decision": decision,
                "message": LIMIT_REACHED_MESSAGE,
                "upgrade_url": conf.UPGRADE_URL,
            },
            status=status_code(decision),
        )
        for header, value in ratelimit_headers(decision).items():
            response[header] = value
        return response
    # Post/Redirect/Get: reloading the page does not make the calls again.
    return redirect("demo")
