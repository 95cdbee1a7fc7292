"""The one enforcement sequence behind the decorators, the mixins and the middleware.

For a request and a quota rule: find the tenant, ``consume`` atomically *before* the view runs,
answer with a refusal (the view never runs) or run the view; with ``count="success"`` give the
units back when the view raised or answered with a status that is not billable; put the RateLimit
fields on the response, allowed or denied.

Async views get the same sequence without blocking the event loop: everything that may touch the
database (tenant resolution, the quantity callable, ``consume``, rendering a refusal, a refund)
runs in one ``sync_to_async(thread_sensitive=True)`` hop before the view and, only when a refund
is due, one after it. Thread-sensitive, so it shares the request's database connection with the
rest of the request's synchronous code, as Django does for sync views under ASGI.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from usage_limits.conf import conf
from usage_limits.denials import (
    combined_ratelimit_headers,
    feature_denial,
    feature_payload,
    invalid_quantity_refusal,
    misconfigured_feature_refusal,
    no_tenant_denial,
    quota_denial,
    render_refusal,
    store_unavailable,
    subscription_payload,
    tenant_access_denial,
)
from usage_limits.engine import annotate_usage_event, consume, give_back, has_feature
from usage_limits.exceptions import (
    FeatureNotInPlan,
    InvalidQuantity,
    StoreUnavailable,
    TenantAccessDenied,
    UnknownFeature,
    WrongFeatureKind,
)
from usage_limits.models import Tenant
from usage_limits.results import Decision
from usage_limits.rules import tenant_rules
from usage_limits.tenancy import resolve_request_tenant

logger = logging.getLogger("usage_limits")

CountMode = Literal["always", "success"]
Quantity = int | Callable[[HttpRequest], int]
COUNT_MODES: tuple[str, ...] = ("always", "success")

# What "the store cannot answer now" looks like to an edge: the store's own error, and a database
# connection that failed or dropped while the engine read a tenant's rules or wrote its ledger
# (Django's errors; the store's statements already turn those into StoreUnavailable). Every edge
# answers 503 for them, never a 500 page.
STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, OperationalError, InterfaceError)

_DECISIONS = "_usage_limits_decisions"


def log_refused_unavailable(failed: str, exc: BaseException, path: str) -> None:
    """The log line of a request refused with 503 because the ``failed`` part (the "database"
    finding the tenant, the "store" counting) could not answer; the same at every edge."""
    logger.warning(
        "usage_limits: %s unavailable (%s), %s refused with 503", failed, type(exc).__name__, path
    )


@dataclass(frozen=True, slots=True)
class QuotaRule:
    """What an enforced view costs: ``quantity`` of ``feature``, counted always or on success."""

    feature: str
    quantity: Quantity = 1
    count: CountMode = "always"

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not self.feature:
            raise ValueError(f"A quota needs a feature name, got {self.feature!r}.")
        if self.count not in COUNT_MODES:
            raise ValueError(f'count must be "always" or "success", got {self.count!r}.')
        if not callable(self.quantity) and (
            isinstance(self.quantity, bool)
            or not isinstance(self.quantity, int)
            or self.quantity < 1
        ):
            raise ValueError(
                f"quantity must be a whole number of at least 1 or a callable of the request, "
                f"got {self.quantity!r}."
            )

    def quantity_for(self, request: HttpRequest) -> int:
        if callable(self.quantity):
            return self.quantity(request)
        return self.quantity


def counts_nothing(quantity: object) -> bool:
    """Whether a quantity callable's answer is a whole-number zero (an empty upload, say).

    Only the integer 0 passes the request through uncounted; ``0.0``, ``False`` or ``None`` are
    not quantities, and the engine refuses them (400 ``invalid_quantity``).
    """
    return type(quantity) is int and quantity == 0


# --- what a request went through -----------------------------------------------------------------


def record_decision(request: HttpRequest, decision: Decision) -> None:
    request.__dict__.setdefault(_DECISIONS, []).append(decision)


def recorded_decisions(request: HttpRequest) -> list[Decision]:
    """Every quota decision taken on this request so far (middleware, decorators, DRF)."""
    decisions: list[Decision] = request.__dict__.get(_DECISIONS, [])
    return decisions


def apply_ratelimit_headers(request: HttpRequest, response: HttpResponseBase) -> None:
    """Set ``RateLimit-Policy`` / ``RateLimit`` (and ``Retry-After``) for every quota checked."""
    decisions = recorded_decisions(request)
    if decisions:
        for name, value in combined_ratelimit_headers(decisions).items():
            response[name] = value


def is_billable(status: int) -> bool:
    """Whether an answer with ``status`` counts, under ``NOT_BILLABLE_STATUSES``."""
    for entry in conf.NOT_BILLABLE_STATUSES:
        if isinstance(entry, str):
            if str(status)[0] == entry[0]:
                return False
        elif status == entry:
            return False
    return True


# --- the sequence --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Admission:
    refusal: HttpResponseBase | None = None
    decision: Decision | None = None
    event_key: str | None = None
    event_metadata: dict[str, Any] | None = None
    started: float = 0.0


def _tenant_or_refusal(request: HttpRequest) -> tuple[Tenant | None, HttpResponseBase | None]:
    """The request's tenant; or the refusal to answer with; or neither (pass through)."""
    try:
        tenant = resolve_request_tenant(request)
    except TenantAccessDenied as denied:
        return None, tenant_access_denial(request, str(denied))
    if not hasattr(request, "tenant"):
        # Views behind a decorator (without the middleware) still find their tenant here.
        request.tenant = tenant  # type: ignore[attr-defined]
    if tenant is None:
        if conf.ANONYMOUS_REQUESTS == "allow":
            return None, None
        return None, no_tenant_denial(request)
    return tenant, None


