"""``path("usage/", include("usage_limits.urls"))`` mounts the app's pages."""

from __future__ import annotations

from django.urls import path

from usage_limits import views

app_name = "usage_limits"

urlpatterns = [
    path("", views.UsageDashboardView.as_view(), name="dashboard"),
]
