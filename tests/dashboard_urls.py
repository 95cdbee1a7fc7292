"""URLs of the dashboard tests: the app mounted as a project would mount it."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("usage/", include("usage_limits.urls"))]