def _admit(request: HttpRequest, rule: QuotaRule, record_event: bool) -> _Admission:
    admission = _Admission(started=time.perf_counter() if record_event else 0.0)
    try:
        tenant, refusal = _tenant_or_refusal(request)
    except STORE_ERRORS as exc:  # the database dropped while finding the tenant
        log_refused_unavailable("database", exc, request.path)
        admission.refusal = store_unavailable(request)
        return admission
    if tenant is None:
        admission.refusal = refusal
        return admission
    quantity = rule.quantity_for(request)
    if counts_nothing(quantity):  # e.g. an empty upload: nothing to count, nothing to refuse
        return admission
    options: dict[str, Any] = {}
    if record_event:
        admission.event_key = f"request:{uuid.uuid4().hex}"
        admission.event_metadata = {"path": request.path, "method": request.method}
        options = {"idempotency_key": admission.event_key, "metadata": admission.event_metadata}
    try:
        decision = consume(tenant, rule.feature, quantity, **options)
    except STORE_ERRORS as exc:
        log_refused_unavailable("store", exc, request.path)
        admission.refusal = store_unavailable(request)
        return admission
    except FeatureNotInPlan:
        admission.refusal = feature_denial(request, rule.feature, tenant_rules(tenant).plan_code)
        return admission
    except InvalidQuantity as exc:
        # The quantity callable read something the client sent (a size, a token count) that is
        # not a whole number within range: the client's request is at fault, nothing counted.
        logger.warning("usage_limits: %s refused with 400: %s", request.path, exc)
        admission.refusal = invalid_quantity_refusal(request, rule.feature, str(exc))
        return admission
    except (UnknownFeature, WrongFeatureKind) as exc:
        # The view is enforced with a feature that cannot be counted: the site's configuration
        # is wrong, which no client can fix. Say so clearly, without a traceback page.
        logger.error(
            "usage_limits: %s is enforced with a feature it cannot count: %s", request.path, exc
        )
        admission.refusal = misconfigured_feature_refusal(request, rule.feature, exc)
        return admission
    record_decision(request, decision)
    admission.decision = decision
    if not decision.allowed:
        admission.refusal = quota_denial(request, decision)
    return admission


def _refund_due(rule: QuotaRule, admission: _Admission, response: HttpResponseBase | None) -> bool:
    decision = admission.decision
    if rule.count != "success" or decision is None or not decision.allowed:
        return False
    return response is None or not is_billable(response.status_code)


