from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from tests.enforcement_app import views

router = SimpleRouter()
router.register("viewset", views.QuotaViewSet, basename="viewset")

urlpatterns = [
    path("plain/", views.plain),
    path("whoami/", views.whoami),
    path("api/plain/", views.plain),
    path("api/health/", views.plain),
    path("health/", views.plain),
    path("fn/quota/", views.quota_view),
    path("fn/async-quota/", views.async_quota_view),
    path("fn/quantity/", views.quantity_view),
    path("fn/async-quantity/", views.async_quantity_view),
    path("fn/unvalidated-quantity/", views.unvalidated_quantity_view),
    path("fn/success/", views.success_view),
    path("fn/async-success/", views.async_success_view),
    path("fn/project/", views.project_view),
    path("fn/feature/", views.feature_view),
    path("fn/async-feature/", views.async_feature_view),
    path("cbv/quota/", views.QuotaView.as_view()),
    path("cbv/async-quota/", views.AsyncQuotaView.as_view()),
    path("cbv/success/", views.SuccessQuotaView.as_view()),
    path("cbv/feature/", views.FeatureView.as_view()),
    path("cbv/async-feature/", views.AsyncFeatureView.as_view()),
    path("drf/quota/", views.QuotaAPIView.as_view()),
    path("drf/success/", views.SuccessAPIView.as_view()),
    path("drf/throttled/", views.ThrottledAPIView.as_view()),
    path("drf/feature/", views.FeatureAPIView.as_view()),
    path("drf/", include(router.urls)),
]
