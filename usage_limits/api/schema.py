"""The OpenAPI schema of this API (drf-spectacular), and its browsable pages.

The schema is generated from the project's URLconf, so paths carry the prefix the project mounted
the API under, but only this app's endpoints are kept: a project with its own schema is not
mixed into ours (and ours can be added to it, see docs/api.md).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.settings import patched_settings
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.request import Request
from rest_framework.response import Response

import usage_limits

SCHEMA_URL_NAME = "usage_limits_api:schema"


def only_usage_limits_endpoints(
    endpoints: list[tuple[str, str, str, Any]], **kwargs: Any
) -> list[tuple[str, str, str, Any]]:
    """drf-spectacular preprocessing hook: keep the endpoints of ``usage_limits.api.views``."""
    return [
        endpoint
        for endpoint in endpoints
        if getattr(endpoint[3], "__module__", "").startswith("usage_limits.api.views")
    ]


def require_request_bodies(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every body this API takes is required (an empty
    request is a 400), which the generator cannot tell for the events' object-or-array body."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation["requestBody"]["required"] = True
    return result


SCHEMA_SETTINGS: dict[str, Any] = {
    "TITLE": "django-usage-limits API",
    "DESCRIPTION": (
        "Per-plan feature quotas: current usage, history, usage events, and admin resets and "
        "limits. Every error body is `{success: false, error, code}` (400s add `errors`)."
    ),
    "VERSION": usage_limits.__version__,
    "PREPROCESSING_HOOKS": ["usage_limits.api.schema.only_usage_limits_endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "usage_limits.api.schema.require_request_bodies",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"DenialReasonEnum": "usage_limits.api.serializers.DENIAL_REASONS"},
}


def _page_settings() -> dict[str, Any]:
    # Assets from drf-spectacular-sidecar when installed: the page then works offline and
    # behind a strict Content-Security-Policy (no CDN).
    if "drf_spectacular_sidecar" in settings.INSTALLED_APPS:
        return {
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
        }
    return {}


class UsageSchemaView(SpectacularAPIView):
    custom_settings = SCHEMA_SETTINGS


class UsageSwaggerView(SpectacularSwaggerView):
    url_name = SCHEMA_URL_NAME
    title = str(SCHEMA_SETTINGS["TITLE"])

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with patched_settings(_page_settings()):
            response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        return response


class UsageRedocView(SpectacularRedocView):
    url_name = SCHEMA_URL_NAME
    title = str(SCHEMA_SETTINGS["TITLE"])

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with patched_settings(_page_settings()):
            response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        return response
