"""Mount with ``path("api/", include("usage_limits.api.urls"))``."""

from __future__ import annotations

from django.urls import path

from usage_limits.api import schema, views

app_name = "usage_limits_api"

urlpatterns = [
    path("usage/", views.UsageView.as_view(), name="usage"),
    path("usage/history/", views.UsageHistoryView.as_view(), name="usage-history"),
    path("usage/events/", views.UsageEventsView.as_view(), name="usage-events"),
    path("usage/reset/", views.UsageResetView.as_view(), name="usage-reset"),
    path("usage/limits/", views.UsageLimitsView.as_view(), name="usage-limits"),
    path("schema/", schema.UsageSchemaView.as_view(), name="schema"),
    path("schema/swagger/", schema.UsageSwaggerView.as_view(), name="schema-swagger"),
    path("schema/redoc/", schema.UsageRedocView.as_view(), name="schema-redoc"),
]
