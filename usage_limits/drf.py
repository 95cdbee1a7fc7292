"""Django REST framework integration: ``HasQuota``, ``HasFeature`` and ``QuotaThrottle``.

::

    class SearchView(APIView):
        permission_classes = [IsAuthenticated, HasQuota]
        quota_feature = "api_calls"

    class ReportViewSet(viewsets.ModelViewSet):
        permission_classes = [IsAuthenticated, HasQuota]
        quota_features = {"create": "reports", "list": "api_calls"}  # by action (or HTTP method)
        quota_count = "success"  # refund 4xx/5xx answers

    class AnalyticsView(APIView):
        permission_classes = [IsAuthenticated, HasFeature]
        required_feature = "advanced_analytics"

The feature of a request is ``quota_features[view.action]`` (viewsets), else
``quota_features[method]`` (``"get"``, ``"post"``...), else ``quota_feature``; a view with none of
them is not enforced, so the classes can sit in ``DEFAULT_PERMISSION_CLASSES``. ``quota_quantity``
is a whole number or a callable of the DRF request.

``HasQuota`` refuses with the same JSON body as every other edge (429, 402, 403, 503).
``QuotaThrottle`` plugs into DRF's throttling instead: a used-up quota raises DRF's ``Throttled``
(429 with ``Retry-After`` and DRF's own body). Use one of the two per view, not both: each counts.

Both add ``RateLimit-Policy`` / ``RateLimit`` to the response, allowed or denied. DRF
authenticates before it checks permissions, so token-authenticated users resolve to their tenant
here even when a middleware saw the request as anonymous.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_cache_control
from rest_framework.exceptions import APIException, Throttled
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from usage_limits.conf import conf
from usage_limits.denials import (
    authentication_payload,
    feature_payload,
    invalid_quantity_payload,
    misconfigured_feature_payload,
    no_tenant_payload,
    store_unavailable_payload,
    tenant_access_payload,
)
from usage_limits.enforcement import (
    STORE_ERRORS,
    QuotaRule,
    apply_ratelimit_headers,
    counts_nothing,
    feature_problem,
    is_billable,
    log_refused_unavailable,
    record_decision,
)
from usage_limits.engine import consume, give_back
from usage_limits.exceptions import (
    FeatureNotInPlan,
    InvalidQuantity,
    TenantAccessDenied,
    UnknownFeature,
    WrongFeatureKind,
)
from usage_limits.models import Tenant
from usage_limits.responses import denial_payload, retry_after_seconds, status_code
from usage_limits.results import Decision, DenialReason
from usage_limits.rules import tenant_rules
from usage_limits.tenancy import forget_request_tenant, resolve_request_tenant

logger = logging.getLogger("usage_limits")

__all__ = ["HasFeature", "HasQuota", "QuotaThrottle", "UsageLimitRefused"]

_PENDING = "_usage_limits_pending_refunds"
_HOOKED = "_usage_limits_hooked"


class UsageLimitRefused(APIException):
    """A refusal with the app's JSON body (not DRF's ``{"detail": ...}``) and its status."""

    def __init__(
        self,
        status: int,
        payload: Mapping[str, Any],
        *,
        wait: int | None = None,
        auth_header: str | None = None,
    ) -> None:
        super().__init__(detail=str(payload.get("error", "")), code=str(payload.get("code", "")))
        self.status_code = status
        # Kept as a plain dict: DRF would turn numbers and None into strings.
        self.detail = dict(payload)
        self.wait = wait
        if auth_header:
            self.auth_header = auth_header


# --- what a view asks for ----------------------------------------------------------------------


def _by_action(view: APIView, request: Request, mapping_name: str, single_name: str) -> Any:
    mapping = getattr(view, mapping_name, None)
    if isinstance(mapping, Mapping):
        action = getattr(view, "action", None)
        method = (request.method or "").lower()
        if action is not None and action in mapping:
            return mapping[action]
        if method in mapping:
            return mapping[method]
    return getattr(view, single_name, None)


def quota_rule_for(view: APIView, request: Request) -> QuotaRule | None:
    """The quota a DRF request costs, from the view's attributes (``None``: not enforced)."""
    feature = _by_action(view, request, "quota_features", "quota_feature")
    if not feature:
        return None
    quantity: int | Callable[[HttpRequest], int] = getattr(view, "quota_quantity", 1)
    if callable(quantity):
        compute = quantity

        def quantity(_http_request: HttpRequest) -> int:
            return int(compute(request))

    return QuotaRule(feature, quantity, getattr(view, "quota_count", "always"))


def required_feature_for(view: APIView, request: Request) -> str | None:
    feature = _by_action(view, request, "required_features", "required_feature")
    return str(feature) if feature else None


# --- the request's tenant ------------------------------------------------------------------------


def _tenant(view: APIView, request: Request) -> Tenant | None:
    """The tenant, or ``None`` to pass through; raises the refusal otherwise."""
    http_request: HttpRequest = request._request
    _hook_response(view, http_request)
    try:
        tenant = resolve_request_tenant(http_request)
        if tenant is None and request.user is not None and request.user.is_authenticated:
            # Resolved before DRF authenticated the request (middleware): try with the user now.
            forget_request_tenant(http_request)
            tenant = resolve_request_tenant(http_request)
    except TenantAccessDenied as denied:
        raise UsageLimitRefused(403, tenant_access_payload(str(denied))) from None
    except STORE_ERRORS as exc:  # the database dropped while finding the tenant
        log_refused_unavailable("database", exc, request.path)
        raise UsageLimitRefused(503, store_unavailable_payload()) from None
    if tenant is not None:
        return tenant
    if conf.ANONYMOUS_REQUESTS == "allow":
        return None
    if request.user is None or not request.user.is_authenticated:
        header = view.get_authenticate_header(request)
        raise UsageLimitRefused(401, authentication_payload(), auth_header=header or None)
    raise UsageLimitRefused(403, no_tenant_payload())


