from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from example_project.demo import quota_demo, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # the app's own dashboard page (usage_limits:dashboard)
    path("usage/", include("usage_limits.urls")),
    # the app's REST API, with its OpenAPI schema and Swagger UI at /api/schema/swagger/
    path("api/", include("usage_limits.api.urls")),
    # this site's account page with the app's template tags, and the quota demo
    path("account/", quota_demo.account, name="account"),
    path("pricing/", quota_demo.pricing, name="pricing"),
    path("demo/", quota_demo.demo, name="demo"),
    path("demo/call/", quota_demo.demo_call, name="demo-call"),
]
