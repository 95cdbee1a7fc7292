"""Views of every kind, each enforced one way, for the enforcement tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage_limits.decorators import require_feature, require_quota
from usage_limits.drf import HasFeature, HasQuota, QuotaThrottle
from usage_limits.mixins import FeatureRequiredMixin, QuotaRequiredMixin

# Run by the views behind count="success" before they answer: what happens elsewhere while a
# request is in its view (an operator's reset, the clock passing a period's end).
WHILE_IN_THE_VIEW: list[Callable[[], object]] = []


def _outcome(request: HttpRequest) -> HttpResponse:
    """Answer with ``?status=...`` or raise with ``?fail=1``: what count="success" looks at."""
    for happening in WHILE_IN_THE_VIEW:
        happening()
    if request.GET.get("fail"):
        raise RuntimeError("the view failed")
    status = int(request.GET.get("status", 200))
    return JsonResponse({"success": True, "status": status}, status=status)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


LOOP_SEEN: list[bool] = []


def quantity_from_query(request: HttpRequest) -> int:
    LOOP_SEEN.append(_in_event_loop())
    return int(request.GET.get("n", 1))


# --- function views ---------------------------------------------------------------------------


def plain(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


def whoami(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant  # type: ignore[attr-defined]
    return JsonResponse({"tenant": tenant.slug if tenant else None})


@require_quota("api_calls")
def quota_view(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant  # type: ignore[attr-defined]
    return JsonResponse({"success": True, "tenant": tenant.slug if tenant else None})


@require_quota("api_calls")
async def async_quota_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True, "in_loop": _in_event_loop()})


@require_quota("api_calls", quantity=quantity_from_query)
def quantity_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


@require_quota("api_calls", quantity=quantity_from_query)
async def async_quantity_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


def quantity_as_sent(request: HttpRequest) -> int:
    # Whatever JSON value the client sent (0, 0.0, false, null...), unconverted: a site's
    # callable that forgets to validate.
    value: int = json.loads(request.GET["n"])
    return value


@require_quota("api_calls", quantity=quantity_as_sent)
def unvalidated_quantity_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


@require_quota("api_calls", count="success")
def success_view(request: HttpRequest) -> HttpResponse:
    return _outcome(request)


@require_quota("api_calls", count="success")
async def async_success_view(request: HttpRequest) -> HttpResponse:
    return _outcome(request)


@require_quota("projects")
def project_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


@require_feature("advanced_analytics")
def feature_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


@require_feature("advanced_analytics")
async def async_feature_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True})


# --- class-based views ----------------------------------------------------------------------------


class QuotaView(QuotaRequiredMixin, View):
    quota_feature = "api_calls"

    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"success": True})


class AsyncQuotaView(QuotaRequiredMixin, View):
    quota_feature = "api_calls"

    async def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"success": True, "in_loop": _in_event_loop()})


class SuccessQuotaView(QuotaRequiredMixin, View):
    quota_feature = "api_calls"
    quota_count = "success"

    def get_quota_quantity(self, request: HttpRequest) -> int:
        return int(request.GET.get("n", 1))

    def get(self, request: HttpRequest) -> HttpResponse:
        return _outcome(request)


class FeatureView(FeatureRequiredMixin, View):
    required_feature = "advanced_analytics"

    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"success": True})


class AsyncFeatureView(FeatureRequiredMixin, View):
    required_feature = "advanced_analytics"

    async def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"success": True})


# --- Django REST framework ----------------------------------------------------------------------


class QuotaAPIView(APIView):
    permission_classes = [HasQuota]
    quota_feature = "api_calls"

    def get(self, request: Request) -> Response:
        return Response({"success": True})


class SuccessAPIView(APIView):
    permission_classes = [HasQuota]
    quota_feature = "api_calls"
    quota_count = "success"

    def get(self, request: Request) -> Response:
        if request.query_params.get("fail"):
            raise RuntimeError("the view failed")
        return Response({"success": True}, status=int(request.query_params.get("status", 200)))


class QuotaViewSet(viewsets.ViewSet):
    permission_classes = [HasQuota]
    quota_features = {"list": "api_calls", "create": "projects"}

    def list(self, request: Request) -> Response:
        return Response({"success": True, "action": "list"})

    def create(self, request: Request) -> Response:
        return Response({"success": True, "action": "create"}, status=201)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"success": True, "action": "retrieve"})


class ThrottledAPIView(APIView):
    throttle_classes = [QuotaThrottle]
    quota_feature = "api_calls"
    quota_quantity = staticmethod(lambda request: int(request.query_params.get("n", 1)))

    def get(self, request: Request) -> Response:
        return Response({"success": True})


class FeatureAPIView(APIView):
    permission_classes = [HasFeature]
    required_feature = "advanced_analytics"

    def get(self, request: Request) -> Response:
        return Response({"success": True})