# --- headers and refunds, once the view has answered ---------------------------------------------


def _settle(http_request: HttpRequest, response: HttpResponseBase | None) -> None:
    pending: list[Decision] = http_request.__dict__.pop(_PENDING, [])
    if not pending or (response is not None and is_billable(response.status_code)):
        return
    for decision in pending:
        try:
            record_decision(http_request, give_back(decision))
        except Exception:  # as in enforcement._settle: the view's answer or error stands
            logger.exception("usage_limits: could not refund %s", decision.feature)


def _hook_response(view: APIView, http_request: HttpRequest) -> None:
    """Let the view's own response carry our headers (and refunds), denied or allowed.

    A permission or throttle never sees the response; the view instance lives for one request,
    so wrapping its ``finalize_response`` and ``handle_exception`` is scoped to this request.
    """
    if view.__dict__.get(_HOOKED):
        return
    view.__dict__[_HOOKED] = True
    finalize_response = view.finalize_response
    handle_exception = view.handle_exception

    def finalize_with_limits(
        request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = finalize_response(request, response, *args, **kwargs)
        _settle(http_request, response)
        apply_ratelimit_headers(http_request, response)
        return response

    def handle_exception_with_refund(exc: Exception) -> Response:
        try:
            response = handle_exception(exc)
        except BaseException:
            _settle(http_request, None)  # the view failed: a "success" count is given back
            raise
        if isinstance(exc, UsageLimitRefused | Throttled):
            # One tenant's usage, as in every other edge's refusals: no shared cache keeps it.
            patch_cache_control(response, private=True, no_store=True)
        return response

    view.finalize_response = finalize_with_limits  # type: ignore[method-assign]
    view.handle_exception = handle_exception_with_refund  # type: ignore[method-assign]


def _consume(view: APIView, request: Request, rule: QuotaRule) -> Decision | None:
    """Count the request; ``None`` when it passes through uncounted. Refusals raise."""
    http_request: HttpRequest = request._request
    tenant = _tenant(view, request)
    if tenant is None:
        return None
    quantity = rule.quantity_for(http_request)
    if counts_nothing(quantity):
        return None
    try:
        decision = consume(tenant, rule.feature, quantity)
    except STORE_ERRORS as exc:
        log_refused_unavailable("store", exc, request.path)
        raise UsageLimitRefused(503, store_unavailable_payload()) from None
    except FeatureNotInPlan:
        payload = feature_payload(rule.feature, tenant_rules(tenant).plan_code)
        raise UsageLimitRefused(403, payload) from None
    except InvalidQuantity as exc:
        logger.warning("usage_limits: %s refused with 400: %s", request.path, exc)
        raise UsageLimitRefused(400, invalid_quantity_payload(rule.feature, str(exc))) from None
    except (UnknownFeature, WrongFeatureKind) as exc:
        logger.error(
            "usage_limits: %s is enforced with a feature it cannot count: %s", request.path, exc
        )
        payload = misconfigured_feature_payload(rule.feature, exc)
        raise UsageLimitRefused(500, payload) from None
    record_decision(http_request, decision)
    if decision.allowed and rule.count == "success":
        http_request.__dict__.setdefault(_PENDING, []).append(decision)
    return decision


class HasQuota(BasePermission):
    """Count the request against ``quota_feature`` (or ``quota_features[action]``); refuse with
    429 / 402 and the app's JSON body when the quota is used up."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method == "OPTIONS":
            return True
        rule = quota_rule_for(view, request)
        if rule is None:
            return True
        decision = _consume(view, request, rule)
        if decision is not None and not decision.allowed:
            raise UsageLimitRefused(
                status_code(decision),
                denial_payload(decision),
                wait=retry_after_seconds(decision),
            )
        return True


class HasFeature(BasePermission):
    """Refuse with 403 (402 for an inactive subscription) unless the plan includes
    ``required_feature`` (or ``required_features[action]``)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        feature = required_feature_for(view, request)
        if feature is None:
            return True
        tenant = _tenant(view, request)
        if tenant is None:
            return True
        try:
            problem = feature_problem(tenant, feature)
        except STORE_ERRORS:
            raise UsageLimitRefused(503, store_unavailable_payload()) from None
        if problem is not None:
            raise UsageLimitRefused(*problem)
        return True


class QuotaThrottle(BaseThrottle):
    """DRF throttling backed by the quota: exact under concurrency (one atomic ``consume``),
    unlike cache-based throttles. A used-up quota answers DRF's 429 with ``Retry-After``."""

    def __init__(self) -> None:
        self._wait: int | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method == "OPTIONS":
            return True
        rule = quota_rule_for(view, request)
        if rule is None:
            return True
        decision = _consume(view, request, rule)
        if decision is None or decision.allowed:
            return True
        if decision.reason == DenialReason.SUBSCRIPTION_INACTIVE:
            raise UsageLimitRefused(402, denial_payload(decision))
        self._wait = retry_after_seconds(decision)
        return False

    def wait(self) -> float | None:
        return None if self._wait is None else float(self._wait)
