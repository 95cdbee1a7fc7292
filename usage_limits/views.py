"""The usage dashboard page: the signed-in tenant's plan, meters and history.

Mount it with ``path("usage/", include("usage_limits.urls"))``. The tenant comes from
``USAGE_LIMITS["TENANT_RESOLVER"]``; the page reads the tenant's usage once and the chart's
history once, so it costs the same number of queries whatever the number of features.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.module_loading import import_string
from django.views import View

from usage_limits.billing.conf import billing_conf
from usage_limits.billing.pricing import estimate_from_usage
from usage_limits.charts import history_chart
from usage_limits.conf import conf
from usage_limits.dashboard import build_dashboard, feature_links, range_links
from usage_limits.history import DEFAULT_DAYS, clamp_days, usage_history
from usage_limits.models import Tenant


def resolve_tenant(request: HttpRequest) -> Tenant | None:
    resolver = import_string(conf.TENANT_RESOLVER)
    tenant: Tenant | None = resolver(request)
    return tenant


class UsageDashboardView(LoginRequiredMixin, View):
    """``GET``: the dashboard; ``?feature=api_calls&days=7`` picks the history shown."""

    template_name = "usage_limits/dashboard.html"
    no_tenant_template_name = "usage_limits/no_tenant.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        tenant = resolve_tenant(request)
        if tenant is None:
            return render(request, self.no_tenant_template_name, status=404)
        dashboard = build_dashboard(tenant)
        context: dict[str, Any] = {"dashboard": dashboard, "tenant": tenant}
        # Metered features only: their history adds up against a period's limit. (The tag can
        # chart an allocation's daily additions, which a usage page rarely needs.)
        # With history off nothing new is recorded, so the page shows no chart rather than a
        # stale one.
        charted = dashboard.metered if conf.HISTORY else []
        if charted:
            names = [m.feature for m in charted]
            asked = request.GET.get("feature", "")
            feature = asked if asked in names else names[0]
            days = clamp_days(request.GET.get("days", DEFAULT_DAYS))
            context.update(
                chart=history_chart(usage_history(tenant, feature, days)),
                ranges=range_links(request.GET, days),
                feature_links=feature_links(request.GET, charted, feature),
            )
        if billing_conf.PRICING:
            context["estimate"] = estimate_from_usage(dashboard.usage)
        context.update(self.get_extra_context(request, tenant))
        return render(request, self.template_name, context)

    def get_extra_context(self, request: HttpRequest, tenant: Tenant) -> dict[str, Any]:
        """Hook for subclasses (a bill estimate, a link to invoices)."""
        return {}
