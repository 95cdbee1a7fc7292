"""The API's endpoints. Each is a thin edge: it validates, asks the engine, and shapes the answer.

None of them reads or writes a counter itself; tenants only ever see their own tenant (resolved
by ``USAGE_LIMITS["TENANT_RESOLVER"]``, never taken from the request body), and the admin
endpoints name a tenant explicitly and need staff status with the app's permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage_limits import engine
from usage_limits.api import serializers as s
from usage_limits.api.errors import api_exception_handler, invalid, not_found
from usage_limits.api.history import HISTORY_SOURCES, PERIOD
from usage_limits.api.pagination import HistoryPagination
from usage_limits.api.parsers import JSONBodyParser
from usage_limits.api.permissions import CanChangeLimits, CanResetUsage, HasUsageTenant
from usage_limits.billing.conf import billing_conf
from usage_limits.billing.pricing import estimate_from_usage
from usage_limits.events import UsageEventInput
from usage_limits.exceptions import (
    FeatureNotInPlan,
    IdempotencyKeyReused,
    InvalidEvents,
    InvalidQuantity,
    UnknownFeature,
    UnknownTenant,
    WrongFeatureKind,
)
from usage_limits.models import (
    FeatureKind,
    Tenant,
    TenantLimitOverride,
    UsageReset,
)
from usage_limits.numbers import primary_key, whole_number
from usage_limits.responses import denial_payload, ratelimit_headers, status_code
from usage_limits.results import Decision
from usage_limits.rules import known_features, tenant_rules

MAX_OFFSET = 10**12

ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="Invalid request: see `errors`."),
    401: OpenApiResponse(s.ErrorSerializer, description="Not signed in (no or a bad token)."),
    403: OpenApiResponse(s.ErrorSerializer, description="Signed in, but not allowed."),
}
NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such tenant.")}
NOT_JSON = {
    415: OpenApiResponse(s.ErrorSerializer, description="The body is not application/json.")
}
TENANT_HEADER = OpenApiParameter(
    "X-Tenant",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="For users in several tenants: the slug or id of the one to act for.",
)


def documented(**kwargs: Any) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """``extend_schema`` on drf-spectacular's AutoSchema whatever the project's
    ``DEFAULT_SCHEMA_CLASS`` is, so the app's schema never depends on that setting."""
    annotate = extend_schema(**kwargs)

    def decorator(method: Callable[..., Response]) -> Callable[..., Response]:
        method.kwargs = {"schema": AutoSchema}  # type: ignore[attr-defined]
        annotated: Callable[..., Response] = annotate(method)
        return annotated

    return decorator


class UsageAPIView(APIView):
    """Shared configuration: JSON in and out, the app's error body, drf-spectacular's schema."""

    parser_classes = [JSONBodyParser]
    renderer_classes = [JSONRenderer]
    schema = AutoSchema()
    tenant: Tenant

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return api_exception_handler


def _tenant_body(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.pk, "name": tenant.name, "slug": tenant.slug}


def _usage_body(tenant: Tenant) -> dict[str, Any]:
    usage = engine.get_usage(tenant)
    # The overage estimate of the current period, when features are priced (docs/billing.md).
    estimate = estimate_from_usage(usage).as_dict() if billing_conf.PRICING else None
    return {"tenant": _tenant_body(tenant), **usage.as_dict(), "estimate": estimate}