def _settle(
    request: HttpRequest,
    rule: QuotaRule,
    admission: _Admission,
    response: HttpResponseBase | None,
) -> None:
    """After the view: refund what was not billable, complete the request's usage event."""
    decision = admission.decision
    if decision is None:
        return
    if _refund_due(rule, admission, response):
        try:
            record_decision(request, give_back(decision))
        except Exception:
            # The view has answered (or raised: its error is the one to see); a failed refund
            # must not replace that. The unit stays counted, and the log says so.
            logger.exception(
                "usage_limits: could not refund %s x %s for tenant %s",
                decision.quantity,
                decision.feature,
                decision.tenant_id,
            )
    if admission.event_key is not None and admission.event_metadata is not None:
        metadata = {
            **admission.event_metadata,
            "status": None if response is None else response.status_code,
            "duration_ms": round((time.perf_counter() - admission.started) * 1000, 3),
        }
        try:
            annotate_usage_event(decision.tenant_id, admission.event_key, metadata)
        except Exception:  # a ledger detail must never break the answer
            logger.exception("usage_limits: could not record request metadata")


def _needs_settling(rule: QuotaRule, admission: _Admission, response: Any) -> bool:
    return admission.event_key is not None or _refund_due(rule, admission, response)


def enforce(
    request: HttpRequest,
    rule: QuotaRule,
    view: Callable[[], HttpResponseBase],
    *,
    record_event: bool = False,
) -> HttpResponseBase:
    """Run ``view`` if ``rule`` admits the request (synchronous views)."""
    admission = _admit(request, rule, record_event)
    if admission.refusal is not None:
        return admission.refusal
    try:
        response = view()
    except BaseException:
        if _needs_settling(rule, admission, None):
            _settle(request, rule, admission, None)
        raise
    if _needs_settling(rule, admission, response):
        _settle(request, rule, admission, response)
    apply_ratelimit_headers(request, response)
    return response


async def aenforce(
    request: HttpRequest,
    rule: QuotaRule,
    view: Callable[[], Awaitable[HttpResponseBase]],
    *,
    record_event: bool = False,
) -> HttpResponseBase:
    """Run ``view`` if ``rule`` admits the request (async views; the loop never blocks)."""
    admission = await sync_to_async(_admit, thread_sensitive=True)(request, rule, record_event)
    if admission.refusal is not None:
        return admission.refusal
    try:
        response = await view()
    except BaseException:
        if _needs_settling(rule, admission, None):
            await sync_to_async(_settle, thread_sensitive=True)(request, rule, admission, None)
        raise
    if _needs_settling(rule, admission, response):
        await sync_to_async(_settle, thread_sensitive=True)(request, rule, admission, response)
    apply_ratelimit_headers(request, response)
    return response


# --- boolean features ----------------------------------------------------------------------------


def feature_problem(tenant: Tenant, feature: str) -> tuple[int, dict[str, Any]] | None:
    """``None`` when ``tenant`` may use ``feature``; else the status and body to refuse with."""
    rules = tenant_rules(tenant)
    if not rules.subscription_allows_use():
        return 402, subscription_payload(feature, rules.plan_code)
    if not has_feature(tenant, feature):
        return 403, feature_payload(feature, rules.plan_code)
    return None


def feature_refusal(request: HttpRequest, feature: str) -> HttpResponseBase | None:
    """``None`` when the request's tenant may use ``feature``; else the refusal (402 or 403)."""
    tenant, refusal = _tenant_or_refusal(request)
    if tenant is None:
        return refusal
    try:
        problem = feature_problem(tenant, feature)
    except STORE_ERRORS as exc:  # the database dropped while reading the rules: as HasFeature
        log_refused_unavailable("database", exc, request.path)
        return store_unavailable(request)
    if problem is None:
        return None
    status, payload = problem
    return render_refusal(request, status, payload)


def require_feature_sync(
    request: HttpRequest, feature: str, view: Callable[[], HttpResponseBase]
) -> HttpResponseBase:
    refusal = feature_refusal(request, feature)
    return refusal if refusal is not None else view()


async def arequire_feature(
    request: HttpRequest, feature: str, view: Callable[[], Awaitable[HttpResponseBase]]
) -> HttpResponseBase:
    refusal = await sync_to_async(feature_refusal, thread_sensitive=True)(request, feature)
    return refusal if refusal is not None else await view()
