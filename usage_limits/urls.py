"""The app's URLs: ``path("usage/", include("usage_limits.urls"))``."""

from __future__ import annotations

from django.urls import path

from usage_limits import views
from usage_limits.scheduling import reset_expired_view

app_name = "usage_limits"

urlpatterns = [
    path("", views.UsageDashboardView.as_view(), name="dashboard"),
    path("reset-expired/", reset_expired_view, name="reset_expired"),
]