class UsageView(UsageAPIView):
    permission_classes = [HasUsageTenant]

    @documented(
        operation_id="usage_retrieve",
        summary="Current usage and limits of the caller's tenant",
        parameters=[TENANT_HEADER],
        responses={200: s.UsageResponseSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response({"success": True, "data": _usage_body(self.tenant)})


class UsageHistoryView(UsageAPIView):
    permission_classes = [HasUsageTenant]
    pagination_class = HistoryPagination

    @documented(
        operation_id="usage_history_list",
        summary="Past and current periods of the caller's tenant, newest first",
        parameters=[
            TENANT_HEADER,
            OpenApiParameter("feature", str, description="Only this feature (e.g. api_calls)."),
            OpenApiParameter(
                "granularity",
                str,
                enum=sorted(HISTORY_SOURCES),
                description="Rows per period (default) or per day.",
            ),
            OpenApiParameter("limit", int, description="Items per page (default 30, max 1000)."),
            OpenApiParameter("offset", int, description="Items to skip."),
        ],
        responses={200: s.HistoryResponseSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        feature = request.query_params.get("feature") or None
        granularity = request.query_params.get("granularity") or PERIOD
        errors: dict[str, list[str]] = {}
        if granularity not in HISTORY_SOURCES:
            errors["granularity"] = [f"One of: {', '.join(sorted(HISTORY_SOURCES))}."]
        if feature is not None and feature not in known_features():
            # Any known feature, not only the plan's: a downgraded tenant keeps its history.
            errors["feature"] = [f"Unknown feature {feature!r}."]
        for name in ("limit", "offset"):
            raw = request.query_params.get(name)
            if raw is not None and whole_number(raw, MAX_OFFSET) is None:
                # Bounded: an OFFSET past 64 bits is a database error, not an empty page.
                errors[name] = [f"A whole number from 0 to {MAX_OFFSET} is required."]
        if errors:
            raise invalid(errors)
        rows, as_item = HISTORY_SOURCES[granularity]
        paginator = HistoryPagination()
        page = paginator.paginate_queryset(rows(self.tenant, feature), request, view=self)
        now = timezone.now()
        return paginator.get_paginated_response([as_item(row, now) for row in page or []])


def _event_result(decision: Decision, key: str) -> dict[str, Any]:
    resets_at = decision.resets_at
    return {
        "idempotency_key": key,
        "feature": decision.feature,
        "quantity": decision.quantity,
        "accepted": decision.allowed,
        "replayed": decision.replayed,
        "reason": None if decision.reason is None else str(decision.reason),
        "used": decision.used,
        "limit": -1 if decision.limit is None else decision.limit,
        "remaining": decision.remaining,
        "period": decision.period.key,
        "resets_at": None if resets_at is None else resets_at.isoformat(),
    }


EVENTS_REQUEST = PolymorphicProxySerializer(
    component_name="UsageEventOrBatch",
    serializers=[s.UsageEventSerializer, s.UsageEventSerializer(many=True)],
    resource_type_field_name=None,
    many=False,
)


class UsageEventsView(UsageAPIView):
    permission_classes = [HasUsageTenant]

    @documented(
        operation_id="usage_events_create",
        summary="Record usage: one event, or a batch of up to 1,000",
        description=(
            "A JSON object records one event; a JSON array records a batch in one transaction "
            "(validated whole: one bad event refuses the batch, nothing counted). A repeated "
            "`idempotency_key` counts once and answers with the original result; the same key "
            "with another feature or quantity is a 409 and counts nothing. An enforced "
            "single event that does not fit answers 429 (402 for an inactive subscription); in a "
            "batch, denials are reported per event."
        ),
        parameters=[TENANT_HEADER],
        request=EVENTS_REQUEST,
        responses={
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="EventOrBatchResponse",
                    serializers=[s.EventResponseSerializer, s.EventBatchResponseSerializer],
                    resource_type_field_name=None,
                ),
                description="A replayed event, or a batch.",
            ),
            201: OpenApiResponse(s.EventResponseSerializer, description="One event, counted."),
            402: OpenApiResponse(s.DenialSerializer, description="Subscription inactive."),
            429: OpenApiResponse(s.DenialSerializer, description="The event does not fit."),
            **ERRORS,
            404: OpenApiResponse(
                s.ErrorSerializer, description="The tenant was deleted while recording."
            ),
            409: OpenApiResponse(
                s.ErrorSerializer,
                description="An idempotency key reused with another feature or quantity.",
            ),
            413: OpenApiResponse(s.ErrorSerializer, description="The body is too large."),
            **NOT_JSON,
        },
        examples=[
            OpenApiExample(
                "One event",
                value={"feature": "api_calls", "quantity": 1, "idempotency_key": "req-8f14e45f"},
                request_only=True,
            ),
            OpenApiExample(
                "A batch",
                value=[
                    {"feature": "api_calls", "quantity": 3, "idempotency_key": "job-1"},
                    {"feature": "api_calls", "quantity": 2, "idempotency_key": "job-2"},
                ],
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        data = request.data
        single = isinstance(data, dict)
        items = [data] if single else data
        if not isinstance(items, list):
            raise invalid({"non_field_errors": ["Send a JSON object (one event) or an array."]})
        if not items:
            raise invalid({"non_field_errors": ["The batch is empty."]})
        if len(items) > s.MAX_BATCH:
            raise invalid(
                {
                    "non_field_errors": [
                        f"A batch holds at most {s.MAX_BATCH} events, got {len(items)}."
                    ]
                }
            )
        validated = s.parse_events_quickly(items)
        if validated is None:
            serializer = s.UsageEventSerializer(data=items, many=True)
            if not serializer.is_valid():
                raise self._per_event(single, self._all_problems(items))
            validated = serializer.validated_data
        events = [UsageEventInput(**fields) for fields in validated]
        try:
            decisions = engine.record_events(self.tenant, events)
        except InvalidEvents as exc:
            raise self._per_event(
                single,
                {i: {f: [m] for f, m in problems.items()} for i, problems in exc.errors.items()},
            ) from exc
        except IdempotencyKeyReused as exc:
            # As Stripe answers a key reused with other parameters: a conflict, nothing counted.
            errors = {str(i): {"idempotency_key": [m]} for i, m in exc.errors.items()}
            body = {
                "success": False,
                "error": "An idempotency key was reused with other parameters; see errors.",
                "code": "idempotency_key_reused",
                "errors": errors["0"] if single else errors,
            }
            return Response(body, status=status.HTTP_409_CONFLICT)
        except UnknownTenant as exc:  # deleted while the request ran
            raise not_found("No such tenant.") from exc
        except InvalidQuantity as exc:  # the counter would overflow: nothing was counted
            raise invalid({"quantity" if single else "non_field_errors": [str(exc)]}) from exc
        keys = [str(event.idempotency_key) for event in events]
        if single:
            return self._single(decisions[0], keys[0])
        results = [_event_result(d, k) for d, k in zip(decisions, keys, strict=True)]
        body = {
            "counted": sum(d.allowed and not d.replayed for d in decisions),
            "replayed": sum(d.replayed for d in decisions),
            "denied": sum(not d.allowed and not d.replayed for d in decisions),
            "results": results,
        }
        return Response({"success": True, "data": body})

    def _all_problems(self, items: list[Any]) -> dict[int, Any]:
        """Every event's problems, malformed ones and well-formed ones the tenant cannot record
        (an unknown feature, an old timestamp), so a client fixes its batch in one round."""
        problems: dict[int, Any] = {}
        well_formed: dict[int, UsageEventInput] = {}
        for index, item in enumerate(items):
            one = s.UsageEventSerializer(data=item)
            if one.is_valid():
                well_formed[index] = UsageEventInput(**one.validated_data)
            else:
                problems[index] = one.errors
        positions = list(well_formed)
        found = engine.invalid_events(self.tenant, list(well_formed.values()))
        for position, fields in found.items():
            problems[positions[position]] = {f: [m] for f, m in fields.items()}
        return dict(sorted(problems.items()))

    @staticmethod
    def _per_event(single: bool, errors: dict[int, Any]) -> ValidationError:
        failing = {str(index): problems for index, problems in errors.items() if problems}
        return invalid(failing["0"] if single else failing)

    @staticmethod
    def _single(decision: Decision, key: str) -> Response:
        headers = ratelimit_headers(decision)
        if not decision.allowed:
            return Response(denial_payload(decision), status=status_code(decision), headers=headers)
        code = status.HTTP_200_OK if decision.replayed else status.HTTP_201_CREATED
        return Response(
            {"success": True, "data": _event_result(decision, key)}, status=code, headers=headers
        )


def _staff_user(request: Request) -> Any:
    # The admin permissions already required a signed-in user (of AUTH_USER_MODEL, whatever it is).
    user = request.user
    return user if user is not None and user.is_authenticated else None


def _find_tenant(reference: str) -> Tenant:
    reference = reference.strip()
    pk = primary_key(reference)
    lookup: dict[str, object] = {"pk": pk} if pk is not None else {"slug": reference}
    try:
        return Tenant.objects.get(**lookup)
    except (Tenant.DoesNotExist, OverflowError, ValueError):
        raise not_found("No such tenant.") from None


class UsageResetView(UsageAPIView):
    permission_classes = [CanResetUsage]

    @documented(
        operation_id="usage_reset_create",
        summary="Reset a tenant's usage of the current period (staff)",
        description=(
            "Sets the current period's counter of one feature (or of every metered feature) to "
            "zero, writing an audit row with the value before, who and why. Needs staff status "
            "and the `usage_limits.reset_usage` permission."
        ),
        request=s.UsageResetSerializer,
        responses={200: s.ResetResponseSerializer, **ERRORS, **NOT_FOUND, **NOT_JSON},
    )
    def post(self, request: Request) -> Response:
        serializer = s.UsageResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        tenant = _find_tenant(data["tenant"])
        try:
            resets = engine.reset_usage(
                tenant,
                data.get("feature"),
                by=_staff_user(request),
                reason=data["reason"],
                source=UsageReset.Source.API,
            )
        except (UnknownFeature, FeatureNotInPlan, WrongFeatureKind) as exc:
            raise invalid({"feature": [str(exc)]}) from exc
        body = {
            "tenant": _tenant_body(tenant),
            "resets": [
                {
                    "feature": r.feature,
                    "period": r.period.key,
                    "value_before": r.value_before,
                    "reset_id": r.reset_id,
                }
                for r in resets
            ],
        }
        return Response({"success": True, "data": body})


class UsageLimitsView(UsageAPIView):
    permission_classes = [CanChangeLimits]

    @documented(
        operation_id="usage_limits_partial_update",
        summary="Change a tenant's limits, reset mode or reset period (staff)",
        description=(
            "Per-tenant overrides of the plan: `limits` maps a feature to its new limit (-1 "
            "unlimited, null back to the plan's); `reset_mode` and `reset_period` change how the "
            "tenant's periods close. Answers with the tenant's usage under the new limits."
        ),
        request=s.UsageLimitsSerializer,
        responses={200: s.UsageResponseSerializer, **ERRORS, **NOT_FOUND, **NOT_JSON},
    )
    def patch(self, request: Request) -> Response:
        serializer = s.UsageLimitsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not {"limits", "reset_mode", "reset_period"} & set(data):
            raise invalid(
                {"non_field_errors": ["Give limits, reset_mode or reset_period to change."]}
            )
        tenant = _find_tenant(data["tenant"])
        limits: dict[str, int | None] = data.get("limits", {})
        self._validate_limits(tenant, limits)
        with transaction.atomic():
            for feature, limit in limits.items():
                if limit is None:
                    for override in TenantLimitOverride.objects.filter(
                        tenant=tenant, feature=feature
                    ):
                        override.delete()  # one by one: the delete signal refreshes the rules
                    continue
                TenantLimitOverride.objects.update_or_create(
                    tenant=tenant,
                    feature=feature,
                    defaults={
                        "limit": limit,
                        "reason": data.get("reason", ""),
                        "created_by": _staff_user(request),
                    },
                )
            changed = [name for name in ("reset_mode", "reset_period") if name in data]
            for name in changed:
                setattr(tenant, name, data[name])
            if changed:
                tenant.save(update_fields=[*changed, "updated_at"])
        return Response({"success": True, "data": _usage_body(tenant)})

    @staticmethod
    def _validate_limits(tenant: Tenant, limits: dict[str, int | None]) -> None:
        rules = tenant_rules(tenant).rules
        known = known_features()
        errors: dict[str, list[str]] = {}
        for feature, limit in limits.items():
            if feature not in known:
                errors[feature] = [f"Unknown feature {feature!r}."]
                continue
            rule = rules.get(feature)
            if rule is not None and rule.kind == FeatureKind.BOOLEAN and limit not in (0, 1, None):
                errors[feature] = ["A boolean feature takes 1 (included), 0 (not) or null."]
        if errors:
            raise invalid({"limits": errors})
