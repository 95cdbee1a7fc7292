"""The site the HTTP surfaces talk to: one view per edge of the app, and their URLs.

Used as ``ROOT_URLCONF`` by the reliability suite. The views are what a project writes: a view
decorated with ``@require_quota`` whose quantity callable reads the request, a view counted by
the middleware's ``PATH_RULES``, a DRF view with the ``HasQuota`` permission, and the app's own
REST API (``usage_limits.api.urls``).

A quantity callable is the site's code and may return anything (a float, ``None``, NaN): the
surface registers the value it wants the callable to return under a token and sends the token
in a header, so the bad-input matrix can hand the decorator exactly the bad value it tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage_limits.decorators import require_quota
from usage_limits.drf import HasQuota
from usage_limits.enforcement import recorded_decisions

CALL_HEADER = "X-Reliability-Call"
MIDDLEWARE_PATH = "/metered/"
PATH_RULES = {r"^/metered/": "api_calls"}

# token -> (feature, quantity) of one call; written by the surface, read by the view's callable.
_CALLS: dict[str, tuple[Any, Any]] = {}
_calls_lock = threading.Lock()


def register_call(token: str, feature: Any, quantity: Any) -> None:
    with _calls_lock:
        _CALLS[token] = (feature, quantity)


def forget_call(token: str) -> None:
    with _calls_lock:
        _CALLS.pop(token, None)


def _call(request: HttpRequest) -> tuple[Any, Any]:
    return _CALLS.get(request.headers.get(CALL_HEADER, ""), ("api_calls", 1))


def quantity_of_call(request: HttpRequest) -> Any:
    """The site's quantity callable: here, whatever the test registered for this request."""
    return _call(request)[1]


def _answer(request: HttpRequest) -> HttpResponse:
    """What the counted view answers: the counter after this request, as the engine told it."""
    decisions = recorded_decisions(request)
    last = decisions[-1] if decisions else None
    return JsonResponse(
        {
            "success": True,
            "used": None if last is None else last.used,
            "period": None if last is None else last.period.key,
        }
    )


_decorated_api_calls = require_quota("api_calls", quantity=quantity_of_call)(_answer)
_decorated_views: dict[str, Callable[[HttpRequest], HttpResponse]] = {}


def decorated(request: HttpRequest) -> HttpResponse:
    """``@require_quota("api_calls", quantity=...)``; for another feature name, the same view
    decorated with that name (as a project would write ``@require_quota("that_name")``)."""
    feature = _call(request)[0]
    if feature == "api_calls":
        return _decorated_api_calls(request)
    view = _decorated_views.get(feature)
    if view is None:
        view = _decorated_views[feature] = require_quota(feature, quantity=quantity_of_call)(
            _answer
        )
    return view(request)


def metered(request: HttpRequest) -> HttpResponse:
    """Counted by ``UsageLimitsMiddleware`` (``PATH_RULES``), not by the view."""
    return _answer(request)


class QuotaView(APIView):
    permission_classes = [HasQuota]
    quota_feature = "api_calls"

    def get(self, request: Request) -> Response:
        return Response({"success": True})


urlpatterns = [
    path("decorated/", decorated),
    path("metered/", metered),
    path("drf/", QuotaView.as_view()),
    path("api/", include("usage_limits.api.urls")),
]
